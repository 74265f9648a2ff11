package core_test

import (
	"context"
	"errors"
	"testing"

	"github.com/batpak-go/batpak/core"
)

func TestBatchSmoke(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	c := mustCoord(t, "b:1", "s")
	rs, err := s.AppendBatch(ctx, []core.BatchItem{
		{Coordinate: c, Kind: kindA, Payload: []byte(`{"i":0}`)},
		{Coordinate: c, Kind: kindA, Payload: []byte(`{"i":1}`), Causation: core.PriorItem(0)},
	})
	if err != nil || len(rs) != 2 || rs[1].Clock != 1 || rs[1].CorrelationID != rs[0].ID {
		t.Fatal(rs, err)
	}
	core.SetBatchFault(s, func(p core.FaultPoint, item int) error {
		if p == core.FaultBeforePublish {
			return errors.New("boom")
		}
		return nil
	})
	_, err = s.AppendBatch(ctx, []core.BatchItem{{Coordinate: c, Kind: kindA, Payload: []byte(`{"i":2}`)}})
	if err == nil {
		t.Fatal("want fault")
	}
	core.SetBatchFault(s, nil)
	r, err := s.Append(ctx, c, kindA, []byte(`{"i":3}`))
	if err != nil || r.Clock != 2 || r.GlobalSequence != 2 {
		t.Fatal(r, err)
	}
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, c, kindA, []byte(`{}`)); !errors.Is(err, core.ErrFenceActive) {
		t.Fatal(err)
	}
	tk, err := f.Submit(ctx, c, kindA, []byte(`{"fenced":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, done, _ := tk.TryCheck(); done {
		t.Fatal("resolved before commit")
	}
	if evs, _ := s.Stream("b:1"); len(evs) != 3 {
		t.Fatal(len(evs))
	}
	if err := f.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if rc, err := tk.Wait(ctx); err != nil || rc.Clock != 3 {
		t.Fatal(rc, err)
	}
	f2, _ := s.BeginFence(ctx)
	tk2, _ := f2.Submit(ctx, c, kindA, []byte(`{"fenced":2}`))
	if err := f2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tk2.Wait(ctx); !errors.Is(err, core.ErrFenceCancelled) {
		t.Fatal(err)
	}
	r, err = s.Append(ctx, c, kindA, []byte(`{"after":1}`))
	if err != nil || r.Clock != 5 {
		t.Fatal(r, err)
	}
	if rep, err := s.Verify(); err != nil || rep.Hidden != 1 {
		t.Fatal(rep, err)
	}
	s2 := reopen(t, s)
	if evs, _ := s2.Stream("b:1"); len(evs) != 5 {
		t.Fatal(len(evs))
	}
	if rep, err := s2.Verify(); err != nil || rep.Hidden != 1 || rep.Events != 6 {
		t.Fatal(rep, err)
	}
}
