package index

import (
	"fmt"
	"testing"
)

// BenchmarkPlanFromEntity reads the first page of one entity among
// 100,000 (400,000 events; its name a prefix of 11,110 others, as
// "order:1" is of "order:10"…): by its exact name, the index walks the
// entity's own events; by prefix, every event of the log. A prefix of a
// few entities ("order:9999": 11 of them) merges their streams.
//
//	go test ./core/internal/index -run '^$' -bench PlanFromEntity
func BenchmarkPlanFromEntity(b *testing.B) {
	m := &model{ix: New()}
	for seq := range uint32(400_000) {
		m.insert(seq, [16]byte{byte(seq), byte(seq >> 8), byte(seq >> 16), 1}, fmt.Sprintf("order:%d", seq%100_000), "s", 1, 0, "")
	}
	for _, c := range []struct {
		name string
		f    Filter
	}{
		{"exact", Filter{HasEntity: true, EntityPrefix: "order:1", EntityExact: true}},
		{"prefix", Filter{HasEntity: true, EntityPrefix: "order:1"}},
		{"prefix11", Filter{HasEntity: true, EntityPrefix: "order:9999"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if locs, _ := m.ix.PlanFrom(c.f, 0, 100); len(locs) == 0 {
					b.Fatal("nothing planned")
				}
			}
		})
	}
}
