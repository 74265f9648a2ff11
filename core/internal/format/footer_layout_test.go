package format_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/batpak-go/batpak/core/internal/format"
)

// A footer is on disk: stores written by one version are opened from
// their footers by the next. The footer of a fixed segment (events of
// several entities and scopes, some with idempotency keys, and batch
// markers) must keep its exact bytes; a change here is a format change
// and needs a new footer version, not an edit of the digest.
func TestFooterLayoutIsStable(t *testing.T) {
	seg := format.EncodeSegmentHeader(1)
	for i := range 5000 {
		e := sampleEvent()
		p := fmt.Appendf(nil, `{"n":%d}`, i)
		e.Payload, e.PayloadHash, e.Seq = p, format.PayloadHash(p), uint64(i)
		e.Entity = fmt.Sprintf("order:%d", i%7)
		e.Scope = []string{"eu", "us"}[i%3/2]
		e.Idem = ""
		if i%5 == 0 {
			e.Idem = fmt.Sprintf("k%d", i)
		}
		seg = format.AppendEvent(seg, &e)
		if i%100 == 0 {
			seg = format.AppendMarker(seg, format.RecBatchBegin, 3, uint64(i))
		}
	}
	joined, err := format.EncodeFooter(seg, 1)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := format.EncodeFooterParts(seg, 1)
	if err != nil {
		t.Fatal(err)
	}
	var cat []byte
	for _, p := range parts {
		cat = append(cat, p...)
	}
	if string(cat) != string(joined) {
		t.Fatal("EncodeFooterParts' parts differ from EncodeFooter's bytes")
	}
	sum := sha256.Sum256(joined)
	if got, want := hex.EncodeToString(sum[:]), "193655e9cdda3e1df4b65f09db687c25a24233abe720b6b3f1d2d8b5624db1be"; got != want {
		t.Fatalf("footer of the fixed segment: %d bytes, sha256 %s; want sha256 %s", len(joined), got, want)
	}
}
