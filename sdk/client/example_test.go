package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
)

// startServer runs a batpak server on a free loopback port for the
// examples and returns its URL, its operator credential and a stop func.
func startServer() (url, operator string, stop func()) {
	root, _ := os.MkdirTemp("", "batpak-client-example")
	cfg := server.DefaultConfig()
	cfg.Root, cfg.Listen, cfg.AccessLog, cfg.Stderr = root, "127.0.0.1:0", "off", io.Discard
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg)
	if err != nil {
		panic(err)
	}
	if err := srv.Listen(); err != nil {
		panic(err)
	}
	done := make(chan error)
	go func() { done <- srv.Serve(ctx) }()
	return "http://" + srv.Addr().String(), srv.Token, func() { cancel(); <-done; os.RemoveAll(root) }
}

func Example() {
	url, operator, stop := startServer()
	defer stop()
	ctx := context.Background()

	// The operator creates a tenant and a key for it.
	admin, _ := client.New(url, operator)
	if _, err := admin.Admin().CreateTenant(ctx, "acme", nil, nil); err != nil {
		panic(err)
	}
	key, err := admin.Admin().IssueKey(ctx, "acme", "shop-backend", "writer")
	if err != nil {
		panic(err)
	}

	// The tenant's application appends, conditionally, and reads back.
	c, _ := client.New(url, key.Key)
	acme := c.Tenant("acme")
	r, err := acme.Append(ctx, client.AppendRequest{
		Entity: "order:1", Scope: "shop", Kind: "1:1",
		Payload:       json.RawMessage(`{"total_cents":998}`),
		ExpectedClock: client.ExpectNoEvents(),
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("clock", r.Clock, "sequence", r.GlobalSequence)

	_, err = acme.Append(ctx, client.AppendRequest{
		Entity: "order:1", Scope: "shop", Kind: "1:1", Payload: json.RawMessage(`{}`),
		ExpectedClock: client.ExpectNoEvents(),
	})
	var pe *client.Error
	if errors.As(err, &pe) {
		fmt.Println(pe.Code, pe.Status)
	}

	for ev, err := range acme.Query(ctx, client.Query{Entity: "order:"}) {
		if err != nil {
			panic(err)
		}
		fmt.Println(ev.Entity, ev.Kind, string(ev.Payload))
	}
	// Output:
	// clock 0 sequence 0
	// CONFLICT 409
	// order:1 1:1 {"total_cents":998}
}

func ExampleTenant_Subscribe() {
	url, operator, stop := startServer()
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	admin, _ := client.New(url, operator)
	admin.Admin().CreateTenant(ctx, "acme", nil, nil)
	key, _ := admin.Admin().IssueKey(ctx, "acme", "app", "writer")
	acme := func() *client.Tenant { c, _ := client.New(url, key.Key); return c.Tenant("acme") }()

	for i := range 3 {
		acme.Append(ctx, client.AppendRequest{Entity: fmt.Sprintf("order:%d", i), Scope: "shop", Kind: "1:1", Payload: json.RawMessage(`{}`)})
	}
	// Catch up from the start, then live; a dropped connection resumes
	// after the last event seen.
	sub := acme.Subscribe(ctx, client.Query{Entity: "order:"}, client.FromStart())
	defer sub.Close()
	n := 0
	for ev, err := range sub.Events() {
		if err != nil {
			panic(err)
		}
		fmt.Println(ev.GlobalSequence, ev.Entity)
		if n++; n == 3 {
			break
		}
	}
	// Output:
	// 0 order:0
	// 1 order:1
	// 2 order:2
}

func ExampleWithAnswer() {
	url, operator, stop := startServer()
	defer stop()
	ctx := context.Background()

	admin, _ := client.New(url, operator)
	admin.Admin().CreateTenant(ctx, "acme", nil, nil)
	key, _ := admin.Admin().IssueKey(ctx, "acme", "laptop", "reader")

	// On a cluster, the leader answers a revocation once every member
	// refuses the key, or names those that had not confirmed it within
	// 2 s. A single server has no other member.
	var ans client.Answer
	if err := admin.Admin().RevokeKey(client.WithAnswer(ctx, &ans), "acme", key.ID); err != nil {
		panic(err)
	}
	fmt.Println("revoked; members yet to confirm:", len(ans.UnconfirmedMembers))
	// Output:
	// revoked; members yet to confirm: 0
}
