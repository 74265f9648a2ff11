package core_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/ijson"
)

// writePaths writes payload through every way an event enters the store
// (append, submit, try-submit, reaction, batch item, outbox, fence, import,
// system event) and returns each path's error.
func writePaths(t *testing.T, s *core.Store, payload []byte) map[string]error {
	t.Helper()
	ctx := context.Background()
	c := mustCoord(t, "pay:1", "s")
	out := map[string]error{}
	_, out["Append"] = s.Append(ctx, c, kindA, payload)
	_, out["Submit"] = s.Submit(ctx, c, kindA, payload)
	_, out["TrySubmit"] = s.TrySubmit(ctx, c, kindA, payload)
	_, out["AppendReaction"] = s.AppendReaction(ctx, c, kindA, payload, core.NewEventID(), core.NewEventID())
	_, out["AppendBatch"] = s.AppendBatch(ctx, []core.BatchItem{
		{Coordinate: c, Kind: kindA, Payload: []byte(`{}`)},
		{Coordinate: c, Kind: kindA, Payload: payload},
	})
	out["Outbox.Stage"] = s.Outbox().Stage(c, kindA, payload)
	if f, err := s.BeginFence(ctx); err != nil {
		t.Fatalf("BeginFence: %v", err)
	} else {
		_, out["Fence.Submit"] = f.Submit(ctx, c, kindA, payload)
		if err := f.Cancel(ctx); err != nil {
			t.Fatalf("Fence.Cancel: %v", err)
		}
	}
	line, err := json.Marshal(core.ExportedEvent{ID: core.NewEventID(), Entity: "pay:1", Scope: "s", Kind: kindA.String(), Payload: json.RawMessage(`null`)})
	if err != nil {
		t.Fatal(err)
	}
	line = bytes.Replace(line, []byte(`"payload":null`), append([]byte(`"payload":`), payload...), 1)
	_, out["Import"] = s.Import(ctx, bytes.NewReader(line), nil)
	sys, _ := core.SystemKind(0x7)
	_, out["AppendSystem"] = s.AppendSystem(ctx, mustCoord(t, "sys:test", "s"), sys, payload, core.AppendOptions{})
	return out
}

// refusedEverywhere checks that every write path refused payload with a
// *core.PayloadError of the rule, and that nothing was written.
func refusedEverywhere(t *testing.T, s *core.Store, payload []byte, rule string) {
	t.Helper()
	before := s.Stats()
	for path, err := range writePaths(t, s, payload) {
		var pe *core.PayloadError
		if !errors.Is(err, core.ErrInvalidPayload) || !errors.As(err, &pe) {
			t.Errorf("%s(%.40q): got %v, want a *core.PayloadError (ErrInvalidPayload)", path, payload, err)
			continue
		}
		if pe.Rule != rule {
			t.Errorf("%s(%.40q): rule %q, want %q (%v)", path, payload, pe.Rule, rule, err)
		}
	}
	// (the fence's begin and cancel markers take bytes, not events)
	if after := s.Stats(); after.Events != before.Events || after.GlobalSequence != before.GlobalSequence {
		t.Errorf("refused payload %.40q: events %d → %d, sequence %d → %d", payload, before.Events, after.Events, before.GlobalSequence, after.GlobalSequence)
	}
}

func nested(depth int) []byte {
	return []byte(strings.Repeat("[", depth) + strings.Repeat("]", depth))
}

func nestedObjects(depth int) []byte {
	return []byte(strings.Repeat(`{"a":`, depth-1) + "{}" + strings.Repeat("}", depth-1))
}

func TestPayloadDepthLimit(t *testing.T) {
	for _, limit := range []int{0, 1, 3, 512, core.MaxMaxJSONDepth} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			s := openStore(t, func(c *core.Config) { c.MaxJSONDepth = limit })
			want := limit
			if limit == 0 {
				want = core.DefaultMaxJSONDepth
			}
			for _, mk := range []func(int) []byte{nested, nestedObjects} {
				for path, err := range writePaths(t, s, mk(want)) {
					if err != nil {
						t.Errorf("%s: depth %d (the limit) refused: %v", path, want, err)
					}
				}
				refusedEverywhere(t, s, mk(want+1), "depth")
				_, err := s.Append(context.Background(), mustCoord(t, "pay:1", "s"), kindA, mk(want+1))
				var pe *core.PayloadError
				if !errors.As(err, &pe) || pe.Limit != want || !strings.Contains(err.Error(), fmt.Sprint(want)) || !strings.Contains(err.Error(), "Config.MaxJSONDepth") {
					t.Errorf("depth %d: error %v should name the limit %d and Config.MaxJSONDepth", want+1, err, want)
				}
			}
		})
	}
	for _, bad := range []int{-1, core.MaxMaxJSONDepth + 1} {
		cfg := core.DefaultConfig(t.TempDir())
		cfg.MaxJSONDepth = bad
		var ce *core.ConfigError
		if err := cfg.Validate(); !errors.As(err, &ce) || ce.Field != "MaxJSONDepth" {
			t.Errorf("MaxJSONDepth %d: Validate = %v, want a ConfigError naming MaxJSONDepth", bad, err)
		}
	}
}

// TestDeepPayloadBoundedCost: a payload of 16,000,000 '[' (a stack
// overflow, fatal, for a recursive validator) is refused quickly, with
// an error naming the limit, allocating next to nothing.
func TestDeepPayloadBoundedCost(t *testing.T) {
	s := openStore(t)
	c := mustCoord(t, "deep:1", "s")
	ctx := context.Background()
	for _, p := range [][]byte{
		bytes.Repeat([]byte("["), 16_000_000),
		bytes.Repeat([]byte(`{"a":`), 3_000_000),
		[]byte(strings.Repeat(`[{"a":`, 1_000_000)),
	} {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		start := time.Now()
		_, err := s.Append(ctx, c, kindA, p)
		took := time.Since(start)
		runtime.ReadMemStats(&m1)
		var pe *core.PayloadError
		if !errors.As(err, &pe) || pe.Rule != "depth" || pe.Limit != core.DefaultMaxJSONDepth {
			t.Fatalf("%d bytes of %.6q: got %v, want a depth PayloadError", len(p), p, err)
		}
		grew := m1.TotalAlloc - m0.TotalAlloc
		t.Logf("%d bytes of %.6q refused in %v, %d bytes allocated: %v", len(p), p, took, grew, err)
		if grew > 1<<20 {
			t.Errorf("refusing %d bytes allocated %d bytes, want under 1 MiB", len(p), grew)
		}
		if took > 2*time.Second {
			t.Errorf("refusing %d bytes took %v", len(p), took)
		}
	}
}

func TestDuplicateMemberNamesRefused(t *testing.T) {
	s := openStore(t)
	for _, tc := range []struct{ payload, key string }{
		{`{"a":1,"a":2}`, "a"},
		{`{"a":1,"\u0061":2}`, "a"},
		{`{"total_cents":99999999,"items":[{"qty":1,"price_cents":998}],"currency":"EUR","total_cents":998}`, "total_cents"},
		{`{"total\u005fcents":1,"total_cents":2}`, "total_cents"},
		{`{"x":[{"k":1},{"k":1,"k":2}]}`, "k"},
		{`{"x":{"y":{"z":0,"\/":1,"/":2}}}`, "/"},
		{`{"😀":1,"\ud83d\ude00":2}`, "😀"},
		{`{"\ud800":1,"\ufffd":2}`, "\ufffd"}, // a lone surrogate decodes to U+FFFD, as the policy reads it
		{`{"\ud800":1,"\udc00":2}`, "\ufffd"},
		{`{"e\u0301":1, "e\u0301" :2}`, "e\u0301"},
	} {
		refusedEverywhere(t, s, []byte(tc.payload), "duplicate-key")
		_, err := s.Append(context.Background(), mustCoord(t, "pay:1", "s"), kindA, []byte(tc.payload))
		var pe *core.PayloadError
		if !errors.As(err, &pe) || pe.Key != tc.key || !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.key)) {
			t.Errorf("%s: got %v, want an error naming the key %q", tc.payload, err, tc.key)
		}
	}
	// Equal names in different objects, and names that differ (case,
	// normalisation, escapes of different characters) are fine.
	for _, p := range []string{
		`{"a":{"a":{"a":1}}}`, `[{"a":1},{"a":2}]`, `{"a":1,"A":2}`, `{"é":1,"e\u0301":2}`,
		`{"a":1,"b":{"a":2},"c":[{"a":3}]}`, `{"\u0000":1,"":2}`, `{"\ud800":1,"x":{"\ud800":3}}`,
	} {
		for path, err := range writePaths(t, s, []byte(p)) {
			if err != nil {
				t.Errorf("%s(%s): %v", path, p, err)
			}
		}
	}
}

// TestDuplicateMemberNamesManyKeys: objects past the linear-scan size
// find repeats too, wherever they are.
func TestDuplicateMemberNamesManyKeys(t *testing.T) {
	s := openStore(t)
	for _, n := range []int{2, 15, 16, 17, 100, 5000} {
		var b strings.Builder
		b.WriteString("{")
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, `"k%d":%d,`, i, i)
		}
		ok := b.String()[:b.Len()-1] + "}"
		if _, err := s.Append(context.Background(), mustCoord(t, "pay:1", "s"), kindA, []byte(ok)); err != nil {
			t.Fatalf("%d distinct keys: %v", n, err)
		}
		for _, dup := range []int{0, n / 2, n - 1} {
			p := b.String() + fmt.Sprintf(`"\u006b%d":0}`, dup) // "k<dup>" spelled with an escape
			_, err := s.Append(context.Background(), mustCoord(t, "pay:1", "s"), kindA, []byte(p))
			var pe *core.PayloadError
			if want := fmt.Sprintf("k%d", dup); !errors.As(err, &pe) || pe.Rule != "duplicate-key" || pe.Key != want {
				t.Errorf("%d keys, k%d repeated: got %v", n, dup, err)
			}
		}
	}
}

// BenchmarkPayloadValidation: the write path's payload check on realistic
// ~500-byte orders (orderJSON), against encoding/json's json.Valid.
//
//	go test ./core -run '^$' -bench PayloadValidation
func BenchmarkPayloadValidation(b *testing.B) {
	r := rand.New(rand.NewSource(1))
	docs := make([][]byte, 64)
	size := 0
	for i := range docs {
		docs[i] = []byte(orderJSON(r, i))
		size += len(docs[i])
	}
	b.Logf("%d orders, %d bytes on average", len(docs), size/len(docs))
	b.Run("ijson.Validate", func(b *testing.B) {
		b.SetBytes(int64(size / len(docs)))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := ijson.Validate(docs[i%len(docs)], core.DefaultMaxJSONDepth); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("gjson+utf8.Valid", func(b *testing.B) { // what the store used before
		b.SetBytes(int64(size / len(docs)))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if d := docs[i%len(docs)]; !gjson.ValidBytes(d) || !utf8.Valid(d) {
				b.Fatal("invalid")
			}
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		b.SetBytes(int64(size / len(docs)))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if !json.Valid(docs[i%len(docs)]) {
				b.Fatal("invalid")
			}
		}
	})
}

// A payload is spared the store's JSON check only by ijson's record of a
// check of those very bytes at the store's depth limit or a stricter one:
// a record of other bytes, or of a laxer limit, and the payload is
// checked as always.
func TestPayloadCheckedRecordCoversOnlyItsBytes(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.MaxJSONDepth = 3 })
	ctx := context.Background()
	c := mustCoord(t, "pay:checked", "s")
	good := []byte(`{"a":[1]}`)
	rec, _, err := ijson.CheckPrefix(good, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendWithOptions(ctx, c, kindA, rec.Bytes(), core.AppendOptions{PayloadChecked: rec}); err != nil {
		t.Fatalf("a payload with the record of its own check: %v", err)
	}
	var pe *core.PayloadError
	for name, payload := range map[string][]byte{
		"repeated name": []byte(`{"a":1,"a":2}`),
		"not JSON":      []byte(`{"a":`),
		"a copy":        []byte(`{"a":[1,}`)[:len(good)],
	} {
		_, err := s.AppendWithOptions(ctx, c, kindA, payload, core.AppendOptions{PayloadChecked: rec})
		if !errors.As(err, &pe) {
			t.Fatalf("%s with another payload's record: %v, want a *PayloadError", name, err)
		}
		_, err = s.AppendBatch(ctx, []core.BatchItem{{Coordinate: c, Kind: kindA, Payload: payload, Options: core.AppendOptions{PayloadChecked: rec}}})
		if !errors.As(err, &pe) {
			t.Fatalf("batch item, %s with another payload's record: %v, want a *PayloadError", name, err)
		}
	}
	deep := []byte(`[[[[1]]]]`)
	lax, _, err := ijson.CheckPrefix(deep, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendWithOptions(ctx, c, kindA, lax.Bytes(), core.AppendOptions{PayloadChecked: lax}); !errors.As(err, &pe) || pe.Rule != ijson.RuleDepth {
		t.Fatalf("a record of a laxer depth limit: %v, want the depth refused", err)
	}
	if n := s.Stats().Events; n != 1 {
		t.Fatalf("%d events stored, want 1", n)
	}
}
