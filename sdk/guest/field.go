package guest

import "github.com/batpak-go/batpak/ijson"

// Field returns the raw JSON bytes of the top-level member name of the
// object payload, read exactly as a write policy reads it: names compared
// with escapes decoded ("total\u005fcents" is total_cents), case kept.
// (Stored payloads never repeat a name: the store refuses them.) ok is
// false when payload is not an object or has no such member. Field scans
// the payload once without decoding the rest and does not allocate; the
// bytes are a slice of payload, valid while it is.
func Field(payload []byte, name string) (raw []byte, ok bool) {
	return ijson.Lookup(payload, name)
}
