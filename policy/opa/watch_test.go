package opa_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/policy/opa"
)

// Watch: what a running gate notices of its bundle changing on disk.

// watched loads the bundle at path and watches it until the test ends;
// the errors Watch reports are kept for the test to show.
func watched(t *testing.T, path string) (*opa.Gate, func() []error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	g, err := opa.Load(ctx, path, opa.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var errs []error
	if err := g.Watch(ctx, func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	return g, func() []error { mu.Lock(); defer mu.Unlock(); return append([]error(nil), errs...) }
}

// denialBecomes waits up to 5s for the gate to deny acme:order:1 with
// message (allow it, when message is ""), failing the test otherwise.
func denialBecomes(t *testing.T, g *opa.Gate, errs func() []error, message, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		d := g.Evaluate(context.Background(), orderInput(clerk, "acme:order:1", "1:1", `{}`))
		got := ""
		if d != nil {
			got = d.Message
		}
		if got == message {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: 5s later the write is judged %q, want %q (watch errors: %v)", what, got, message, errs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// allowAll is a policy that allows every write to acme:order:1.
const allowAll = "package batpak.write\n\ndeny contains \"never\" if input.event.entity == \"never\"\n"

// denying is a policy that denies every write with message.
func denying(message string) string {
	return "package batpak.write\n\ndeny contains \"" + message + "\"\n"
}

// TestWatchSeesNewSubdirectories: a module written into a directory made
// after Watch started is loaded, whether it was there before the
// directory was seen (made elsewhere and moved in, files and all) or
// written afterwards; and its later edits are loaded too.
func TestWatchSeesNewSubdirectories(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "write.rego"), allowAll)
	g, errs := watched(t, dir)
	denialBecomes(t, g, errs, "", "at the start")

	sub := filepath.Join(dir, "frozen")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond) // the mkdir's reload has run: nothing new to load yet
	writeFile(t, filepath.Join(sub, "freeze.rego"), denying("frozen"))
	denialBecomes(t, g, errs, "frozen", "a module written into a new subdirectory")
	writeFile(t, filepath.Join(sub, "freeze.rego"), denying("frozen again"))
	denialBecomes(t, g, errs, "frozen again", "an edit of that module")

	// A tree made elsewhere, files inside, moved in at once: its nested
	// directory is watched as well.
	outside := filepath.Join(t.TempDir(), "tree")
	if err := os.MkdirAll(filepath.Join(outside, "deep"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(sub, "freeze.rego")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(outside, "deep", "deep.rego"), denying("deep"))
	if err := os.Rename(outside, filepath.Join(dir, "tree")); err != nil {
		t.Fatal(err)
	}
	denialBecomes(t, g, errs, "deep", "a module in a directory tree moved in")
	writeFile(t, filepath.Join(dir, "tree", "deep", "deep.rego"), denying("deeper"))
	denialBecomes(t, g, errs, "deeper", "an edit in a directory nested in the tree moved in")
}

// TestWatchFollowsAReplacedBundleDirectory: a bundle directory renamed
// away and replaced by another (mv policies policies.old; mv
// policies.new policies) is loaded, and watched whole: an edit in the
// new one's subdirectory is loaded.
func TestWatchFollowsAReplacedBundleDirectory(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "policies")
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "sub", "write.rego"), allowAll)
	g, errs := watched(t, dir)

	next := filepath.Join(parent, "policies.new")
	if err := os.MkdirAll(filepath.Join(next, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(next, "sub", "write.rego"), denying("replaced"))
	if err := os.Rename(dir, filepath.Join(parent, "policies.old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, dir); err != nil {
		t.Fatal(err)
	}
	denialBecomes(t, g, errs, "replaced", "a bundle directory replaced by rename")
	writeFile(t, filepath.Join(dir, "sub", "write.rego"), denying("edited"))
	denialBecomes(t, g, errs, "edited", "an edit of the replacement's subdirectory")
}

// TestWatchFollowsARenamedTarball: a tarball replaced by rename (written
// beside it, then moved onto its path) is loaded.
func TestWatchFollowsARenamedTarball(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bundle.tar.gz")
	writeTarball(t, path, map[string]string{"write.rego": allowAll})
	g, errs := watched(t, path)
	writeTarball(t, filepath.Join(dir, "next.tar.gz"), map[string]string{"write.rego": denying("tarball")})
	if err := os.Rename(filepath.Join(dir, "next.tar.gz"), path); err != nil {
		t.Fatal(err)
	}
	denialBecomes(t, g, errs, "tarball", "a tarball replaced by rename")
}
