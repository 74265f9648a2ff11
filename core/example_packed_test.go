package core_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/batpak-go/batpak/core"
)

// Sealed segments stored compressed: set Config.Compression and the store
// packs each segment in the background once it is sealed. SealSegments
// does the pending work now (a backup script might call it first).
func ExampleStore_SealSegments() {
	dir, _ := os.MkdirTemp("", "batpak-example-")
	defer os.RemoveAll(dir)

	cfg := core.DefaultConfig(dir)
	cfg.Compression = core.CompressionZstd
	cfg.SegmentMaxBytes = 64 << 10 // tiny segments, to have some sealed
	s, err := core.Open(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var first core.EventID
	for i := 0; i < 1000; i++ {
		coord, _ := core.NewCoordinate(fmt.Sprintf("order:%d", i%50), "shop")
		r, err := s.Append(ctx, coord, orderPlaced, fmt.Appendf(nil, `{"order":%d,"customer":"Maria Garcia","status":"placed","currency":"EUR"}`, i))
		if err != nil {
			log.Fatal(err)
		}
		if i == 0 {
			first = r.ID
		}
	}
	if err := s.SealSegments(ctx); err != nil {
		log.Fatal(err)
	}
	d := s.Diagnostics()
	fmt.Println("every sealed segment packed:", d.PackedSegments == d.Segments-1)
	fmt.Println("smaller on disk:", d.PackedBytes < d.PackedRawBytes)

	ev, err := s.Get(first) // decompresses one block of a packed segment
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(ev.Payload))
	// Output:
	// every sealed segment packed: true
	// smaller on disk: true
	// {"order":0,"customer":"Maria Garcia","status":"placed","currency":"EUR"}
}
