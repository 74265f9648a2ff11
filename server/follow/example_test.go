package follow_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/follow"
)

// A subscriber follows one entity from the beginning: what the store
// already holds, then what is appended later. An SSE handler writes each
// batch Next returns and flushes once.
func Example() {
	dir, _ := os.MkdirTemp("", "follow-example")
	defer os.RemoveAll(dir)
	s, err := core.Open(core.DefaultConfig(dir))
	if err != nil {
		panic(err)
	}
	defer s.Close()
	ctx := context.Background()
	placed := core.MustKind(1, 1)
	order1, _ := core.NewCoordinate("order:1", "shop")
	order2, _ := core.NewCoordinate("order:2", "shop")
	_, _ = s.Append(ctx, order1, placed, []byte(`{"total":10}`))
	_, _ = s.Append(ctx, order2, placed, []byte(`{"total":20}`))

	hub, err := follow.New(s, follow.Options{
		// Called once per event, whatever the number of subscribers.
		Encode: func(ev core.StoredEvent) []byte {
			b, _ := json.Marshal(map[string]any{"entity": ev.Coordinate.Entity, "payload": ev.Payload})
			return b
		},
	})
	if err != nil {
		panic(err)
	}
	defer hub.Close()
	sub, err := hub.Subscribe(core.Entity("order:1"), follow.FromBeginning())
	if err != nil {
		panic(err)
	}
	defer sub.Close()

	_, _ = s.Append(ctx, order1, placed, []byte(`{"total":11}`))
	for n := 0; n < 2; {
		frames, err := sub.Next(ctx)
		if err != nil {
			panic(err) // an *follow.EndError says where to resume
		}
		for _, f := range frames {
			fmt.Printf("id: %d\ndata: %s\n", f.Seq, f.Data)
			n++
		}
	}
	fmt.Println("resume", sub.Position())
	// Output:
	// id: 0
	// data: {"entity":"order:1","payload":{"total":10}}
	// id: 2
	// data: {"entity":"order:1","payload":{"total":11}}
	// resume after 2
}
