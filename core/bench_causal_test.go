package core_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// The causal benchmarks run over a store of 1M events: 10,000
// conversations of 100 events, each written as one batch whose item i is
// caused by item (i-1)/2 (a binary tree 7 levels deep), the conversations
// interleaved with nothing else. Only -bench Causal1M builds it.
//
//	go test ./core -run '^$' -bench Causal1M -benchtime 2000x
var causalBig struct {
	once  sync.Once
	dir   string
	roots []core.EventID
	leafs []core.EventID
	err   error
}

const causalConversation = 100

func causalStore(b *testing.B) string {
	causalBig.once.Do(func() {
		causalBig.dir, causalBig.err = os.MkdirTemp("", "batpak-bench-causal-")
		if causalBig.err != nil {
			return
		}
		s, err := core.Open(core.DefaultConfig(causalBig.dir))
		if err != nil {
			causalBig.err = err
			return
		}
		ctx := context.Background()
		kind := core.MustKind(1, 1)
		items := make([]core.BatchItem, causalConversation)
		for c := 0; c < bigEvents/causalConversation; c++ {
			for i := range items {
				coord, _ := core.NewCoordinate(fmt.Sprintf("conv:%d:%d", c%1000, i%4), "eu")
				items[i] = core.BatchItem{Coordinate: coord, Kind: kind, Payload: payload100}
				if i > 0 {
					items[i].Causation = core.PriorItem((i - 1) / 2)
				}
			}
			rs, err := s.AppendBatch(ctx, items)
			if err != nil {
				causalBig.err = err
				return
			}
			causalBig.roots = append(causalBig.roots, rs[0].ID)
			causalBig.leafs = append(causalBig.leafs, rs[len(rs)-1].ID)
		}
		if causalBig.err = s.SealSegments(ctx); causalBig.err != nil {
			return
		}
		causalBig.err = s.Close()
	})
	if causalBig.err != nil {
		b.Fatal(causalBig.err)
	}
	return causalBig.dir
}

// BenchmarkCausal1M: Descendants and Correlation of a conversation (100
// events returned, payloads read), a leaf's Descendants (1 event), a
// truncated walk (10 events), and Ancestors of a leaf (7 events) to
// compare with.
func BenchmarkCausal1M(b *testing.B) {
	s := readerOf(b, causalStore(b))
	roots, leafs := causalBig.roots, causalBig.leafs
	cases := []struct {
		name string
		run  func(i int) (int, error)
	}{
		{"descendants-root", func(i int) (int, error) {
			r, err := s.Descendants(roots[i%len(roots)], core.CausalLimits{})
			return len(r.Events), err
		}},
		{"descendants-leaf", func(i int) (int, error) {
			r, err := s.Descendants(leafs[i%len(leafs)], core.CausalLimits{})
			return len(r.Events), err
		}},
		{"descendants-root-max10", func(i int) (int, error) {
			r, err := s.Descendants(roots[i%len(roots)], core.CausalLimits{MaxEvents: 10})
			return len(r.Events), err
		}},
		{"correlation", func(i int) (int, error) {
			r, err := s.Correlation(leafs[i%len(leafs)], core.CausalLimits{})
			return len(r.Events), err
		}},
		{"ancestors-leaf", func(i int) (int, error) {
			r, err := s.Ancestors(leafs[i%len(leafs)], 0)
			return len(r), err
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			n := 0
			for i := 0; i < b.N; i++ {
				got, err := c.run(i * 7919)
				if err != nil {
					b.Fatal(err)
				}
				n += got
			}
			b.ReportMetric(float64(n)/float64(b.N), "events/op")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/event")
		})
	}
}
