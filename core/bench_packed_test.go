package core_test

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// packedFixture builds a store of n order events (orderJSON: nested
// customer and address, line items, money, timestamps) in 16 MiB segments with
// the given compression, sealed (packed and footered), and returns it
// open with the ids of its events.
func packedFixture(b *testing.B, n int, c core.Compression) (*core.Store, []core.EventID) {
	b.Helper()
	cfg := core.DefaultConfig(b.TempDir())
	cfg.SegmentMaxBytes = 16 << 20
	cfg.Compression = c
	s, err := core.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ctx := context.Background()
	r := rand.New(rand.NewSource(1))
	ids := make([]core.EventID, 0, n)
	window := make([]*core.Ticket, 0, 4096)
	flush := func() {
		for _, t := range window {
			rc, err := t.Wait(ctx)
			if err != nil {
				b.Fatal(err)
			}
			ids = append(ids, rc.ID)
		}
		window = window[:0]
	}
	for i := 0; i < n; i++ {
		coord, _ := core.NewCoordinate(fmt.Sprintf("order:%d", i%20000), "shop")
		t, err := s.Submit(ctx, coord, core.MustKind(1, 1+uint16(i%4)), []byte(orderJSON(r, i)))
		if err != nil {
			b.Fatal(err)
		}
		if window = append(window, t); len(window) == cap(window) {
			flush()
		}
	}
	flush()
	if err := s.SealSegments(ctx); err != nil {
		b.Fatal(err)
	}
	return s, ids
}

// BenchmarkPacked: compression ratio of sealed segments on realistic order
// JSON, the cost of packing, and the cost of a random Get (one block
// decompressed) against a plain segment's.
//
//	go test ./core -run '^$' -bench Packed -benchtime 20000x
func BenchmarkPacked(b *testing.B) {
	const n = 200_000
	for _, c := range []core.Compression{core.CompressionNone, core.CompressionS2, core.CompressionZstd} {
		b.Run(c.String(), func(b *testing.B) {
			s, ids := packedFixture(b, n, c)
			d := s.Diagnostics()
			if c != core.CompressionNone && d.PackedSegments == 0 {
				b.Fatal("nothing packed")
			}
			r := rand.New(rand.NewSource(3))
			// Only events of sealed segments: the active one is never packed.
			sealed := ids[:len(ids)*3/4]
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Get(sealed[r.Intn(len(sealed))]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(d.Bytes)/float64(n), "rawB/event")
			if c != core.CompressionNone {
				b.ReportMetric(float64(d.PackedRawBytes)/float64(d.PackedBytes), "ratio")
			}
		})
	}
}

// BenchmarkPack measures packing speed: MB of segment data compressed per
// second (the sealer's work per sealed segment).
//
//	go test ./core -run '^$' -bench 'Pack$' -benchtime 3x
func BenchmarkPack(b *testing.B) {
	for _, c := range []core.Compression{core.CompressionS2, core.CompressionZstd} {
		b.Run(c.String(), func(b *testing.B) {
			var raw int64
			var took time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				s, _ := packedFixture(b, 100_000, core.CompressionNone)
				dir := s.Dir()
				cfg := s.Config()
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				cfg.Compression = c
				s2, err := core.Open(cfg)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				if err := s2.SealSegments(context.Background()); err != nil {
					b.Fatal(err)
				}
				took += time.Since(start)
				b.StopTimer()
				d := s2.Diagnostics()
				raw += d.PackedRawBytes
				s2.Close()
				os.RemoveAll(dir)
			}
			b.ReportMetric(float64(raw)/1e6/took.Seconds(), "MB/s")
		})
	}
}

// BenchmarkSnapshot1M copies the 1M-event store (about 290 MB of
// segments) into a fresh directory.
//
//	go test ./core -run '^$' -bench Snapshot1M -benchtime 3x
func BenchmarkSnapshot1M(b *testing.B) {
	dir := bigStore(b)
	s, err := core.Open(core.DefaultConfig(dir))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var bytes int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dest := filepath.Join(b.TempDir(), "snap")
		rep, err := s.Snapshot(context.Background(), dest)
		if err != nil {
			b.Fatal(err)
		}
		if rep.GlobalSequence != bigEvents {
			b.Fatalf("snapshot of %d events", rep.GlobalSequence)
		}
		bytes += rep.Bytes
		b.StopTimer()
		os.RemoveAll(dest)
		b.StartTimer()
	}
	b.ReportMetric(float64(bytes)/1e6/b.Elapsed().Seconds(), "MB/s")
}

// BenchmarkCompact measures compaction throughput (MB of sealed segment
// data read and rewritten per second): retention keeping the newest 5
// events of each of 20000 entities, on plain and on zstd-packed output.
//
//	go test ./core -run '^$' -bench 'Compact$' -benchtime 3x
func BenchmarkCompact(b *testing.B) {
	for _, c := range []core.Compression{core.CompressionNone, core.CompressionZstd} {
		b.Run(c.String(), func(b *testing.B) {
			var raw int64
			var took time.Duration
			var rep core.CompactReport
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				s, _ := packedFixture(b, 200_000, core.CompressionNone)
				cfg := s.Config()
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				cfg.Compression = c
				s2, err := core.Open(cfg)
				if err != nil {
					b.Fatal(err)
				}
				before := s2.Stats().Bytes
				b.StartTimer()
				start := time.Now()
				rep, err = s2.Compact(context.Background(), core.CompactConfig{MaxPerEntity: 5, Merge: true})
				if err != nil {
					b.Fatal(err)
				}
				took += time.Since(start)
				b.StopTimer()
				raw += before
				s2.Close()
				os.RemoveAll(cfg.Dir)
			}
			b.ReportMetric(float64(raw)/1e6/took.Seconds(), "MB/s")
			b.ReportMetric(float64(rep.EventsRemoved), "removed")
			b.ReportMetric(float64(rep.DiskBytesReclaimed)/1e6, "MBreclaimed")
		})
	}
}

// BenchmarkPackedScan reads every event in order (Query of the whole
// store): sequential reads decompress each block once.
//
//	go test ./core -run '^$' -bench PackedScan -benchtime 5x
func BenchmarkPackedScan(b *testing.B) {
	const n = 200_000
	for _, c := range []core.Compression{core.CompressionNone, core.CompressionS2, core.CompressionZstd} {
		b.Run(c.String(), func(b *testing.B) {
			s, _ := packedFixture(b, n, c)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				evs, err := s.Query(core.All())
				if err != nil || len(evs) != n {
					b.Fatalf("%d events, %v", len(evs), err)
				}
			}
			reportRate(b, n*b.N)
		})
	}
}
