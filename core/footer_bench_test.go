package core_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// BenchmarkSegmentFooter builds and saves the footer of a plain segment
// of 200k events with 100-byte payloads (about 60 MiB), the work the
// sealer does once per segment and Close for the active one.
//
//	go test ./core -run '^$' -bench SegmentFooter -benchtime 10x
func BenchmarkSegmentFooter(b *testing.B) {
	const events = 200_000
	cfg := core.DefaultConfig(b.TempDir())
	cfg.Sync.EveryNEvents = 0
	s, err := core.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	kind := core.MustKind(1, 1)
	for i := 0; i < events; i += 100 {
		items := make([]core.BatchItem, 100)
		for j := range items {
			c, _ := core.NewCoordinate(fmt.Sprintf("order:%d", (i+j)%64), "shop")
			items[j] = core.BatchItem{Coordinate: c, Kind: kind, Payload: payload100}
		}
		if _, err := s.AppendBatch(ctx, items); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		if err := core.WriteActiveFooter(s); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/events, "ns/event")
}
