package plugins_test

import (
	"context"
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
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	m := projManifest("good")
	m.Limits.Timeout = plugins.Duration(50 * time.Millisecond)
	m.Limits.MaxFaults = 1
	p := load(t, h, fixture(t, "counter"), m)
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
