package guest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"testing"

	"github.com/batpak-go/batpak/sdk/guest"
)

func TestFieldReadsAsThePolicyDoes(t *testing.T) {
	for _, tc := range []struct {
		payload, name, want string
		ok                  bool
	}{
		{`{"total_cents":998,"items":[]}`, "total_cents", "998", true},
		{`{"total\u005fcents": 998}`, "total_cents", "998", true},
		{`{"Total_Cents":998}`, "total_cents", "", false},
		{`{"a":{"total_cents":1}}`, "total_cents", "", false},
		{`{"note":"x","total_cents":-5}`, "total_cents", "-5", true},
		{`[1,2]`, "total_cents", "", false},
	} {
		raw, ok := guest.Field([]byte(tc.payload), tc.name)
		if ok != tc.ok || string(raw) != tc.want {
			t.Errorf("Field(%s, %q) = %q, %v; want %q, %v", tc.payload, tc.name, raw, ok, tc.want, tc.ok)
		}
	}
}

// Reading one field of each event's payload in a fold, as the write
// policy reads it.
func ExampleField() {
	payload := []byte(`{"currency":"EUR","total_cents":998}`)
	if raw, ok := guest.Field(payload, "total_cents"); ok {
		fmt.Println(string(raw))
	}
	// Output: 998
}

func TestFieldScansOnlyTheTopLevel(t *testing.T) {
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
		{`{}`, "a", "", false},
		{`[{"a":1}]`, "a", "", false},
		{`{"a":1`, "b", "", false},
		{`{"a" 1}`, "a", "", false},
		{`{"a":}`, "a", "", false},
		{`{"a":"unterminated}`, "a", "", false},
		{``, "a", "", false},
		{`{"a":null,"b":true}`, "b", "true", true},
	} {
		got, ok := guest.Field([]byte(c.doc), c.key)
		if string(got) != c.want || ok != c.ok {
			t.Errorf("Field(%s, %q) = %q, %v; want %q, %v", c.doc, c.key, got, ok, c.want, c.ok)
		}
	}
}

func TestStringDecodesTheValue(t *testing.T) {
	for _, c := range []struct {
		doc, want string
		ok        bool
	}{
		{`{"method":"card"}`, "card", true},
		{`{"method":"c\u0061rd"}`, "card", true},
		{`{"m\u0065thod":"card"}`, "card", true},
		{`{"method":"a\"b\\c\/d\n\t"}`, "a\"b\\c/d\n\t", true},
		{`{"method":"\ud83d\ude00 \ud83d"}`, "😀 \ufffd", true},
		{"{\"method\":\"\xff\"}", "\ufffd", true},
		{`{"method":""}`, "", true},
		{`{"method":5}`, "", false},
		{`{"method":null}`, "", false},
		{`{"method":["card"]}`, "", false},
		{`{"Method":"card"}`, "", false},
		{`{"x":{"method":"card"}}`, "", false},
	} {
		got, ok := guest.String([]byte(c.doc), "method")
		if got != c.want || ok != c.ok {
			t.Errorf("String(%s) = %q, %v; want %q, %v", c.doc, got, ok, c.want, c.ok)
		}
	}
}

func TestIntReadsNumbersTruncatedAndClamped(t *testing.T) {
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
		{`{"n":999999999999999999}`, 999999999999999999, true},
		{`{"n":9223372036854775807}`, math.MaxInt64, true},
		{`{"n":-9223372036854775808}`, math.MinInt64, true},
		{`{"n":9223372036854775808}`, math.MaxInt64, true},
		{`{"n":1e30}`, math.MaxInt64, true},
		{`{"n":-1e30}`, math.MinInt64, true},
		{`{"\u006e":7}`, 7, true},
		{`{"n":"5"}`, 0, false},
		{`{"n":true}`, 0, false},
		{`{"n":null}`, 0, false},
		{`{"m":1}`, 0, false},
		{`{"n":-}`, 0, false},
	} {
		got, ok := guest.Int([]byte(c.doc), "n")
		if got != c.want || ok != c.ok {
			t.Errorf("Int(%s) = %d, %v; want %d, %v", c.doc, got, ok, c.want, c.ok)
		}
	}
}

func TestFloat64ReadsNumbers(t *testing.T) {
	for _, c := range []struct {
		doc  string
		want float64
		ok   bool
	}{
		{`{"n":12.5}`, 12.5, true},
		{`{"n":-0.25e2}`, -25, true},
		{`{"n":7}`, 7, true},
		{`{"n":1e400}`, math.Inf(1), true},
		{`{"n":-1e400}`, math.Inf(-1), true},
		{`{"n":"12.5"}`, 0, false},
		{`{"n":null}`, 0, false},
		{`{}`, 0, false},
	} {
		got, ok := guest.Float64([]byte(c.doc), "n")
		if got != c.want || ok != c.ok {
			t.Errorf("Float64(%s) = %v, %v; want %v, %v", c.doc, got, ok, c.want, c.ok)
		}
	}
}

func TestIntAndFieldDoNotAllocate(t *testing.T) {
	doc := []byte(`{"note":"a \"b\"","total_cents":123456789012345678,"items":[1,2,3]}`)
	if n := testing.AllocsPerRun(100, func() {
		if v, ok := guest.Int(doc, "total_cents"); !ok || v != 123456789012345678 {
			t.Fatal(v, ok)
		}
	}); n != 0 {
		t.Errorf("Int allocates %v times per call, want 0", n)
	}
}

// FuzzField checks Field against encoding/json's reading of the
// top-level members of valid objects — the policy's reading: names with
// escapes decoded (invalid UTF-8 and unpaired surrogates as U+FFFD), the
// last of repeated names — and String against encoding/json's decoding
// of string values.
func FuzzField(f *testing.F) {
	f.Add(`{"a":1,"b":{"a":2},"c":"\"a\":3"}`, "a")
	f.Add(`{"total_cents":12.5,"x":[1,2,{"y":"]"}], "z" : "\\"}`, "z")
	f.Add(`{"a":1,"a":2}`, "a")
	f.Add(`{"total\u005fcents":998}`, "total_cents")
	f.Add(`{"\ud800":1,"\ufffd":2,"\ud83d\ude00":3}`, "\ufffd")
	f.Add("{\"\xff\":1}", "\ufffd")
	f.Add(`{"m":"c\u0061rd \ud83d"}`, "m")
	f.Fuzz(func(t *testing.T, doc, key string) {
		var last map[string]json.RawMessage
		if json.Unmarshal([]byte(doc), &last) != nil || last == nil {
			return
		}
		raw, ok := guest.Field([]byte(doc), key)
		want, wok := last[key]
		if ok != wok || !bytes.Equal(raw, want) {
			t.Fatalf("Field(%s, %q) = %q, %v; encoding/json: %q, %v", doc, key, raw, ok, want, wok)
		}
		for k, want := range last {
			if raw, ok := guest.Field([]byte(doc), k); !ok || !bytes.Equal(raw, want) {
				t.Fatalf("Field(%s, %q) = %q, %v; encoding/json: %q", doc, k, raw, ok, want)
			}
			var ws string
			isString := want[0] == '"' && json.Unmarshal(want, &ws) == nil
			s, ok := guest.String([]byte(doc), k)
			if ok != isString || s != ws {
				t.Fatalf("String(%s, %q) = %q, %v; encoding/json: %q, %v", doc, k, s, ok, ws, isString)
			}
		}
	})
}

// Keying a fold's state by a string field: String gives the value
// decoded (card), where Field gives it as written ("card", with quotes).
func ExampleString() {
	byMethod := map[string]int64{}
	for _, payload := range []string{
		`{"method":"card","amount_cents":998}`,
		`{"method":"c\u0061rd","amount_cents":1}`,
		`{"method":"cash","amount_cents":250.75}`,
	} {
		method, ok := guest.String([]byte(payload), "method")
		if !ok {
			continue // missing, or not a string
		}
		n, _ := guest.Int([]byte(payload), "amount_cents") // 250.75 is 250
		byMethod[method] += n
	}
	fmt.Println(byMethod)
	// Output: map[card:999 cash:250]
}
