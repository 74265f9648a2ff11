package main

import (
	"context"
	"testing"
)

// TestQuickstartRuns: the quickstart runs as the README shows it, its
// compare-and-set refusing the stale second ship included (run fails if
// any step, or that refusal, does not happen).
func TestQuickstartRuns(t *testing.T) {
	if err := run(context.Background()); err != nil {
		t.Fatal(err)
	}
}
