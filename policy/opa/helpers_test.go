package opa_test

import (
	"encoding/json"
	"testing"

	"github.com/batpak-go/batpak/policy/internal/policytest"
)

// Fixtures shared by the policy packages' tests (policytest): a gated
// store, denial helpers, a watch proving a refused write left no trace.
var (
	kindA       = policytest.KindA
	kindB       = policytest.KindB
	clerk       = policytest.Clerk
	clerkCtx    = policytest.ClerkCtx
	mustCoord   = policytest.MustCoord
	openGated   = policytest.OpenGated
	admitterOf  = policytest.AdmitterOf
	asDenial    = policytest.AsDenial
	reasonCodes = policytest.ReasonCodes
	watchStore  = policytest.WatchStore
)

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
