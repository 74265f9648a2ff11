package testenv_test

import (
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/testenv"
)

// recorder stands in for a test: it records whether the helper skipped or
// failed it (both end the test, as runtime.Goexit, so the helper runs on
// its own goroutine).
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Skip(args ...any) {
	r.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func run(t *testing.T, f func(testing.TB)) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

const missing = "batpak-no-such-tool"

func TestNeedToolSkipsByDefault(t *testing.T) {
	t.Setenv(testenv.RequireToolsEnv, "")
	r := run(t, func(tb testing.TB) { testenv.NeedTool(tb, missing, "apt-get install it") })
	if r.failed != "" || !strings.Contains(r.skipped, missing+" not found (apt-get install it)") {
		t.Fatalf("skipped %q, failed %q; want a skip naming the tool", r.skipped, r.failed)
	}
}

func TestNeedToolFailsWhenRequired(t *testing.T) {
	t.Setenv(testenv.RequireToolsEnv, "1")
	r := run(t, func(tb testing.TB) { testenv.NeedTool(tb, missing, "apt-get install it") })
	if r.skipped != "" || !strings.Contains(r.failed, missing+" not found") || !strings.Contains(r.failed, "BATPAK_REQUIRE_TOOLS=1") {
		t.Fatalf("skipped %q, failed %q; want a failure naming the tool and the variable", r.skipped, r.failed)
	}
}

func TestNeedToolFindsATool(t *testing.T) {
	t.Setenv(testenv.RequireToolsEnv, "1")
	var path string
	r := run(t, func(tb testing.TB) { path = testenv.NeedTool(tb, "go", "install Go") })
	if r.skipped != "" || r.failed != "" || path == "" {
		t.Fatalf("NeedTool(go) = %q, skipped %q, failed %q", path, r.skipped, r.failed)
	}
}

// NoChildren fails while a child runs, and passes once it is gone.
func TestNoChildren(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if r := run(t, func(tb testing.TB) { testenv.NoChildren(tb, 0) }); !strings.Contains(r.failed, "sleep") {
		t.Fatalf("with a child running: %+v, want a failure naming it", r)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if r := run(t, func(tb testing.TB) { testenv.NoChildren(tb, time.Second) }); r.failed != "" {
		t.Fatalf("after the child is gone: %s", r.failed)
	}
}
