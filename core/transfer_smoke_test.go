package core_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/batpak-go/batpak/core"
)

func TestIssue7Smoke(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	c := mustCoord(t, "x:1", "s")
	r0 := mustAppend(t, s, c, kindA, `{"secret":"abc"}`)
	r1 := mustAppend(t, s, c, kindA, `{"n":1}`)
	mustAppendOpts(t, s, mustCoord(t, "x:2", "s"), kindA, `{"n":2}`, core.AppendOptions{CausationID: r1.ID, CorrelationID: r0.ID})
	if err := s.Redact(ctx, r0.ID); err != nil {
		t.Fatal(err)
	}
	ev, err := s.Get(r0.ID)
	if err != nil || !ev.Redacted || ev.Payload != nil {
		t.Fatal(ev, err)
	}
	if _, err := s.Verify(); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n, err := s.Export(&buf, core.All(), nil)
	if err != nil || n != 3 {
		t.Fatal(n, err)
	}
	dest := filepath.Join(t.TempDir(), "snap")
	rep, err := s.Snapshot(ctx, dest)
	if err != nil || rep.GlobalSequence != 3 {
		t.Fatal(rep, err)
	}
	if _, err := s.Snapshot(ctx, dest); !errors.Is(err, core.ErrSnapshotDest) {
		t.Fatal(err)
	}
	snap, err := core.Open(core.DefaultConfig(dest))
	if err != nil {
		t.Fatal(err)
	}
	if st := snap.Stats(); st.Events != 3 {
		t.Fatal(st)
	}
	snap.Close()
	s2, err := core.Open(core.DefaultConfig(filepath.Join(t.TempDir(), "imp")))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	st, err := s2.Import(ctx, bytes.NewReader(buf.Bytes()), nil)
	if err != nil || st.Imported != 3 {
		t.Fatal(st, err)
	}
	st, err = s2.Import(ctx, bytes.NewReader(buf.Bytes()), nil)
	if err != nil || st.Skipped != 3 {
		t.Fatal(st, err)
	}
	a, _ := s.Query(core.All())
	b, _ := s2.Query(core.All())
	for i := range a {
		if a[i].Header.ID != b[i].Header.ID || a[i].Header.CausationID != b[i].Header.CausationID || a[i].Header.CorrelationID != b[i].Header.CorrelationID || a[i].Header.Timestamp != b[i].Header.Timestamp {
			t.Fatal(i, a[i].Header, b[i].Header)
		}
	}
	t.Log(s.Diagnostics())
	_ = os.Remove
}
