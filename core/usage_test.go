package core_test

import (
	"context"
	"fmt"
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
		st, u, est := s.Stats(), s.Usage(), s.StatsEstimated()
		if u.GlobalSequence != st.GlobalSequence || u.Bytes != st.Bytes || u.Segments != st.Segments || u.Fsyncs != st.Fsyncs {
			t.Fatalf("Usage %+v, Stats bytes %d segments %d fsyncs %d", u, st.Bytes, st.Segments, st.Fsyncs)
		}
		// StatsEstimated is Stats but for the index's bytes, Usage's.
		walked := st
		walked.IndexBytes = u.IndexBytes
		if est != walked {
			t.Fatalf("StatsEstimated %+v, want Stats with Usage's IndexBytes %+v", est, walked)
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

// TestUsageIndexBytesFollowsTheIndex: Usage's running estimate of the
// index's heap counts each event and each entity's, scope's and
// idempotency key's name, so long names cost what they hold; it stays
// near the walked figure of Stats, before and after the store is opened
// again (from its checkpoint or its segments): within a third of it
// either way, for long names and for events in conversations of their
// own alike.
func TestUsageIndexBytesFollowsTheIndex(t *testing.T) {
	dir := t.TempDir()
	cfg := core.DefaultConfig(dir)
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	kind, _ := core.CustomKind(1, 1)
	const n, nameLen = 2000, 900
	before := s.Usage().IndexBytes
	for i := range n {
		name := fmt.Sprintf("e%04d:%s", i, strings.Repeat("x", nameLen))
		coord, _ := core.NewCoordinate(name, fmt.Sprintf("s%04d:%s", i, strings.Repeat("y", nameLen)))
		if _, err := s.AppendWithOptions(context.Background(), coord, kind, []byte(`{}`), core.AppendOptions{IdempotencyKey: fmt.Sprintf("k%04d:%s", i, strings.Repeat("z", 100))}); err != nil {
			t.Fatal(err)
		}
	}
	near := func(when string, s *core.Store) {
		t.Helper()
		est, walked := s.Usage().IndexBytes, s.Stats().IndexBytes
		if minimum := int64(n * 2 * nameLen); est-before < minimum {
			t.Fatalf("%s: the estimate grew %d bytes for %d events with two %d-byte names each, want at least %d", when, est-before, n, nameLen, minimum)
		}
		if est < walked*2/3 || est > walked*3/2 {
			t.Fatalf("%s: the estimate %d is far from the walked figure %d", when, est, walked)
		}
	}
	near("written", s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	near("opened again", s)
}

// TestUsageIndexBytesCountsConversations: events that each open a
// conversation of their own (a correlation id of no event in the store)
// cost the index a correlation group each, and the running estimate
// counts them: it stays within a third of the walked figure.
func TestUsageIndexBytesCountsConversations(t *testing.T) {
	s, err := core.Open(core.DefaultConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kind, _ := core.CustomKind(1, 1)
	coord, _ := core.NewCoordinate("c:1", "s")
	items := make([]core.BatchItem, 256)
	for range 200 {
		for i := range items {
			items[i] = core.BatchItem{Coordinate: coord, Kind: kind, Payload: []byte(`{}`), Options: core.AppendOptions{CorrelationID: core.NewEventID()}}
		}
		if _, err := s.AppendBatch(context.Background(), items); err != nil {
			t.Fatal(err)
		}
	}
	est, walked := s.Usage().IndexBytes, s.Stats().IndexBytes
	if est < walked*2/3 || est > walked*3/2 {
		t.Fatalf("51,200 events in conversations of their own: the estimate %d is far from the walked figure %d", est, walked)
	}
}
