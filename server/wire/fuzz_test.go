package wire_test

import (
	"errors"
	"testing"

	"github.com/batpak-go/batpak/server/wire"
)

// FuzzDecodeAppend: any body is either refused with a *wire.Error or
// decodes into items that are refused with one or accepted; nothing panics.
func FuzzDecodeAppend(f *testing.F) {
	for _, s := range []string{
		`{"entity":"order:1","scope":"shop","kind":"1:1","payload":{"a":1}}`,
		`{"entity":"order:1","scope":"shop","kind":4097,"payload":[1,2,{"b":null}],"expected_clock":0}`,
		`{"entity":"e","scope":"s","kind":"0xF:0x2a","payload":"x","expected_clock":"no_events","idempotency_key":"k"}`,
		`{"events":[{"entity":"e","scope":"s","kind":"1:1","payload":1},{"entity":"e","scope":"s","kind":"1:1","payload":2,"cause_item":0}]}`,
		`{"entity":"e\u0000","scope":"s","kind":"0:1","payload":{}}`,
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`,
		"{\"entity\":\"\xff\"}",
		`{"kind":1e400}`,
		`{"causation_id":"0190a2b4-0000-7000-8000-000000000001","correlation_id":""}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var one wire.AppendRequest
		if err := wire.Decode(body, &one, 16); err != nil {
			var we *wire.Error
			if !errors.As(err, &we) || we.Code == "" {
				t.Fatalf("decode error %v is not a coded *wire.Error", err)
			}
		} else if _, err := one.Item(-1, ""); err != nil {
			var we *wire.Error
			if !errors.As(err, &we) || we.Code == "" {
				t.Fatalf("item error %v is not a coded *wire.Error", err)
			}
		}
		var batch wire.BatchRequest
		if wire.Decode(body, &batch, 16) == nil {
			for i := range batch.Events {
				_, _ = batch.Events[i].Item(i, "")
			}
		}
	})
}

// FuzzParseRegion: region parameters are accepted or refused with a coded
// error naming the parameter; nothing panics.
func FuzzParseRegion(f *testing.F) {
	f.Add("order:", "shop", "1:1", "")
	f.Add("", "", "4097", "15")
	f.Add("", "", "0:1", "16")
	f.Add("\xff", "a\x00", "x", "-1")
	f.Add("", "", "0x1:0x1000", "0x2")
	f.Fuzz(func(t *testing.T, entity, scope, kind, category string) {
		_, err := wire.ParseRegion(entity, scope, kind, category)
		if err != nil {
			var we *wire.Error
			if !errors.As(err, &we) || we.Code == "" || we.Field == "" {
				t.Fatalf("%v is not a *wire.Error naming a parameter", err)
			}
		}
	})
}
