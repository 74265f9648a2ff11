package core_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// switchedGate refuses every write while judging is on and counts the
// proposals it was asked about.
type switchedGate struct {
	judging atomic.Bool
	asked   atomic.Int64
}

var errRefused = errors.New("refused by the switched gate")

func (g *switchedGate) Judging() bool { return g.judging.Load() }

func (g *switchedGate) Admit(context.Context, *core.Proposal) error {
	g.asked.Add(1)
	return errRefused
}

// A gate that is not judging is not asked (no proposal is built), for
// single appends and batches alike; once it judges, every write is asked
// and its refusal holds.
func TestSwitchedAdmission(t *testing.T) {
	g := &switchedGate{}
	s := openStore(t, func(c *core.Config) { c.Admission = g })
	c := mustCoord(t, "switch:1", "s")
	mustAppend(t, s, c, kindA, `{}`)
	mustBatch(t, s, []core.BatchItem{{Coordinate: c, Kind: kindA, Payload: []byte(`{}`)}, {Coordinate: c, Kind: kindA, Payload: []byte(`{}`)}})
	if n := g.asked.Load(); n != 0 {
		t.Fatalf("an idle gate was asked %d times", n)
	}
	g.judging.Store(true)
	if _, err := s.Append(context.Background(), c, kindA, []byte(`{}`)); !errors.Is(err, errRefused) {
		t.Fatalf("append while judging: %v", err)
	}
	if _, err := s.AppendBatch(context.Background(), []core.BatchItem{{Coordinate: c, Kind: kindA, Payload: []byte(`{}`)}}); !errors.Is(err, errRefused) {
		t.Fatalf("batch while judging: %v", err)
	}
	if n := g.asked.Load(); n != 2 {
		t.Fatalf("the judging gate was asked %d times, want 2", n)
	}
	if st := s.Stats(); st.Events != 3 {
		t.Fatalf("%d events stored, want the 3 written while idle", st.Events)
	}
}
