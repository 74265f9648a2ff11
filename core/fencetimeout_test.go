package core_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// A fence nobody ends expires: it is cancelled (its writes stay hidden),
// the expiry is recorded, and ordinary writes proceed again.
func TestForgottenFenceExpires(t *testing.T) {
	ctx := context.Background()
	const timeout = 150 * time.Millisecond
	s := openStore(t, func(c *core.Config) { c.FenceTimeout = timeout })
	c := mustCoord(t, "e:1", "s")
	mustAppend(t, s, c, kindA, `{"before":true}`)
	began := time.Now()
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := f.Submit(ctx, c, kindA, []byte(`{"fenced":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, c, kindA, []byte(`{}`)); !errors.Is(err, core.ErrFenceActive) {
		t.Fatalf("Append while the fence is open = %v, want ErrFenceActive", err)
	}
	// The forgotten fence: a writer retrying on ErrFenceActive gets through
	// once the deadline passed.
	var r core.Receipt
	for {
		r, err = s.Append(ctx, c, kindA, []byte(`{"after":true}`))
		if !errors.Is(err, core.ErrFenceActive) {
			break
		}
		if time.Since(began) > 5*time.Second {
			t.Fatalf("ordinary writes still refused %s after a fence with a %s deadline opened", time.Since(began), timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Append after the deadline: %v", err)
	}
	if waited := time.Since(began); waited < timeout {
		t.Fatalf("the fence ended after %s, before its %s deadline", waited, timeout)
	}
	// Its write is hidden, as after Cancel; its ticket says why.
	if _, err := tk.Wait(ctx); !errors.Is(err, core.ErrFenceExpired) || !errors.Is(err, core.ErrFenceCancelled) {
		t.Fatalf("fenced ticket = %v, want ErrFenceExpired (and ErrFenceCancelled)", err)
	}
	if err := f.Commit(ctx); !errors.Is(err, core.ErrFenceExpired) {
		t.Fatalf("Commit after the deadline = %v, want ErrFenceExpired", err)
	}
	if _, err := f.Submit(ctx, c, kindA, []byte(`{}`)); !errors.Is(err, core.ErrFenceExpired) {
		t.Fatalf("Submit after the deadline = %v, want ErrFenceExpired", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("Close after the deadline = %v, want nil", err)
	}
	check := func(s *core.Store) {
		t.Helper()
		for _, ev := range mustQuery(t, s, core.Entity("e:")) {
			if string(ev.Payload) == `{"fenced":true}` {
				t.Fatalf("the expired fence's write is visible: %+v", ev)
			}
		}
		if _, err := s.Get(r.ID); err != nil {
			t.Fatalf("the write after the deadline: %v", err)
		}
		// The expiry is recorded.
		var evs []core.StoredEvent
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if evs = mustQuery(t, s, core.Entity("batpak:fence").WithKind(core.KindFenceExpired)); len(evs) > 0 || time.Now().After(deadline) {
				break
			}
		}
		if len(evs) != 1 {
			t.Fatalf("%d fence expiry events, want 1", len(evs))
		}
		var p struct {
			Timeout string
			Hidden  int
		}
		if err := json.Unmarshal(evs[0].Payload, &p); err != nil || p.Timeout != timeout.String() || p.Hidden != 1 {
			t.Fatalf("expiry event %s (%v)", evs[0].Payload, err)
		}
	}
	check(s)
	s = reopen(t, s)
	check(s)
	mustVerify(t, s)
}

// A fence ended before its deadline is left alone, and the deadline has
// the documented range.
func TestFenceTimeoutBounds(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	if got := s.Config().FenceTimeout; got != 30*time.Second {
		t.Fatalf("default FenceTimeout %s", got)
	}
	f, err := s.BeginFenceTimeout(ctx, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c := mustCoord(t, "e:1", "s")
	tk, err := f.Submit(ctx, c, kindA, []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(mustQuery(t, s, core.Entity("batpak:fence"))); n != 0 {
		t.Fatalf("a committed fence was recorded as expired (%d events)", n)
	}
	if n := len(mustQuery(t, s, core.Entity("e:"))); n != 1 {
		t.Fatalf("%d events visible, want the committed one", n)
	}
	for _, d := range []struct {
		d  time.Duration
		ok bool
	}{{time.Millisecond, true}, {time.Millisecond - 1, false}, {24 * time.Hour, true}, {24*time.Hour + 1, false}} {
		cfg := testConfig(t.TempDir())
		cfg.FenceTimeout = d.d
		var ce *core.ConfigError
		if err := cfg.Validate(); (err == nil) != d.ok || (err != nil && (!errors.As(err, &ce) || ce.Field != "FenceTimeout")) {
			t.Errorf("Validate(FenceTimeout=%s) = %v, want ok=%v", d.d, err, d.ok)
		}
		f, err := s.BeginFenceTimeout(ctx, d.d)
		if (err == nil) != d.ok || (err != nil && !errors.Is(err, core.ErrInvalidConfig)) {
			t.Errorf("BeginFenceTimeout(%s) = %v, want ok=%v", d.d, err, d.ok)
		}
		if f != nil {
			if err := f.Cancel(ctx); err != nil && !errors.Is(err, core.ErrFenceExpired) {
				t.Fatal(err)
			}
		}
	}
}
