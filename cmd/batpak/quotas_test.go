package main

import (
	"reflect"
	"slices"
	"testing"

	"github.com/batpak-go/batpak/server/control"
)

// TestClientQuotasNameEveryQuota: the client's Quotas carry every quota
// the server knows, so that reading a tenant's quotas and writing them
// back (tenant quotas --set) keeps the ones it does not change.
func TestClientQuotasNameEveryQuota(t *testing.T) {
	server, cl := jsonFieldNames(reflect.TypeFor[control.Quotas]()), quotaNames()
	slices.Sort(server)
	slices.Sort(cl)
	if !slices.Equal(server, cl) {
		t.Fatalf("client.Quotas names %v,\nthe server's quotas are %v", cl, server)
	}
}
