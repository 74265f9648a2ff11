package core_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

var jsonTable = []string{
	`{}`,
	`[]`,
	`null`,
	`true`,
	`false`,
	`0`,
	`-0`,
	`42`,
	`-17`,
	`3.141592653589793`,
	`1e308`,
	`-2.5E-300`,
	`18446744073709551615`,
	`123456789012345678901234567890`,
	`""`,
	`"plain"`,
	`"unicode: héllo wörld 日本語 🙂 \u00e9 \ud83d\ude00"`,
	`"escapes: \" \\ \/ \b \f \n \r \t"`,
	`{"a":1,"b":[1,2,{"c":null}],"d":{"e":{"f":{"g":"deep"}}}}`,
	`[null,true,false,0,"",[],{}]`,
	`[[[[[[[[[[[]]]]]]]]]]]`,
	`{"dup":1,"x":{"dup":2}}`, // one name in two objects (repeating it in one is refused)
	`{"key with spaces":"v","日本":"語","":"empty key"}`,
	"  {\n\t\"pretty\" : [ 1 , 2 ]\n}  ",
	`{"big":[` + strings.Repeat(`[1,"x",{"k":2.5}],`, 200) + `0]}`,
}

func TestRoundTripJSONTable(t *testing.T) {
	s := openStore(t)
	c := mustCoord(t, "json", "s")
	rs := make([]core.Receipt, len(jsonTable))
	for i, p := range jsonTable {
		rs[i] = mustAppend(t, s, c, kindA, p)
	}
	check := func(s *core.Store, when string) {
		t.Helper()
		for i, p := range jsonTable {
			ev, err := s.Get(rs[i].ID)
			if err != nil {
				t.Fatalf("%s: Get %d: %v", when, i, err)
			}
			if string(ev.Payload) != p {
				t.Errorf("%s: payload %d = %q, want %q byte for byte", when, i, ev.Payload, p)
			}
			if !json.Valid(ev.Payload) {
				t.Errorf("%s: payload %d no longer valid JSON", when, i)
			}
		}
		st, err := s.Stream("json")
		if err != nil {
			t.Fatal(err)
		}
		if got := payloads(st); !reflect.DeepEqual(got, jsonTable) {
			t.Errorf("%s: Stream payloads differ from what was written", when)
		}
	}
	check(s, "live")
	check(reopen(t, s), "after reopen")
}

// randomValue builds a random Go value that encoding/json can encode.
func randomValue(rng *rand.Rand, depth int) any {
	n := rng.Intn(10)
	if depth > 4 {
		n = rng.Intn(6)
	}
	switch n {
	case 0:
		return nil
	case 1:
		return rng.Intn(2) == 0
	case 2:
		return rng.Int63() - rng.Int63()
	case 3:
		return rng.NormFloat64() * math.Pow(10, float64(rng.Intn(40)-20))
	case 4, 5:
		return randomString(rng)
	case 6, 7:
		m := map[string]any{}
		for i := rng.Intn(6); i > 0; i-- {
			m[randomString(rng)] = randomValue(rng, depth+1)
		}
		return m
	default:
		a := make([]any, rng.Intn(6))
		for i := range a {
			a[i] = randomValue(rng, depth+1)
		}
		return a
	}
}

func randomString(rng *rand.Rand) string {
	var b strings.Builder
	for i := rng.Intn(12); i > 0; i-- {
		switch rng.Intn(5) {
		case 0:
			b.WriteRune(rune(rng.Intn(0x80))) // ASCII incl. control characters and quotes
		case 1:
			b.WriteRune(rune(0x80 + rng.Intn(0x780))) // two-byte UTF-8
		case 2:
			b.WriteRune(rune(0x3040 + rng.Intn(0x5000))) // CJK
		case 3:
			b.WriteRune(rune(0x1F300 + rng.Intn(0x300))) // emoji, four-byte UTF-8
		default:
			b.WriteString(`"\<>&`)
		}
	}
	return b.String()
}

func TestRoundTripRandomJSON(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	s := openStore(t)
	ctx := context.Background()
	type written struct {
		id      core.EventID
		payload []byte
		value   any
	}
	var all []written
	for i := 0; i < 300; i++ {
		v := randomValue(rng, 0)
		var p []byte
		var err error
		if rng.Intn(3) == 0 {
			p, err = json.MarshalIndent(v, "", "  ")
		} else {
			p, err = json.Marshal(v)
		}
		if err != nil {
			t.Fatal(err)
		}
		c := mustCoord(t, fmt.Sprintf("rnd:%d", rng.Intn(5)), "s")
		r, err := s.Append(ctx, c, kindA, p)
		if err != nil {
			t.Fatalf("Append of encoding/json output %q: %v", p, err)
		}
		all = append(all, written{r.ID, p, v})
	}
	check := func(s *core.Store) {
		for _, w := range all {
			ev, err := s.Get(w.id)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ev.Payload, w.payload) {
				t.Fatalf("payload changed:\n got %q\nwant %q", ev.Payload, w.payload)
			}
			var back, want any
			if err := json.Unmarshal(ev.Payload, &back); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(w.payload, &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, want) {
				t.Fatalf("decoded value changed: %v vs %v", back, want)
			}
		}
	}
	check(s)
	check(reopen(t, s))
}

// snapshot is what must not change when a write is refused.
type snapshot struct {
	stats core.Stats
	files map[string]int64
}

func takeSnapshot(t *testing.T, s *core.Store) snapshot {
	t.Helper()
	st := s.Stats()
	st.Fsyncs, st.IndexBytes, st.GroupCommits, st.SyncTime = 0, 0, 0, 0
	return snapshot{st, dirSizes(t, s.Dir())}
}

func (a snapshot) mustEqual(t *testing.T, b snapshot, what string) {
	t.Helper()
	if a.stats != b.stats {
		t.Errorf("%s changed Stats:\n before %+v\n after  %+v", what, a.stats, b.stats)
	}
	if !reflect.DeepEqual(a.files, b.files) {
		t.Errorf("%s changed files:\n before %v\n after  %v", what, a.files, b.files)
	}
}

func TestInvalidPayloadRefused(t *testing.T) {
	s := openStore(t)
	c := mustCoord(t, "p", "s")
	mustAppend(t, s, c, kindA, `{"ok":true}`)
	before := takeSnapshot(t, s)
	ctx := context.Background()
	bad := []string{"", " ", "{", "}", `{"a":}`, `{"a" 1}`, `[1,2`, `abc`, `nul`, `tru`, `'single'`,
		`{} {}`, `1 2`, `{"a":1},`, `01`, `1.`, `.5`, `+1`, `NaN`, `Infinity`, `"unterminated`, `{a:1}`,
		"\"ctl\x01\"", `[1,]`, `{"a":1,}`, "\xff"}
	for _, p := range bad {
		_, err := s.Append(ctx, c, kindA, []byte(p))
		if !errors.Is(err, core.ErrInvalidPayload) {
			t.Errorf("Append(%q): got %v, want ErrInvalidPayload", p, err)
		}
		if _, err := s.Submit(ctx, c, kindA, []byte(p)); !errors.Is(err, core.ErrInvalidPayload) {
			t.Errorf("Submit(%q): got %v, want ErrInvalidPayload", p, err)
		}
		if _, err := s.TrySubmit(ctx, c, kindA, []byte(p)); !errors.Is(err, core.ErrInvalidPayload) {
			t.Errorf("TrySubmit(%q): got %v, want ErrInvalidPayload", p, err)
		}
	}
	if _, err := s.Append(ctx, c, kindA, nil); !errors.Is(err, core.ErrInvalidPayload) {
		t.Errorf("nil payload: got %v, want ErrInvalidPayload", err)
	}
	before.mustEqual(t, takeSnapshot(t, s), "invalid payloads")
}

func TestPayloadSizeLimit(t *testing.T) {
	const max = 1024
	s := openStore(t, func(c *core.Config) { c.SingleAppendMaxBytes = max })
	c := mustCoord(t, "big", "s")
	ctx := context.Background()

	exact := jsonString(max)
	r := mustAppend(t, s, c, kindA, exact)
	before := takeSnapshot(t, s)

	for _, n := range []int{max + 1, max + 2, 10 * max} {
		p := []byte(jsonString(n))
		if _, err := s.Append(ctx, c, kindA, p); !errors.Is(err, core.ErrPayloadTooLarge) {
			t.Errorf("Append of %d bytes: got %v, want ErrPayloadTooLarge", n, err)
		}
		if _, err := s.Submit(ctx, c, kindA, p); !errors.Is(err, core.ErrPayloadTooLarge) {
			t.Errorf("Submit of %d bytes: got %v, want ErrPayloadTooLarge", n, err)
		}
		if _, err := s.TrySubmit(ctx, c, kindA, p); !errors.Is(err, core.ErrPayloadTooLarge) {
			t.Errorf("TrySubmit of %d bytes: got %v, want ErrPayloadTooLarge", n, err)
		}
		if _, err := s.AppendWithOptions(ctx, c, kindA, p, core.AppendOptions{IdempotencyKey: "k"}); !errors.Is(err, core.ErrPayloadTooLarge) {
			t.Errorf("AppendWithOptions of %d bytes: got %v, want ErrPayloadTooLarge", n, err)
		}
	}
	before.mustEqual(t, takeSnapshot(t, s), "oversized payloads")

	ev, err := s.Get(r.ID)
	if err != nil || string(ev.Payload) != exact {
		t.Fatalf("payload of exactly the limit did not round-trip: %v", err)
	}
	s = reopen(t, s)
	ev, err = s.Get(r.ID)
	if err != nil || string(ev.Payload) != exact {
		t.Fatalf("after reopen: payload of exactly the limit: %v", err)
	}
	if n := s.Stats().Events; n != 1 {
		t.Fatalf("after reopen: %d events, want 1", n)
	}
}

// Every kind of refused write leaves the store exactly as it was, also
// after a reopen.
func TestRefusedWritesLeaveNoTrace(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.SingleAppendMaxBytes = 64 })
	ctx := context.Background()
	c := mustCoord(t, "known", "s")
	mustAppend(t, s, c, kindA, `1`)
	before := takeSnapshot(t, s)

	fresh := mustCoord(t, "fresh", "other-scope")
	refusals := []struct {
		name string
		want error
		do   func() error
	}{
		{"bad coordinate", core.ErrInvalidCoordinate, func() error {
			_, err := s.Append(ctx, core.Coordinate{Entity: "x"}, kindA, []byte(`1`))
			return err
		}},
		{"reserved kind", core.ErrInvalidKind, func() error {
			_, err := s.Append(ctx, fresh, core.Kind(0xD001), []byte(`1`))
			return err
		}},
		{"bad JSON", core.ErrInvalidPayload, func() error {
			_, err := s.Append(ctx, fresh, kindA, []byte(`{`))
			return err
		}},
		{"too large", core.ErrPayloadTooLarge, func() error {
			_, err := s.Append(ctx, fresh, kindA, []byte(jsonString(65)))
			return err
		}},
		{"long idempotency key", core.ErrInvalidOptions, func() error {
			_, err := s.AppendWithOptions(ctx, fresh, kindA, []byte(`1`), core.AppendOptions{IdempotencyKey: strings.Repeat("k", core.MaxIdempotencyKeyBytes+1)})
			return err
		}},
		{"non-UTF-8 idempotency key", core.ErrInvalidOptions, func() error {
			_, err := s.AppendWithOptions(ctx, fresh, kindA, []byte(`1`), core.AppendOptions{IdempotencyKey: "k\xff"})
			return err
		}},
		{"conflict on a new entity", core.ErrConflict, func() error {
			_, err := s.AppendWithOptions(ctx, fresh, kindA, []byte(`1`), core.AppendOptions{ExpectedClock: core.ExpectClock(0)})
			return err
		}},
		{"conflict on an existing entity", core.ErrConflict, func() error {
			_, err := s.AppendWithOptions(ctx, c, kindA, []byte(`1`), core.AppendOptions{ExpectedClock: core.ExpectNoEvents()})
			return err
		}},
		{"conflict with an idempotency key", core.ErrConflict, func() error {
			_, err := s.AppendWithOptions(ctx, c, kindA, []byte(`1`), core.AppendOptions{ExpectedClock: core.ExpectClock(5), IdempotencyKey: "never-stored"})
			return err
		}},
	}
	for _, r := range refusals {
		if err := r.do(); !errors.Is(err, r.want) {
			t.Errorf("%s: got %v, want %v", r.name, err, r.want)
		}
		before.mustEqual(t, takeSnapshot(t, s), r.name)
	}
	if evs := mustQuery(t, s, core.Entity("fresh")); len(evs) != 0 {
		t.Errorf("refused writes are visible: %d events", len(evs))
	}
	if evs := mustQuery(t, s, core.Scope("other-scope")); len(evs) != 0 {
		t.Errorf("refused writes are visible in their scope: %d events", len(evs))
	}
	// The refused idempotency key was not consumed.
	r := mustAppendOpts(t, s, c, kindA, `2`, core.AppendOptions{IdempotencyKey: "never-stored"})
	if r.Deduplicated {
		t.Error("a key from a refused write deduplicated a later write")
	}

	s2 := reopen(t, s)
	if n := s2.Stats().Events; n != 2 {
		t.Errorf("after reopen: %d events, want 2", n)
	}
	if n := s2.Stats().Entities; n != 1 {
		t.Errorf("after reopen: %d entities, want 1", n)
	}
}

func TestClosedStore(t *testing.T) {
	s := openStore(t)
	c := mustCoord(t, "e", "s")
	r := mustAppend(t, s, c, kindA, `{}`)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := context.Background()
	writes := map[string]func() error{
		"Append": func() error { _, err := s.Append(ctx, c, kindA, []byte(`{}`)); return err },
		"AppendWithOptions": func() error {
			_, err := s.AppendWithOptions(ctx, c, kindA, []byte(`{}`), core.AppendOptions{IdempotencyKey: "k"})
			return err
		},
		"AppendReaction": func() error { _, err := s.AppendReaction(ctx, c, kindA, []byte(`{}`), r.ID, r.ID); return err },
		"Submit":         func() error { _, err := s.Submit(ctx, c, kindA, []byte(`{}`)); return err },
		"SubmitReaction": func() error { _, err := s.SubmitReaction(ctx, c, kindA, []byte(`{}`), r.ID, r.ID); return err },
		"TrySubmit":      func() error { _, err := s.TrySubmit(ctx, c, kindA, []byte(`{}`)); return err },
		"Sync":           func() error { return s.Sync(ctx) },
	}
	for name, w := range writes {
		if err := w(); !errors.Is(err, core.ErrClosed) {
			t.Errorf("%s after Close: got %v, want ErrClosed", name, err)
		}
	}
	if _, err := s.Get(r.ID); !errors.Is(err, core.ErrClosed) {
		t.Errorf("Get after Close: got %v, want ErrClosed", err)
	}
	if _, err := s.Query(core.All()); !errors.Is(err, core.ErrClosed) {
		t.Errorf("Query after Close: got %v, want ErrClosed", err)
	}
	if _, err := s.Stream("e"); !errors.Is(err, core.ErrClosed) {
		t.Errorf("Stream after Close: got %v, want ErrClosed", err)
	}
	if _, err := s.Verify(); !errors.Is(err, core.ErrClosed) {
		t.Errorf("Verify after Close: got %v, want ErrClosed", err)
	}
	// The closed store released its lock and wrote nothing more.
	s2 := openWith(t, s.Config())
	if n := s2.Stats().Events; n != 1 {
		t.Errorf("after Close: %d events on disk, want 1", n)
	}
}

// Close waits for every write that was accepted before it.
func TestCloseDrainsAcceptedWrites(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.Sync.EveryNEvents = 1 })
	c := mustCoord(t, "drain", "s")
	ctx := context.Background()
	var tickets []*core.Ticket
	for i := 0; i < 200; i++ {
		tk, err := s.Submit(ctx, c, kindA, []byte(payloadN(i)))
		if err != nil {
			t.Fatal(err)
		}
		tickets = append(tickets, tk)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for i, tk := range tickets {
		r, done, err := tk.TryCheck()
		if !done || err != nil {
			t.Fatalf("ticket %d after Close: done %v err %v", i, done, err)
		}
		if r.Clock != uint64(i) {
			t.Fatalf("ticket %d: clock %d", i, r.Clock)
		}
	}
	s2 := openWith(t, s.Config())
	evs, err := s2.Stream("drain")
	if err != nil || len(evs) != 200 {
		t.Fatalf("after Close: %d events (%v), want 200", len(evs), err)
	}
}

func TestCorrelationAndCausation(t *testing.T) {
	s := openStore(t)
	c := mustCoord(t, "order:1", "shop")
	root := mustAppend(t, s, c, kindA, `{"step":"placed"}`)
	ev, err := s.Get(root.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Header.ID != root.ID || ev.Header.CorrelationID != root.ID {
		t.Errorf("root event: correlation %s, want its own id %s", ev.Header.CorrelationID, root.ID)
	}
	if !ev.Header.CausationID.IsZero() {
		t.Errorf("root event has causation %s", ev.Header.CausationID)
	}

	other := mustCoord(t, "payment:1", "shop")
	react := mustAppendReaction(t, s, other, kindB, `{"step":"charged"}`, ev.Header.CorrelationID, root.ID)
	rev, err := s.Get(react.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rev.Header.CorrelationID != root.ID || rev.Header.CausationID != root.ID {
		t.Errorf("reaction: correlation %s causation %s, want both %s", rev.Header.CorrelationID, rev.Header.CausationID, root.ID)
	}
	if rev.Header.ID == root.ID {
		t.Error("reaction reused the cause's id")
	}

	corr := core.NewEventID()
	cause := core.NewEventID()
	r := mustAppendOpts(t, s, c, kindA, `{}`, core.AppendOptions{CorrelationID: corr, CausationID: cause, Flags: 0xBEEF})
	e3, err := s.Get(r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e3.Header.CorrelationID != corr || e3.Header.CausationID != cause || e3.Header.Flags != 0xBEEF {
		t.Errorf("options not stored: %+v", e3.Header)
	}
	// Causation without correlation: correlation still defaults to the id.
	r4 := mustAppendOpts(t, s, c, kindA, `{}`, core.AppendOptions{CausationID: cause})
	e4, _ := s.Get(r4.ID)
	if e4.Header.CorrelationID != r4.ID || e4.Header.CausationID != cause {
		t.Errorf("causation only: %+v", e4.Header)
	}

	// Submit paths set the same fields.
	tk, err := s.SubmitReaction(context.Background(), other, kindB, []byte(`{}`), corr, react.ID)
	if err != nil {
		t.Fatal(err)
	}
	r5, err := tk.Wait(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e5, _ := s.Get(r5.ID)
	if e5.Header.CorrelationID != corr || e5.Header.CausationID != react.ID {
		t.Errorf("SubmitReaction: %+v", e5.Header)
	}

	s = reopen(t, s)
	after, err := s.Get(r.ID)
	if err != nil || after.Header != e3.Header {
		t.Errorf("header changed across reopen: %+v vs %+v (%v)", after.Header, e3.Header, err)
	}
}

func mustAppendReaction(t *testing.T, s *core.Store, c core.Coordinate, k core.Kind, p string, corr, cause core.EventID) core.Receipt {
	t.Helper()
	r, err := s.AppendReaction(context.Background(), c, k, []byte(p), corr, cause)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestClocksAndSequences(t *testing.T) {
	s := openStore(t)
	ents := []core.Coordinate{mustCoord(t, "a", "s"), mustCoord(t, "b", "s"), mustCoord(t, "c", "t")}
	next := map[string]uint64{}
	for i := 0; i < 60; i++ {
		c := ents[(i*7)%len(ents)]
		r := mustAppend(t, s, c, kindA, payloadN(i))
		if r.Clock != next[c.Entity] {
			t.Fatalf("event %d on %s: clock %d, want %d", i, c.Entity, r.Clock, next[c.Entity])
		}
		if r.GlobalSequence != uint64(i) {
			t.Fatalf("event %d: global sequence %d", i, r.GlobalSequence)
		}
		if r.Deduplicated {
			t.Fatal("plain write is marked deduplicated")
		}
		next[c.Entity]++
		ev, err := s.Get(r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Header.Clock != r.Clock || ev.GlobalSequence != r.GlobalSequence || ev.Header.Timestamp != r.Timestamp || ev.Coordinate != c {
			t.Fatalf("stored event disagrees with its receipt: %+v vs %+v", ev, r)
		}
	}
	// Clocks continue after reopen.
	s = reopen(t, s)
	for _, c := range ents {
		r := mustAppend(t, s, c, kindA, `{}`)
		if r.Clock != next[c.Entity] {
			t.Errorf("after reopen %s: clock %d, want %d", c.Entity, r.Clock, next[c.Entity])
		}
	}
	if r := mustAppend(t, s, ents[0], kindA, `{}`); r.GlobalSequence != 63 {
		t.Errorf("after reopen: global sequence %d, want 63", r.GlobalSequence)
	}
	mustVerify(t, s)
}

// fakeClock is a Config.Now that tests move by hand.
type fakeClock struct{ us atomic.Int64 }

func (f *fakeClock) now() time.Time       { return time.UnixMicro(f.us.Load()) }
func (f *fakeClock) set(t time.Time)      { f.us.Store(t.UnixMicro()) }
func (f *fakeClock) add(d time.Duration)  { f.us.Add(d.Microseconds()) }
func (f *fakeClock) micros() int64        { return f.us.Load() }
func newFakeClock(t time.Time) *fakeClock { f := &fakeClock{}; f.set(t); return f }

func TestTimestamps(t *testing.T) {
	clk := newFakeClock(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	s := openStore(t, func(c *core.Config) { c.Now = clk.now })
	a := mustCoord(t, "a", "s")
	b := mustCoord(t, "b", "s")

	r := mustAppend(t, s, a, kindA, `{}`)
	if r.Timestamp != clk.micros() {
		t.Fatalf("timestamp %d, want the injected clock %d", r.Timestamp, clk.micros())
	}
	clk.add(5 * time.Second)
	r = mustAppend(t, s, a, kindA, `{}`)
	if r.Timestamp != clk.micros() {
		t.Fatalf("timestamp %d, want the injected clock %d", r.Timestamp, clk.micros())
	}
	high := r.Timestamp

	// The wall clock jumps back an hour: a's timestamps must not decrease.
	clk.add(-time.Hour)
	last := high
	for i := 0; i < 5; i++ {
		r := mustAppend(t, s, a, kindA, `{}`)
		if r.Timestamp < last {
			t.Fatalf("timestamp went backwards within an entity: %d after %d", r.Timestamp, last)
		}
		last = r.Timestamp
		clk.add(-time.Second)
	}
	// A new entity is stamped with the (earlier) wall clock; a's order is
	// untouched by it.
	rb := mustAppend(t, s, b, kindA, `{}`)
	if rb.Timestamp != clk.micros() {
		t.Errorf("new entity: timestamp %d, want the wall clock %d", rb.Timestamp, clk.micros())
	}
	// The clock moves forward again past a's high-water mark.
	clk.set(time.UnixMicro(high).Add(time.Minute))
	r = mustAppend(t, s, a, kindA, `{}`)
	if r.Timestamp != clk.micros() {
		t.Errorf("after the clock caught up: %d, want %d", r.Timestamp, clk.micros())
	}

	// Non-decreasing per entity holds across reopen, too.
	clk.add(-24 * time.Hour)
	s = reopen(t, s)
	r2 := mustAppend(t, s, a, kindA, `{}`)
	if r2.Timestamp < r.Timestamp {
		t.Errorf("after reopen the timestamp went back: %d < %d", r2.Timestamp, r.Timestamp)
	}
	evs, err := s.Stream("a")
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Header.Timestamp < evs[i-1].Header.Timestamp {
			t.Errorf("stored timestamps decrease at clock %d", i)
		}
	}
	mustVerify(t, s)
}

func TestExpectedClock(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	c := mustCoord(t, "cas", "s")
	app := func(c core.Coordinate, e core.Expectation) (core.Receipt, error) {
		return s.AppendWithOptions(ctx, c, kindA, []byte(`{}`), core.AppendOptions{ExpectedClock: e})
	}
	conflict := func(err error, expected, actual core.Expectation) {
		t.Helper()
		if !errors.Is(err, core.ErrConflict) {
			t.Fatalf("got %v, want ErrConflict", err)
		}
		var ce *core.ConflictError
		if !errors.As(err, &ce) {
			t.Fatalf("error %T is not a *ConflictError", err)
		}
		if ce.Expected != expected || ce.Actual != actual {
			t.Fatalf("ConflictError expected %v actual %v; want %v / %v", ce.Expected, ce.Actual, expected, actual)
		}
		if ce.Entity != c.Entity {
			t.Fatalf("ConflictError.Entity = %q", ce.Entity)
		}
	}

	// ExpectClock(0) is not ExpectNoEvents: on a new entity it fails.
	_, err := app(c, core.ExpectClock(0))
	conflict(err, core.ExpectClock(0), core.ExpectNoEvents())

	r, err := app(c, core.ExpectNoEvents())
	if err != nil || r.Clock != 0 {
		t.Fatalf("ExpectNoEvents on a new entity: %v, %v", r, err)
	}
	_, err = app(c, core.ExpectNoEvents())
	conflict(err, core.ExpectNoEvents(), core.ExpectClock(0))

	r, err = app(c, core.ExpectClock(0))
	if err != nil || r.Clock != 1 {
		t.Fatalf("ExpectClock(0) after one event: %v, %v", r, err)
	}
	_, err = app(c, core.ExpectClock(0)) // stale
	conflict(err, core.ExpectClock(0), core.ExpectClock(1))
	_, err = app(c, core.ExpectClock(5)) // ahead
	conflict(err, core.ExpectClock(5), core.ExpectClock(1))

	r, err = app(c, core.ExpectClock(1))
	if err != nil || r.Clock != 2 {
		t.Fatalf("ExpectClock(1): %v, %v", r, err)
	}
	// An unset expectation always succeeds.
	if r, err := app(c, core.Expectation{}); err != nil || r.Clock != 3 {
		t.Fatalf("no expectation: %v, %v", r, err)
	}

	// The writer checks against queued events too: a Submit chain that each
	// expects the previous one's clock all succeed, in order.
	var tks []*core.Ticket
	for i := uint64(3); i < 13; i++ {
		tk, err := s.SubmitWithOptions(ctx, c, kindA, []byte(`{}`), core.AppendOptions{ExpectedClock: core.ExpectClock(i)})
		if err != nil {
			t.Fatal(err)
		}
		tks = append(tks, tk)
	}
	for i, tk := range tks {
		r, err := tk.Wait(ctx)
		if err != nil || r.Clock != uint64(i)+4 {
			t.Fatalf("queued CAS %d: %v, %v", i, r, err)
		}
	}

	// After reopen the expectation is checked against the recovered state.
	s = reopen(t, s)
	if _, err := s.AppendWithOptions(ctx, c, kindA, []byte(`{}`), core.AppendOptions{ExpectedClock: core.ExpectNoEvents()}); !errors.Is(err, core.ErrConflict) {
		t.Fatalf("after reopen ExpectNoEvents: %v", err)
	}
	if r, err := s.AppendWithOptions(ctx, c, kindA, []byte(`{}`), core.AppendOptions{ExpectedClock: core.ExpectClock(13)}); err != nil || r.Clock != 14 {
		t.Fatalf("after reopen ExpectClock(13): %v, %v", r, err)
	}
	evs, _ := s.Stream("cas")
	if len(evs) != 15 {
		t.Fatalf("%d events, want 15 (conflicts must write nothing)", len(evs))
	}
}

func TestIdempotency(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	c := mustCoord(t, "idem", "s")
	o := core.AppendOptions{IdempotencyKey: "charge-42"}
	first := mustAppendOpts(t, s, c, kindA, `{"amount":42}`, o)
	if first.Deduplicated {
		t.Fatal("first write marked deduplicated")
	}
	mustAppend(t, s, c, kindA, `{"other":1}`)
	before := takeSnapshot(t, s)

	same := func(s *core.Store, r core.Receipt, what string) {
		t.Helper()
		if !r.Deduplicated {
			t.Errorf("%s: Deduplicated = false", what)
		}
		r.Deduplicated = false
		if r != first {
			t.Errorf("%s: receipt %+v, want the original %+v", what, r, first)
		}
	}
	// Same key, same event: original receipt, nothing written.
	same(s, mustAppendOpts(t, s, c, kindA, `{"amount":42}`, o), "repeat")
	// Same key, different event: refused with IdempotencyError, nothing written.
	for name, w := range map[string]struct {
		c       core.Coordinate
		k       core.Kind
		payload string
	}{
		"other coordinate": {mustCoord(t, "elsewhere", "x"), kindA, `{"amount":42}`},
		"other kind":       {c, kindB, `{"amount":42}`},
		"other payload":    {c, kindA, `{"amount":43}`},
	} {
		_, err := s.AppendWithOptions(ctx, w.c, w.k, []byte(w.payload), o)
		var ie *core.IdempotencyError
		if !errors.As(err, &ie) || !errors.Is(err, core.ErrIdempotencyMismatch) || ie.Original != first.ID || ie.Key != o.IdempotencyKey {
			t.Errorf("%s: err = %v, want *IdempotencyError naming %s", name, err, first.ID)
		}
	}
	tk, err := s.SubmitWithOptions(ctx, c, kindA, []byte(`{"amount":42}`), o)
	if err != nil {
		t.Fatal(err)
	}
	r, err := tk.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	same(s, r, "Submit repeat")
	before.mustEqual(t, takeSnapshot(t, s), "deduplicated writes")

	ev, err := s.Get(first.ID)
	if err != nil || ev.IdempotencyKey != "charge-42" || string(ev.Payload) != `{"amount":42}` {
		t.Fatalf("original event: %+v, %v", ev, err)
	}

	// Keys are exact: a different key writes.
	if r := mustAppendOpts(t, s, c, kindA, `{}`, core.AppendOptions{IdempotencyKey: "charge-42 "}); r.Deduplicated {
		t.Error("a different key was deduplicated")
	}
	maxKey := strings.Repeat("k", core.MaxIdempotencyKeyBytes)
	rk := mustAppendOpts(t, s, c, kindA, `{}`, core.AppendOptions{IdempotencyKey: maxKey})

	// Survives Close/Open.
	s = reopen(t, s)
	same(s, mustAppendOpts(t, s, c, kindA, `{"amount":42}`, o), "after reopen")
	if r := mustAppendOpts(t, s, c, kindA, `{}`, core.AppendOptions{IdempotencyKey: maxKey}); !r.Deduplicated || r.ID != rk.ID {
		t.Errorf("max-length key after reopen: %+v", r)
	}
	if n := s.Stats().Events; n != 4 {
		t.Errorf("%d events, want 4", n)
	}
}

func TestSubmitAndTicket(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	c := mustCoord(t, "tk", "s")

	buf := []byte(`{"v":"original"}`)
	tk, err := s.Submit(ctx, c, kindA, buf)
	if err != nil {
		t.Fatal(err)
	}
	copy(buf, `{"v":"CLOBBERED"}`) // the caller may reuse its buffer at once
	if r, done, err := tk.TryCheck(); !done && (r != (core.Receipt{}) || err != nil) {
		t.Errorf("pending TryCheck returned data: %+v, %v", r, err)
	}
	select {
	case <-tk.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("ticket never resolved")
	}
	r, done, err := tk.TryCheck()
	if !done || err != nil {
		t.Fatalf("TryCheck after Done: done %v err %v", done, err)
	}
	w, err := tk.Wait(ctx)
	if err != nil || w != r {
		t.Fatalf("Wait %+v, %v; TryCheck %+v", w, err, r)
	}
	// Wait on a resolved ticket answers even with a cancelled context.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if w2, err := tk.Wait(cctx); err != nil || w2 != r {
		t.Errorf("Wait(cancelled) on a resolved ticket: %+v, %v", w2, err)
	}
	ev, err := s.Get(r.ID)
	if err != nil || string(ev.Payload) != `{"v":"original"}` {
		t.Fatalf("stored payload %q (%v): Submit must copy the caller's buffer", ev.Payload, err)
	}

	// A ticket carries the writer's refusal.
	tk, err = s.SubmitWithOptions(ctx, c, kindA, []byte(`{}`), core.AppendOptions{ExpectedClock: core.ExpectNoEvents()})
	if err != nil {
		t.Fatal(err)
	}
	<-tk.Done()
	if _, done, err := tk.TryCheck(); !done || !errors.Is(err, core.ErrConflict) {
		t.Errorf("conflicting submit: done %v err %v", done, err)
	}
	if _, err := tk.Wait(ctx); !errors.Is(err, core.ErrConflict) {
		t.Errorf("Wait on conflicting submit: %v", err)
	}

	// Many tickets resolve in submission order for one entity.
	var tks []*core.Ticket
	for i := 0; i < 100; i++ {
		tk, err := s.Submit(ctx, c, kindA, []byte(payloadN(i)))
		if err != nil {
			t.Fatal(err)
		}
		tks = append(tks, tk)
	}
	for i, tk := range tks {
		r, err := tk.Wait(ctx)
		if err != nil || r.Clock != uint64(i+1) {
			t.Fatalf("ticket %d: %+v, %v", i, r, err)
		}
	}
	// TrySubmit on an idle store is accepted.
	tk, err = s.TrySubmit(ctx, c, kindA, []byte(`{}`))
	if err != nil {
		t.Fatalf("TrySubmit on an idle store: %v", err)
	}
	if r, err := tk.Wait(ctx); err != nil || r.Clock != 101 {
		t.Fatalf("TrySubmit ticket: %+v, %v", r, err)
	}
}

func TestTrySubmitUnderPressure(t *testing.T) {
	s := openStore(t, func(c *core.Config) {
		c.ChannelCapacity = 4
		c.Sync.EveryNEvents = 1
		c.Sync.Mode = core.SyncAll
	})
	ctx := context.Background()
	const submitters, perSubmitter = 12, 40
	var (
		mu       sync.Mutex
		accepted []*core.Ticket
		retries  atomic.Int64
		badRetry atomic.Value
		maxQueue atomic.Int64
	)
	var wg sync.WaitGroup
	for g := 0; g < submitters; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			c, _ := core.NewCoordinate(fmt.Sprintf("p:%d", g), "s")
			got := 0
			for attempt := 0; got < perSubmitter && attempt < 200000; attempt++ {
				tk, err := s.TrySubmit(ctx, c, kindA, []byte(payloadN(got)))
				if err != nil {
					var re *core.RetryError
					if !errors.As(err, &re) || !errors.Is(err, core.ErrRetry) || re.After <= 0 || re.Reason == "" {
						badRetry.Store(fmt.Sprintf("%T %v", err, err))
						return
					}
					retries.Add(1)
					p := s.WriterPressure()
					if int64(p.QueueLen) > maxQueue.Load() {
						maxQueue.Store(int64(p.QueueLen))
					}
					if p.QueueLen > p.Capacity || p.Headroom() != p.Capacity-p.QueueLen {
						badRetry.Store(fmt.Sprintf("inconsistent pressure %+v", p))
					}
					continue
				}
				mu.Lock()
				accepted = append(accepted, tk)
				mu.Unlock()
				got++
			}
		}(g)
	}
	wg.Wait()
	if v := badRetry.Load(); v != nil {
		t.Fatalf("bad TrySubmit refusal: %v", v)
	}
	if retries.Load() == 0 {
		t.Fatal("no TrySubmit was refused with a RetryError under pressure")
	}
	deadline, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	seqs := map[uint64]bool{}
	for _, tk := range accepted {
		r, err := tk.Wait(deadline)
		if err != nil {
			t.Fatalf("accepted ticket failed: %v", err)
		}
		if seqs[r.GlobalSequence] {
			t.Fatalf("global sequence %d given twice", r.GlobalSequence)
		}
		seqs[r.GlobalSequence] = true
	}
	if n := s.Stats().Events; n != uint64(len(accepted)) {
		t.Fatalf("store holds %d events, %d were accepted (refused TrySubmits must write nothing)", n, len(accepted))
	}
	if maxQueue.Load() == 0 {
		t.Error("WriterPressure never showed a queued write while TrySubmit refused")
	}
	t.Logf("%d accepted, %d retries, max queue %d", len(accepted), retries.Load(), maxQueue.Load())
	mustVerify(t, s)
}

func TestWriterPressure(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.ChannelCapacity = 16 })
	mustAppend(t, s, mustCoord(t, "e", "s"), kindA, `{}`)
	p := s.WriterPressure()
	if p.Capacity != 16 || p.QueueLen != 0 || !p.IsIdle() || p.Headroom() != 16 || p.Utilization() != 0 {
		t.Errorf("idle store: %+v idle %v headroom %d utilization %v", p, p.IsIdle(), p.Headroom(), p.Utilization())
	}
	cases := []struct {
		p        core.WriterPressure
		idle     bool
		headroom int
		util     float64
	}{
		{core.WriterPressure{QueueLen: 0, Capacity: 4}, true, 4, 0},
		{core.WriterPressure{QueueLen: 3, Capacity: 4}, false, 1, 0.75},
		{core.WriterPressure{QueueLen: 4, Capacity: 4}, false, 0, 1},
		{core.WriterPressure{QueueLen: 1, Capacity: 3}, false, 2, 1.0 / 3},
		{core.WriterPressure{}, true, 0, 0},
	}
	for _, c := range cases {
		if c.p.IsIdle() != c.idle || c.p.Headroom() != c.headroom || math.Abs(c.p.Utilization()-c.util) > 1e-12 {
			t.Errorf("%+v: idle %v headroom %d utilization %v; want %v %d %v",
				c.p, c.p.IsIdle(), c.p.Headroom(), c.p.Utilization(), c.idle, c.headroom, c.util)
		}
	}
	ro, err := core.OpenReadOnly(s.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if p := ro.WriterPressure(); !p.IsIdle() || p.Capacity != 16 {
		t.Errorf("read-only store pressure: %+v", p)
	}
}

func TestSyncAndStats(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.Sync.EveryNEvents = 0; c.Sync.Interval = 0 })
	ctx := context.Background()
	c := mustCoord(t, "e", "s")
	for i := 0; i < 10; i++ {
		mustAppend(t, s, c, kindA, payloadN(i))
	}
	f0 := s.Stats().Fsyncs
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Fsyncs <= f0 {
		t.Errorf("Sync did not fsync: %d -> %d", f0, st.Fsyncs)
	}
	if st.Events != 10 || st.GlobalSequence != 10 || st.Entities != 1 || st.Segments != 1 {
		t.Errorf("Stats = %+v", st)
	}
	// Bytes counts data (header and frames), not the zero fill after it.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, f := range segmentFiles(t, s.Dir()) {
		_, fr := readFrames(t, f)
		sum += int64(fr[len(fr)-1].end())
	}
	if st.Bytes != sum {
		t.Errorf("Stats.Bytes = %d, segment data ends add up to %d", st.Bytes, sum)
	}
	// With EveryNEvents = 1, every acknowledged write was synced.
	s2 := openStore(t, func(c *core.Config) { c.Sync.EveryNEvents = 1 })
	for i := 0; i < 5; i++ {
		mustAppend(t, s2, c, kindA, `{}`)
	}
	if f := s2.Stats().Fsyncs; f < 5 {
		t.Errorf("EveryNEvents=1: %d fsyncs for 5 sequential appends", f)
	}
}

func TestInvalidConfig(t *testing.T) {
	dir := t.TempDir()
	bad := []func(*core.Config){
		func(c *core.Config) { c.Dir = "" },
		func(c *core.Config) { c.SegmentMaxBytes = 64<<10 - 1 },
		func(c *core.Config) { c.FDBudget = 1 },
		func(c *core.Config) { c.SingleAppendMaxBytes = 0 },
		func(c *core.Config) { c.SingleAppendMaxBytes = 64<<20 + 1 },
		func(c *core.Config) { c.ChannelCapacity = 0 },
		func(c *core.Config) { c.PressureRetryPct = 101 },
		func(c *core.Config) { c.Sync.EveryNEvents = -1 },
		func(c *core.Config) { c.Sync.Interval = -time.Second },
		func(c *core.Config) { c.Sync.Mode = 7 },
	}
	for i, f := range bad {
		cfg := testConfig(dir)
		f(&cfg)
		if s, err := core.Open(cfg); !errors.Is(err, core.ErrInvalidConfig) {
			if s != nil {
				s.Close()
			}
			t.Errorf("config %d: Open got %v, want ErrInvalidConfig", i, err)
		}
	}
	if err := core.DefaultConfig(dir).Validate(); err != nil {
		t.Errorf("DefaultConfig does not validate: %v", err)
	}
}
