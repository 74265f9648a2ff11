package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// RequireToolsEnv is the variable that turns skips for missing tools into
// failures when set to "1".
const RequireToolsEnv = "BATPAK_REQUIRE_TOOLS"

// Required reports whether missing tools fail tests (BATPAK_REQUIRE_TOOLS=1).
func Required() bool { return os.Getenv(RequireToolsEnv) == "1" }

// Skipf skips the test with the message, or fails it when Required.
func Skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("%s (%s=1: a missing tool fails the test)", msg, RequireToolsEnv)
	}
	t.Skip(msg)
}

// NeedTool returns the path of the executable name, looked up in PATH. When
// it is not found the test skips, or fails when Required; install names
// what provides it (e.g. "apt-get install wabt").
func NeedTool(t testing.TB, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		Skipf(t, "%s not found (%s)", name, install)
	}
	return path
}

// Feed sends 0, 1, …, total-1 on tokens at perSecond a second counted from
// start (in 5 ms steps), then closes tokens: a steady load for tests whose
// workers take a token per operation.
func Feed(tokens chan<- int, total int, perSecond float64, start time.Time) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for sent := 0; sent < total; {
		<-tick.C
		due := min(total, int(perSecond*time.Since(start).Seconds()))
		for ; sent < due; sent++ {
			tokens <- sent
		}
	}
	close(tokens)
}

// NoChildren fails the test if this process still has a running child
// process (zombies, exited but not yet reaped, do not count) once within
// has passed; it checks at once, then every 20 ms until then. Linux only
// (elsewhere it checks nothing): it reads /proc.
func NoChildren(t testing.TB, within time.Duration) {
	t.Helper()
	if runtime.GOOS != "linux" {
		return
	}
	me := strconv.Itoa(os.Getpid())
	deadline := time.Now().Add(within)
	for {
		var left []string
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...
			s := string(stat)
			if i := strings.LastIndexByte(s, ')'); i >= 0 {
				if f := strings.Fields(s[i+1:]); len(f) > 1 && f[1] == me && f[0] != "Z" {
					left = append(left, e.Name()+" "+s[:i+1])
				}
			}
		}
		if len(left) == 0 {
			return
		}
		if !time.Now().Before(deadline) {
			t.Fatalf("still this process's children: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Buffer is a bytes.Buffer several goroutines may write and read at once:
// a log sink a test reads while the code under test writes it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
