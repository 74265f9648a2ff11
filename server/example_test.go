package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/batpak-go/batpak/server"
)

func Example() {
	root, _ := os.MkdirTemp("", "batpak-server")
	defer os.RemoveAll(root)
	cfg := server.DefaultConfig()
	cfg.Root = root
	cfg.Listen = "127.0.0.1:0" // any free port
	cfg.AccessLog = "off"
	cfg.Stderr = io.Discard // the generated operator credential is printed here
	srv, err := server.New(context.Background(), cfg)
	if err != nil {
		panic(err)
	}
	if err := srv.Listen(); err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx) }()

	res, err := http.Get("http://" + srv.Addr().String() + "/healthz")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Print(res.StatusCode, " ", string(body))
	fmt.Println(srv.Token != "") // a first start generated the operator credential

	stop() // as SIGTERM does in batpak serve
	fmt.Println(<-done)
	// Output:
	// 200 {"status":"ok"}
	// true
	// <nil>
}
