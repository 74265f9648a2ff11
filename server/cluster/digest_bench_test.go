package cluster_test

import (
	"context"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// BenchmarkDigestChunk: one replica check comparison's own side, a digest
// of 262,144 events of ~100-byte payloads (one chunk of the leader's
// replica check), the segments in the page cache. Reports events/s and
// MB/s of payload.
//
//	go test -run '^$' -bench DigestChunk -benchtime 5x ./server/cluster/
func BenchmarkDigestChunk(b *testing.B) {
	s, err := core.Open(core.DefaultConfig(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const events, batch = 1 << 18, 256
	payload := []byte(`{"sku":"` + strings.Repeat("a", 86) + `"}`)
	items := make([]core.BatchItem, batch)
	for i := range items {
		coord, _ := core.NewCoordinate("order:"+string(rune('a'+i%26)), "shop")
		items[i] = core.BatchItem{Coordinate: coord, Kind: core.MustKind(1, 1), Payload: payload}
	}
	for range events / batch {
		if _, err := s.AppendBatch(context.Background(), items); err != nil {
			b.Fatal(err)
		}
	}
	upto := s.Usage().GlobalSequence
	b.ResetTimer()
	for range b.N {
		d, err := cluster.DigestChunk(context.Background(), s, 0, upto, 1<<18, 64<<20)
		if err != nil || d.Events != events {
			b.Fatalf("%v: %+v", err, d)
		}
	}
	b.StopTimer() // not the store's Close
	b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(events*len(payload))*float64(b.N)/b.Elapsed().Seconds()/1e6, "payload-MB/s")
}
