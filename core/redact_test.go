package core_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// Redaction erases payload bytes in place and keeps the header (and the
// chain, which covers the payload only through its digest).

// secretsProj collects the secrets an entity's events carry; incremental,
// so a cached state is continued, and served as is when nothing changed.
type secretsProj struct{}

type secretsState struct{ Secrets []string }

func (secretsProj) Name() string              { return "secrets" }
func (secretsProj) SchemaVersion() uint32     { return 1 }
func (secretsProj) Kinds() []core.Kind        { return nil }
func (secretsProj) Init() secretsState        { return secretsState{} }
func (secretsProj) SupportsIncremental() bool { return true }
func (secretsProj) Apply(st secretsState, ev core.StoredEvent) secretsState {
	var p struct{ Secret string }
	if ev.Payload != nil {
		if err := json.Unmarshal(ev.Payload, &p); err != nil {
			panic(err)
		}
	}
	if p.Secret != "" {
		st.Secrets = append(st.Secrets[:len(st.Secrets):len(st.Secrets)], p.Secret)
	}
	return st
}

func secretPayload(s string) string {
	return fmt.Sprintf(`{"secret":%q,"pad":"%s"}`, s, strings.Repeat("r", 200))
}

func mustProjectSecrets(t testing.TB, s *core.Store, entity string, fresh core.Freshness) []string {
	t.Helper()
	st, _, err := core.Project(s, entity, secretsProj{}, fresh)
	if err != nil {
		t.Fatalf("Project(%s): %v", entity, err)
	}
	return st.Secrets
}

func fileHolds(t testing.TB, dir, needle string) bool {
	t.Helper()
	for _, p := range segmentFiles(t, dir) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(needle)) {
			return true
		}
	}
	return false
}

func TestRedact(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, smallSegments)
	c := mustCoord(t, "user:1", "s")
	first := mustAppendOpts(t, s, c, kindA, secretPayload("alpha-in-sealed"), core.AppendOptions{IdempotencyKey: "k1"})
	for i := 0; i < 5; i++ {
		mustAppend(t, s, c, kindB, secretPayload(fmt.Sprintf("keep-%d", i)))
	}
	rotate(t, s)
	last := mustAppend(t, s, c, kindA, secretPayload("omega-in-active"))
	mustAppend(t, s, c, kindB, secretPayload("keep-after"))
	before := mustQuery(t, s, core.All())
	writeCancelledFence(t, s, false)

	for _, id := range []core.EventID{first.ID, last.ID} {
		if err := s.Redact(ctx, id); err != nil {
			t.Fatalf("Redact: %v", err)
		}
	}
	if fileHolds(t, s.Dir(), "alpha-in-sealed") || fileHolds(t, s.Dir(), "omega-in-active") {
		t.Fatal("the redacted payload bytes are still in a segment file")
	}
	check := func(s *core.Store, what string) {
		t.Helper()
		after := withoutSystem(mustQuery(t, s, core.All())) // the audit records of the redactions aside
		if len(after) != len(before) {
			t.Fatalf("%s: %d events, had %d", what, len(after), len(before))
		}
		for i, ev := range after {
			want := before[i]
			redacted := ev.Header.ID == first.ID || ev.Header.ID == last.ID
			if ev.Header != want.Header || ev.Coordinate != want.Coordinate || ev.GlobalSequence != want.GlobalSequence || ev.IdempotencyKey != want.IdempotencyKey {
				t.Fatalf("%s: redaction changed the header of event %d", what, i)
			}
			switch {
			case redacted && (!ev.Redacted || ev.Payload != nil):
				t.Fatalf("%s: redacted event reads Redacted=%v payload %s", what, ev.Redacted, ev.Payload)
			case !redacted && (ev.Redacted || !bytes.Equal(ev.Payload, want.Payload)):
				t.Fatalf("%s: event %d changed", what, i)
			}
		}
		g, err := s.Get(first.ID)
		if err != nil || !g.Redacted || g.Payload != nil {
			t.Fatalf("%s: Get of a redacted event: %+v, %v", what, g, err)
		}
		st, err := s.Stream("user:1")
		if err != nil || !st[0].Redacted {
			t.Fatalf("%s: Stream: %v", what, err)
		}
		if got := mustProjectSecrets(t, s, "user:1", core.Consistent()); strings.Contains(strings.Join(got, ","), "alpha") || strings.Contains(strings.Join(got, ","), "omega") {
			t.Fatalf("%s: projection still sees %v", what, got)
		}
		rep := mustVerify(t, s)
		if rep.Hidden != 6 {
			t.Fatalf("%s: Verify %+v", what, rep)
		}
	}
	check(s, "after Redact")
	// Redacting again does nothing; the idempotency key still dedupes.
	if err := s.Redact(ctx, first.ID); err != nil {
		t.Fatalf("second Redact: %v", err)
	}
	if r := mustAppendOpts(t, s, c, kindA, secretPayload("alpha-in-sealed"), core.AppendOptions{IdempotencyKey: "k1"}); !r.Deduplicated || r.ID != first.ID {
		t.Fatalf("idempotency key of a redacted event: %+v", r)
	}
	check(s, "after a second Redact")

	// Unknown, hidden and foreign ids.
	if err := s.Redact(ctx, core.NewEventID()); !isErr(err, core.ErrNotFound) {
		t.Fatalf("Redact of an unknown id: %v, want ErrNotFound", err)
	}
	s = reopen(t, s)
	check(s, "reopened (checkpoint)")
	cfg := s.Config()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(cfg.Dir, checkpointFile))
	s = openWith(t, cfg)
	check(s, "reopened (scan)")
	ro, err := core.OpenReadOnly(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	check(ro, "read-only")
	if err := ro.Redact(ctx, first.ID); !isErr(err, core.ErrReadOnly) {
		t.Fatalf("Redact on a read-only store: %v", err)
	}
	if _, err := ro.EraseEntity(ctx, "user:1"); !isErr(err, core.ErrReadOnly) {
		t.Fatalf("EraseEntity on a read-only store: %v", err)
	}
}

func TestEraseEntity(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, smallSegments)
	c := mustCoord(t, "user:9", "s")
	var rs []core.Receipt
	for i := 0; i < 30; i++ {
		rs = append(rs, mustAppend(t, s, c, kindA, secretPayload(fmt.Sprintf("nine-%d", i))))
		mustAppend(t, s, mustCoord(t, "user:90", "s"), kindA, secretPayload(fmt.Sprintf("ninety-%d", i)))
		if i == 15 {
			rotate(t, s)
		}
	}
	if err := s.Redact(ctx, rs[3].ID); err != nil {
		t.Fatal(err)
	}
	n, err := s.EraseEntity(ctx, "user:9")
	if err != nil || n != 29 {
		t.Fatalf("EraseEntity: %d, %v; want 29 (one was redacted already)", n, err)
	}
	if n, err := s.EraseEntity(ctx, "user:9"); err != nil || n != 0 {
		t.Fatalf("EraseEntity again: %d, %v", n, err)
	}
	if n, err := s.EraseEntity(ctx, "nobody"); err != nil || n != 0 {
		t.Fatalf("EraseEntity of an unknown entity: %d, %v", n, err)
	}
	evs, _ := s.Stream("user:9")
	for _, ev := range evs {
		if !ev.Redacted || ev.Payload != nil {
			t.Fatalf("event %d of an erased entity: %s", ev.Header.Clock, ev.Payload)
		}
	}
	if len(evs) != 30 {
		t.Fatalf("%d events after erasure; the events stay", len(evs))
	}
	other, _ := s.Stream("user:90") // an entity whose name starts with the erased one's
	for _, ev := range other {
		if ev.Redacted {
			t.Fatal("EraseEntity erased another entity")
		}
	}
	if fileHolds(t, s.Dir(), "nine-") {
		t.Fatal("erased payload bytes remain on disk")
	}
	mustVerify(t, s)
	if got := mustProjectSecrets(t, s, "user:9", core.Consistent()); len(got) != 0 {
		t.Fatalf("projection of an erased entity: %v", got)
	}
	if got := mustProjectSecrets(t, s, "user:90", core.Consistent()); len(got) != 30 {
		t.Fatalf("projection of the other entity: %d secrets", len(got))
	}
}

// TestRedactProjectionCache: a cached projection state is never served
// after a redaction, whether the cache is in memory or in files, and
// across a restart (the erasure epoch is kept in the store directory).
func TestRedactProjectionCache(t *testing.T) {
	ctx := context.Background()
	caches := map[string]func(t *testing.T) core.ProjectionCache{
		"lru": func(*testing.T) core.ProjectionCache { return core.NewLRUCache(16) },
		"file": func(t *testing.T) core.ProjectionCache {
			return core.NewFileCache(filepath.Join(t.TempDir(), "states"))
		},
	}
	for name, mk := range caches {
		t.Run(name, func(t *testing.T) {
			cache := mk(t)
			s := openStore(t, func(c *core.Config) { c.ProjectionCache = cache })
			c := mustCoord(t, "p:1", "s")
			r0 := mustAppend(t, s, c, kindA, secretPayload("s0"))
			r1 := mustAppend(t, s, c, kindA, secretPayload("s1"))
			mustAppend(t, s, c, kindA, secretPayload("s2"))
			if got := mustProjectSecrets(t, s, "p:1", core.Consistent()); strings.Join(got, ",") != "s0,s1,s2" {
				t.Fatalf("before: %v", got)
			}
			if err := s.Redact(ctx, r0.ID); err != nil {
				t.Fatal(err)
			}
			for _, fresh := range []core.Freshness{core.Consistent(), core.MaybeStale(time.Hour)} {
				if got := mustProjectSecrets(t, s, "p:1", fresh); strings.Join(got, ",") != "s1,s2" {
					t.Fatalf("after Redact: projection serves %v", got)
				}
			}
			// A state computed before a redaction, still in the cache when
			// the store closes, is not served after a restart.
			if got := mustProjectSecrets(t, s, "p:1", core.Consistent()); len(got) != 2 {
				t.Fatal(got)
			}
			if err := s.Redact(ctx, r1.ID); err != nil {
				t.Fatal(err)
			}
			cfg := s.Config()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(cfg.Dir, "erasures")); err != nil {
				t.Fatalf("the erasure epoch is not in the store directory: %v", err)
			}
			s = openWith(t, cfg)
			for _, fresh := range []core.Freshness{core.MaybeStale(time.Hour), core.Consistent()} {
				if got := mustProjectSecrets(t, s, "p:1", fresh); strings.Join(got, ",") != "s2" {
					t.Fatalf("after a restart: projection serves %v", got)
				}
			}
			// EraseEntity too.
			if _, err := s.EraseEntity(ctx, "p:1"); err != nil {
				t.Fatal(err)
			}
			if got := mustProjectSecrets(t, s, "p:1", core.MaybeStale(time.Hour)); len(got) != 0 {
				t.Fatalf("after EraseEntity: projection serves %v", got)
			}
		})
	}
}

// TestRedactConcurrent: redactions while projections, reads and Verify
// run. A projection computed concurrently with a redaction is never served
// once Redact has returned; readers never see a damaged frame; Verify
// never reports one.
func TestRedactConcurrent(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, smallSegments, func(c *core.Config) { c.ProjectionCache = core.NewLRUCache(16) })
	c := mustCoord(t, "c:1", "s")
	const n = 60
	var rs []core.Receipt
	for i := 0; i < n; i++ {
		rs = append(rs, mustAppend(t, s, c, kindA, secretPayload(fmt.Sprintf("c%d", i))))
		if i == n/2 {
			rotate(t, s)
		}
	}
	var stop atomic.Bool
	var failed atomic.Value
	var wg sync.WaitGroup
	loop := func(fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if err := fn(); err != nil {
					failed.CompareAndSwap(nil, err.Error())
					return
				}
			}
		}()
	}
	loop(func() error { // keeps the cache full of fresh states
		_, _, err := core.Project(s, "c:1", secretsProj{}, core.Consistent())
		return err
	})
	loop(func() error {
		evs, err := s.Stream("c:1")
		for _, ev := range evs {
			if !ev.Redacted && !strings.Contains(string(ev.Payload), fmt.Sprintf(`"c%d"`, ev.Header.Clock)) {
				return fmt.Errorf("event %d reads %s", ev.Header.Clock, ev.Payload)
			}
		}
		return err
	})
	loop(func() error {
		_, err := s.Verify()
		time.Sleep(time.Millisecond)
		return err
	})
	for i, r := range rs {
		if err := s.Redact(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
		got := mustProjectSecrets(t, s, "c:1", core.Consistent())
		if len(got) != n-i-1 || (len(got) > 0 && got[0] != fmt.Sprintf("c%d", i+1)) {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("after redacting event %d the projection serves %d secrets from %v", i, len(got), got[:min(3, len(got))])
		}
		if f := failed.Load(); f != nil {
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	if f := failed.Load(); f != nil {
		t.Fatal(f)
	}
	mustVerify(t, s)
}
