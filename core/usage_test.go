package core_test

import (
	"context"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// Usage agrees with Stats on segment bytes, segments and fsyncs, across a
// segment roll and after durable appends.
func TestUsageMatchesStats(t *testing.T) {
	cfg := core.DefaultConfig(t.TempDir())
	cfg.Sync.EveryNEvents = 1
	cfg.SegmentMaxBytes = 64 << 10
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	coord, _ := core.NewCoordinate("order:1", "shop")
	kind, _ := core.CustomKind(1, 1)
	check := func() {
		t.Helper()
		st, u := s.Stats(), s.Usage()
		if u.GlobalSequence != st.GlobalSequence || u.Bytes != st.Bytes || u.Segments != st.Segments || u.Fsyncs != st.Fsyncs {
			t.Fatalf("Usage %+v, Stats bytes %d segments %d fsyncs %d", u, st.Bytes, st.Segments, st.Fsyncs)
		}
	}
	check()
	for i := 0; i < 600; i++ {
		if _, err := s.Append(context.Background(), coord, kind, []byte(`{"n":"`+strings.Repeat("x", 100)+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	check()
	if u := s.Usage(); u.Segments < 2 || u.Bytes == 0 || u.Fsyncs == 0 {
		t.Fatalf("after 600 durable appends over 64 KiB segments: %+v", u)
	}
}
