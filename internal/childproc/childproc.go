package childproc

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"time"
)

// Env returns env without the variables named in drop, GOMAXPROCS and
// GORACE, then with GOMAXPROCS set to procs and GORACE keeping the
// parent's options but not waiting at exit (a race-detector build
// otherwise sleeps a second as it exits), then with set appended.
func Env(env []string, procs int, drop []string, set ...string) []string {
	out := make([]string, 0, len(env)+len(set)+2)
	gorace := ""
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case k == "GORACE":
			gorace = v
			continue
		case k == "GOMAXPROCS":
			continue
		}
		dropped := false
		for _, d := range drop {
			dropped = dropped || k == d
		}
		if !dropped {
			out = append(out, kv)
		}
	}
	out = append(out, fmt.Sprintf("GOMAXPROCS=%d", procs), "GORACE="+strings.TrimSpace(gorace+" atexit_sleep_ms=0"))
	return append(out, set...)
}

// Start starts cmd so that, on Linux, it is killed when this process
// dies. The parent-death signal follows the thread that started the
// child, so Start runs on a locked thread, which Go keeps alive after
// unlocking it (threads end only with a goroutine that exits locked).
func Start(cmd *exec.Cmd) error {
	setParentDeath(cmd)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return cmd.Start()
}

// LimitMemory bounds this (child) process's Go runtime — heap, stacks and
// the runtime's own, less the heap returned to the OS — to limit bytes: the GC works harder from 90% of it,
// and past it the process writes "<name>: over the memory limit of N
// bytes" to stderr and exits with code, checked every 10 ms (the GC's
// limit is soft; a single allocation can still pass it by its own size).
func LimitMemory(limit int64, name string, code int) {
	debug.SetMemoryLimit(limit / 10 * 9)
	go func() {
		// What Go's own limit counts: everything the runtime maps, less
		// the heap it has returned to the OS (which total never gives
		// back: it would hold a past peak against the child for ever).
		s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
		for {
			metrics.Read(s)
			if s[0].Value.Kind() == metrics.KindUint64 && s[1].Value.Kind() == metrics.KindUint64 &&
				s[0].Value.Uint64()-s[1].Value.Uint64() > uint64(limit) {
				fmt.Fprintf(os.Stderr, "%s: over the memory limit of %d bytes\n", name, limit)
				os.Exit(code)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
}

// Tail keeps the first 4 KiB written to it. Safe for one writer and a
// reader after the writer is done (exec.Cmd.Wait).
type Tail struct{ b []byte }

// Write implements io.Writer; it never fails.
func (t *Tail) Write(p []byte) (int, error) {
	if room := 4096 - len(t.b); room > 0 {
		t.b = append(t.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// Text is what was kept, trimmed of surrounding space.
func (t *Tail) Text() string { return strings.TrimSpace(string(t.b)) }

// FirstLine is the first line of what was kept: a panic's or fatal
// error's message without the goroutine dump after it (which names the
// server's source files).
func (t *Tail) FirstLine() string {
	line, _, _ := strings.Cut(t.Text(), "\n")
	return line
}
