package client_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/batpak-go/batpak/sdk/client"
)

// TestStatusAllNodesFromAnOlderServer: a server that refuses the nodes
// parameter (from before the members' health) gives the status without
// health, not an error; other refusals stay errors.
func TestStatusAllNodesFromAnOlderServer(t *testing.T) {
	field := "nodes"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("nodes") {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(400)
			fmt.Fprintf(w, `{"code":"INVALID_REQUEST","status":400,"detail":"unknown query parameter \"nodes\"; GET /v1/cluster takes none","field":%q}`, field)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"n1","state":"leader","members":[{"id":"n1","leader":true}]}`)
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "op")
	st, err := c.Cluster().StatusAllNodes(context.Background())
	if err != nil || st.ID != "n1" || st.Health != nil {
		t.Fatalf("from an older server: %+v, %v; want its status without health", st, err)
	}
	field = "other"
	if _, err := c.Cluster().StatusAllNodes(context.Background()); err == nil {
		t.Fatal("a 400 naming another field was taken for an older server")
	}
}
