package plugincompiler_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/testenv"
	"github.com/batpak-go/batpak/internal/testmodules"
	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/server/plugincompiler"
)

func TestMain(m *testing.M) {
	plugincompiler.RunChild()
	os.Exit(m.Run())
}

func newCompiler(t *testing.T, l plugincompiler.Limits) *plugincompiler.Compiler {
	t.Helper()
	c, err := plugincompiler.New(l)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// files counts the regular files under dir.
func files(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return err
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return n
}

func TestCompileFillsTheCache(t *testing.T) {
	dir := t.TempDir()
	c := newCompiler(t, plugincompiler.Limits{})
	if err := c.Compile(context.Background(), dir, testmodules.Small(), testmodules.Small()); err != nil {
		t.Fatal(err)
	}
	if n := files(t, dir); n != 1 {
		t.Fatalf("the cache holds %d files after one compile, want 1", n)
	}
}

func TestCompileStopsAtTheTimeout(t *testing.T) {
	dir := t.TempDir()
	c := newCompiler(t, plugincompiler.Limits{Timeout: time.Second})
	start := time.Now()
	slow := testmodules.SlowToCompile(1000, 4000) // ~13 s in process
	err := c.Compile(context.Background(), dir, slow, slow)
	took := time.Since(start)
	if !errors.Is(err, plugincompiler.ErrLimit) || !strings.Contains(err.Error(), "longer than 1s") {
		t.Fatalf("err = %v, want ErrLimit naming the 1s timeout", err)
	}
	if took > 5*time.Second {
		t.Fatalf("the compile was stopped after %v, want about 1s", took)
	}
	if n := files(t, dir); n != 0 {
		t.Fatalf("a stopped compile left %d files in the cache", n)
	}
	testenv.NoChildren(t, 0)
}

func TestCompileStopsAtTheMemoryLimit(t *testing.T) {
	c := newCompiler(t, plugincompiler.Limits{MemoryBytes: plugincompiler.MinMemoryBytes, Timeout: time.Minute})
	slow := testmodules.SlowToCompile(500, 2000) // ~160 MB in process
	err := c.Compile(context.Background(), t.TempDir(), slow, slow)
	if !errors.Is(err, plugincompiler.ErrLimit) || !strings.Contains(err.Error(), "more than 64 MiB") {
		t.Fatalf("err = %v, want ErrLimit naming 64 MiB", err)
	}
	testenv.NoChildren(t, 0)
}

// TestHugeSectionCountsAreTheMemoryLimit: a module of a few bytes whose
// import, global, element or data section declares 2³²−1 entries makes
// the compiler allocate for them all at once; the child dies of the Go
// runtime's "out of memory", and the refusal names the memory limit like
// any other compile over it.
func TestHugeSectionCountsAreTheMemoryLimit(t *testing.T) {
	c := newCompiler(t, plugincompiler.Limits{MemoryBytes: plugincompiler.MinMemoryBytes, Timeout: time.Minute})
	for _, section := range []byte{0x02, 0x06, 0x09, 0x0b} {
		mod := []byte{0, 'a', 's', 'm', 1, 0, 0, 0, section, 6, 0xff, 0xff, 0xff, 0xff, 0x0f}
		err := c.Compile(context.Background(), t.TempDir(), mod, nil)
		t.Logf("section %#x: %v", section, err)
		if err == nil {
			t.Fatalf("section %#x with 2³²−1 entries compiled", section)
		}
		if errors.Is(err, plugins.ErrInvalidModule) {
			continue // wazero found it invalid first: refused all the same
		}
		if !errors.Is(err, plugincompiler.ErrLimit) || !strings.Contains(err.Error(), "more than 64 MiB") {
			t.Fatalf("section %#x with 2³²−1 entries: %v, want ErrLimit naming 64 MiB", section, err)
		}
	}
	testenv.NoChildren(t, 0)
}

func TestCompileRefusesAnInvalidModule(t *testing.T) {
	c := newCompiler(t, plugincompiler.Limits{})
	bad := append(testmodules.Small(), 0x0a, 0x01) // a second, truncated code section
	err := c.Compile(context.Background(), t.TempDir(), bad, nil)
	if !errors.Is(err, plugins.ErrInvalidModule) || !strings.Contains(err.Error(), "section") {
		t.Fatalf("err = %v, want wazero's reason", err)
	}
	if testing.Verbose() {
		t.Log(err)
	}
}

func TestCompileEndsWithItsContext(t *testing.T) {
	c := newCompiler(t, plugincompiler.Limits{})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	slow := testmodules.SlowToCompile(1000, 4000)
	err := c.Compile(ctx, t.TempDir(), slow, slow)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's", err)
	}
	testenv.NoChildren(t, 0)
}

// TestValidationIsBounded: validating a module as written is bounded too
// (it runs in the child): a module whose one br_table checks 30,000
// results at each of 300,000 targets, about 40 s in wazero's validator,
// stops at the limit.
func TestValidationIsBounded(t *testing.T) {
	c := newCompiler(t, plugincompiler.Limits{Timeout: time.Second})
	start := time.Now()
	slow := testmodules.SlowToValidate(30_000, 300_000)
	err := c.Compile(context.Background(), t.TempDir(), slow, nil)
	if !errors.Is(err, plugincompiler.ErrLimit) {
		t.Fatalf("err = %v after %v, want ErrLimit", err, time.Since(start))
	}
	testenv.NoChildren(t, 0)
}

func TestLimitsRanges(t *testing.T) {
	l, err := plugincompiler.Limits{}.WithDefaults()
	if err != nil || l.Timeout != plugincompiler.DefaultTimeout || l.MemoryBytes != plugincompiler.DefaultMemoryBytes {
		t.Fatalf("defaults = %+v, %v", l, err)
	}
	for _, bad := range []plugincompiler.Limits{
		{Timeout: time.Millisecond},
		{Timeout: time.Hour},
		{MemoryBytes: 1 << 20},
		{MemoryBytes: 1 << 40},
	} {
		if _, err := bad.WithDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
		if _, err := plugincompiler.New(bad); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
}
