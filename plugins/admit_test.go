package plugins_test

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/plugins"
)

// TestAdmitWaitIsNotTheCallsTime: a call waits for HostOptions.Admit
// before its timeout starts, so a call that waited longer than its
// timeout for its turn still runs and succeeds; a call whose caller gave
// up while it waited is abandoned, not a fault, and quarantines nothing;
// a refusal from Admit is returned as it is, not as a fault; each
// admitted call releases its turn once.
func TestAdmitWaitIsNotTheCallsTime(t *testing.T) {
	turn := make(chan struct{}, 1)
	refuse := errors.New("no turn for this caller")
	var released int
	h, err := plugins.NewHost(plugins.HostOptions{Logger: quietLogger(), Admit: func(ctx context.Context) (func(), error) {
		if ctx.Value(refuseKey{}) != nil {
			return nil, refuse
		}
		select {
		case <-turn:
			return func() { released++ }, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := loadGatedCounter(t, h)
	evs := []core.StoredEvent{oneEvent(kindA)}

	go func() {
		time.Sleep(200 * time.Millisecond) // four times the call's timeout
		turn <- struct{}{}
	}()
	if _, err := p.Fold(context.Background(), nil, evs); err != nil {
		t.Fatalf("a call admitted after waiting 4× its timeout: %v, want it to run", err)
	}
	if released != 1 {
		t.Fatalf("turns released after one call: %d", released)
	}

	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = p.Fold(short, nil, evs)
	var f *plugins.PluginFault
	if err == nil || errors.As(err, &f) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call given up while it waited: %v, want it abandoned (the caller's deadline), not a fault", err)
	}
	if _, err := p.Fold(context.WithValue(context.Background(), refuseKey{}, true), nil, evs); !errors.Is(err, refuse) || errors.As(err, &f) {
		t.Fatalf("a call Admit refused: %v, want Admit's error, not a fault", err)
	}
	if p.Quarantined() {
		t.Fatal("calls that never ran quarantined the plugin (max_faults 1)")
	}
	turn <- struct{}{}
	if _, err := p.Fold(context.Background(), nil, evs); err != nil {
		t.Fatalf("the next call: %v", err)
	}
	if released != 2 {
		t.Fatalf("turns released after two admitted calls: %d", released)
	}
}

type refuseKey struct{}

// TestCallWaitingThroughASwapRunsTheNewVersion: a call that waits for
// its turn (HostOptions.Admit) past a Swap — and past the moment Swap
// closes the old version — runs the new version, without a fault; a
// pinned projection's call answers ErrSwapped instead, for its caller to
// fold again. Neither faults the new version.
func TestCallWaitingThroughASwapRunsTheNewVersion(t *testing.T) {
	turn := make(chan struct{})
	h, err := plugins.NewHost(plugins.HostOptions{Logger: quietLogger(), Admit: func(ctx context.Context) (func(), error) {
		select {
		case <-turn:
			return func() {}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	p, m := loadGatedCounter(t, h)
	pinned := plugins.Projection{P: p}.Pinned()
	evs := []core.StoredEvent{oneEvent(kindA)}

	type result struct {
		out []byte
		err error
	}
	plain, pin := make(chan result, 1), make(chan result, 1)
	go func() { out, err := p.Fold(context.Background(), nil, evs); plain <- result{out, err} }()
	go func() { out, err := pinned.ApplyBatch(nil, evs); pin <- result{out, err} }()
	time.Sleep(50 * time.Millisecond) // both wait for their turn
	if err := p.Swap(context.Background(), fixture(t, "counter2"), m); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond) // Swap closes the old version after its timeout + 1 s
	turn <- struct{}{}
	turn <- struct{}{}
	r := <-plain
	if r.err != nil {
		t.Fatalf("a call admitted after a swap: %v, want it run on the new version", r.err)
	}
	if got := binary.LittleEndian.Uint64(r.out); got != 2 {
		t.Fatalf("a call admitted after a swap folded one event to %d, want 2 (counter2 counts each event twice)", got)
	}
	if r := <-pin; !errors.Is(r.err, plugins.ErrSwapped) {
		t.Fatalf("a pinned call admitted after a swap: %v, want ErrSwapped", r.err)
	}
	if p.Quarantined() {
		t.Fatal("calls that waited through a swap faulted the new version (max_faults 1)")
	}
}

// loadGatedCounter loads the counter fixture on h (closed with the test)
// with a 50 ms timeout, quarantined after one fault; it returns the
// plugin and its manifest.
func loadGatedCounter(t *testing.T, h *plugins.Host) (*plugins.Plugin, plugins.Manifest) {
	t.Helper()
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	m := projManifest("count")
	m.Limits.Timeout = plugins.Duration(50 * time.Millisecond)
	m.Limits.MaxFaults = 1
	return load(t, h, fixture(t, "counter"), m), m
}
