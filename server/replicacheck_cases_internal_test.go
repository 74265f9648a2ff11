package server

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// swapOnInspect is fakeReplicas whose tenant is deleted and created again
// between the round's mark and its opening of the store: the mark says
// the old incarnation (born 7), the store opened is the new one (born 9).
type swapOnInspect struct {
	*fakeReplicas
	newS *core.Store
}

func (w *swapOnInspect) inspect(t string, fn func(*core.Store) error) error {
	if w.newS != nil {
		w.s, w.born, w.newS = w.newS, 9, nil // the drop and the first write of the new incarnation applied
	}
	return w.fakeReplicas.inspect(t, fn)
}

// TestReplicaCheckRecreatedBetweenListAndOpen: a tenant deleted and created
// again after the round decided to look at it is compared as the
// incarnation the leader opened (its mark read with the store held): a
// member a moment behind, still on the old incarnation, is not compared,
// not reported.
func TestReplicaCheckRecreatedBetweenListAndOpen(t *testing.T) {
	old, err := core.Open(core.DefaultConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { old.Close() })
	appendN(t, old, 10)
	f := &fakeReplicas{s: old, lead: true, term: 1, born: 7,
		mode: map[string]string{}, asked: map[string][]string{}, tokens: map[string]string{}}
	f.member(t, "n2") // answers digests of f.s as it is when asked
	w := &swapOnInspect{fakeReplicas: f}
	c := newReplicaChecker(w, slog.New(slog.DiscardHandler), DefaultReplicaCheckEvery, "op-token", nil)
	ctx := context.Background()
	c.round(ctx)
	if st := c.status(); st.Agreeing != 1 {
		t.Fatalf("setup: %+v", st)
	}
	// n2 is behind: it keeps answering from the old incarnation (born 7).
	newS, err := core.Open(core.DefaultConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { newS.Close() })
	appendN(t, newS, 2)
	oldBorn := f.born
	srvStore := f.s
	// the member handler reads f.s and f.born: pin them to the old copy
	behind := &fakeReplicas{s: srvStore, born: oldBorn, mode: map[string]string{}, asked: map[string][]string{}, tokens: map[string]string{}}
	behind.member(t, "n2")
	f.members = behind.members
	appendN(t, old, 1) // a write to the old incarnation since the last round (or: a full round)
	w.newS = newS
	c.round(ctx)
	if d := c.status().Diverged; len(d) > 0 {
		t.Fatalf("a member merely behind on another incarnation reported %+v", d)
	}
}

// openFails is fakeReplicas whose own store does not open: damaged (its
// log shorter than it recorded), as cluster.Node.Inspect reports it.
type openFails struct{ *fakeReplicas }

func (o openFails) inspect(string, func(*core.Store) error) error {
	return fmt.Errorf("cluster: opening tenant %q: %w", "acme", &core.LogTruncatedError{Dir: "acme", Recorded: 20, Found: 10, Evidence: "index.ckpt"})
}

// TestReplicaCheckLeaderStoreDoesNotOpen: the leader's own copy that
// cannot be opened (damaged: its log shorter than recorded) is an alarm of
// its own, and no member's copy counts as agreeing with it.
func TestReplicaCheckLeaderStoreDoesNotOpen(t *testing.T) {
	s, err := core.Open(core.DefaultConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f := &fakeReplicas{s: s, lead: true, term: 1, born: 7,
		mode: map[string]string{}, asked: map[string][]string{}, tokens: map[string]string{}}
	f.member(t, "n2")
	c := newReplicaChecker(openFails{f}, slog.New(slog.DiscardHandler), DefaultReplicaCheckEvery, "op-token", nil)
	c.round(context.Background())
	if st := c.status(); len(st.Diverged) == 0 || st.Agreeing != 0 {
		t.Fatalf("the leader's own copy cannot be opened (ErrLogTruncated): alarms %v, agreeing %d of %d", st.Diverged, st.Agreeing, st.Copies)
	}
}
