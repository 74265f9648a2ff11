package jsonfield

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"unicode/utf8"
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
		{`{"total":1,"total":2}`, "total", "1", true},
		{`{"t\u006ftal":1}`, "total", "", false},
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
// top-level fields of valid objects (first occurrence of each key; keys
// without escapes, as Lookup compares keys as written).
func FuzzLookup(f *testing.F) {
	f.Add(`{"a":1,"b":{"a":2},"c":"\"a\":3"}`, "a")
	f.Add(`{"total_cents":12.5,"x":[1,2,{"y":"]"}], "z" : "\\"}`, "z")
	f.Add(`{"a":1,"a":2}`, "a")
	f.Fuzz(func(t *testing.T, doc, key string) {
		if !json.Valid([]byte(doc)) {
			return
		}
		dec := json.NewDecoder(bytes.NewReader([]byte(doc)))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			return
		}
		first := map[string]json.RawMessage{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
			if _, seen := first[tok.(string)]; !seen {
				first[tok.(string)] = v
			}
		}
		if strings.Contains(doc, `\`) || !utf8.ValidString(doc) {
			return // Lookup compares keys as written; encoding/json unescapes them and replaces invalid UTF-8
		}
		raw, ok := Lookup([]byte(doc), key)
		want, wok := first[key]
		if ok != wok || !bytes.Equal(raw, want) {
			t.Fatalf("Lookup(%s, %q) = %q, %v; encoding/json: %q, %v", doc, key, raw, ok, want, wok)
		}
		for k, want := range first {
			if raw, ok := Lookup([]byte(doc), k); !ok || !bytes.Equal(raw, want) {
				t.Fatalf("Lookup(%s, %q) = %q, %v; encoding/json: %q", doc, k, raw, ok, want)
			}
		}
	})
}
