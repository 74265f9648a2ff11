package jsonfield

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
)

func TestLookup(t *testing.T) {
	for _, c := range []struct {
		doc, key, want string
		ok             bool
	}{
		{`{"a":1}`, "a", "1", true},
		{` { "a" : 1 , "b" : [1,{"a":2}] } `, "b", `[1,{"a":2}]`, true},
		{`{"x":{"total":5},"total":7}`, "total", "7", true},
		{`{"x":[{"total":5}]}`, "total", "", false},
		{`{"s":"a \"total\": 9 \\","total":3}`, "total", "3", true},
		{`{"s":"\\\\","total":-4}`, "total", "-4", true},
		{`{"s":"}{][","total":"x"}`, "total", `"x"`, true},
		{`{"total":1,"total":2}`, "total", "2", true}, // the last, as the policy reads it
		{`{"t\u006ftal":1}`, "total", "1", true},
		{`{"total\u005fcents":998}`, "total_cents", "998", true},
		{`{}`, "a", "", false},
		{`[{"a":1}]`, "a", "", false},
		{`{"a":1`, "b", "", false},
		{`{"a" 1}`, "a", "", false},
		{`{"a":}`, "a", "", false},
		{`{"a":"unterminated}`, "a", "", false},
		{``, "a", "", false},
		{`{"a":null,"b":true}`, "b", "true", true},
	} {
		got, ok := Lookup([]byte(c.doc), c.key)
		if string(got) != c.want || ok != c.ok {
			t.Errorf("Lookup(%s, %q) = %q, %v; want %q, %v", c.doc, c.key, got, ok, c.want, c.ok)
		}
	}
}

func TestInt(t *testing.T) {
	for _, c := range []struct {
		doc  string
		want int64
		ok   bool
	}{
		{`{"n":0}`, 0, true},
		{`{"n":-250}`, -250, true},
		{`{"n":499}`, 499, true},
		{`{"n":12.9}`, 12, true},
		{`{"n":-12.9}`, -12, true},
		{`{"n":1e3}`, 1000, true},
		{`{"n":4000000000000}`, 4000000000000, true},
		{`{"n":9223372036854775807}`, math.MaxInt64, true},
		{`{"n":-9223372036854775808}`, math.MinInt64, true},
		{`{"n":1e30}`, math.MaxInt64, true},
		{`{"n":-1e30}`, math.MinInt64, true},
		{`{"n":"5"}`, 0, false},
		{`{"n":true}`, 0, false},
		{`{"n":null}`, 0, false},
		{`{"m":1}`, 0, false},
		{`{"n":-}`, 0, false},
	} {
		got, ok := Int([]byte(c.doc), "n")
		if got != c.want || ok != c.ok {
			t.Errorf("Int(%s) = %d, %v; want %d, %v", c.doc, got, ok, c.want, c.ok)
		}
	}
}

// FuzzLookup checks Lookup against encoding/json's reading of the
// top-level fields of valid objects — the policy's reading: keys with
// escapes decoded (invalid UTF-8 and unpaired surrogates as U+FFFD), the
// last of repeated keys.
func FuzzLookup(f *testing.F) {
	f.Add(`{"a":1,"b":{"a":2},"c":"\"a\":3"}`, "a")
	f.Add(`{"total_cents":12.5,"x":[1,2,{"y":"]"}], "z" : "\\"}`, "z")
	f.Add(`{"a":1,"a":2}`, "a")
	f.Add(`{"total\u005fcents":998}`, "total_cents")
	f.Add(`{"\ud800":1,"\ufffd":2,"\ud83d\ude00":3}`, "\ufffd")
	f.Add("{\"\xff\":1}", "\ufffd")
	f.Fuzz(func(t *testing.T, doc, key string) {
		var last map[string]json.RawMessage
		if json.Unmarshal([]byte(doc), &last) != nil || last == nil {
			return
		}
		raw, ok := Lookup([]byte(doc), key)
		want, wok := last[key]
		if ok != wok || !bytes.Equal(raw, want) {
			t.Fatalf("Lookup(%s, %q) = %q, %v; encoding/json: %q, %v", doc, key, raw, ok, want, wok)
		}
		for k, want := range last {
			if raw, ok := Lookup([]byte(doc), k); !ok || !bytes.Equal(raw, want) {
				t.Fatalf("Lookup(%s, %q) = %q, %v; encoding/json: %q", doc, k, raw, ok, want)
			}
		}
	})
}
