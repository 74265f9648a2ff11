package wire_test

import (
	"testing"

	"github.com/batpak-go/batpak/ijson"
	"github.com/batpak-go/batpak/server/wire"
)

// recordsHold: every record of a payload check the one-pass reader hands
// on covers only payloads Validate accepts at the depth it covers.
func recordsHold(t *testing.T, body []byte, depth int) {
	var reqs []*wire.AppendRequest
	var one wire.AppendRequest
	if wire.DecodeAppend(body, &one, depth) == nil {
		reqs = append(reqs, &one)
	}
	var br wire.BatchRequest
	if wire.DecodeBatch(body, &br, depth, 0) == nil {
		for i := range br.Events {
			reqs = append(reqs, &br.Events[i])
		}
	}
	for _, r := range reqs {
		it, err := r.Item(-1, "")
		if err != nil {
			continue
		}
		for d := 0; d <= 20; d++ {
			if it.Options.PayloadChecked.Covers(it.Payload, d) {
				if err := ijson.Validate(it.Payload, d); err != nil {
					t.Fatalf("depth %d body %q: record covers %q at %d, Validate: %v", depth, body, it.Payload, d, err)
				}
			}
		}
	}
}

func FuzzPayloadCheckRecordsHold(f *testing.F) {
	for _, b := range requestBodies {
		f.Add([]byte(b), uint8(8))
	}
	f.Add([]byte(`{"events":[{"payload":[[[1]]]},{"payload":{"a":{"b":[1e5,-0.5,"\u00e9\ud800"]}}}]}`), uint8(6))
	f.Fuzz(func(t *testing.T, body []byte, depth uint8) {
		recordsHold(t, body, int(depth%16)+1)
	})
}
