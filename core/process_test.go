package core_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/testenv"
)

// Helper processes: the test binary re-executes itself with
// -test.run=^TestHelperProcess$ and BATPAK_HELPER set to a mode. The child
// talks to the parent over stdout, one line per message.

const helperEnv = "BATPAK_HELPER"

// TestHelperProcess is not a test: it is the body of the child processes
// started by the lock and crash tests. It does nothing unless BATPAK_HELPER
// is set.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		return
	}
	dir := os.Getenv("BATPAK_DIR")
	var err error
	switch mode {
	case "hold":
		err = helperHold(dir)
	case "tryopen":
		err = helperTryOpen(dir)
	case "crash":
		err = helperCrash(dir)
	case "cursor":
		err = helperCursor(dir)
	case "batchcrash":
		err = helperBatchCrash(dir)
	case "fencecrash":
		err = helperFenceCrash(dir)
	default:
		if fn, ok := helperModes[mode]; ok {
			err = fn(dir)
		} else {
			err = fmt.Errorf("unknown helper mode %q", mode)
		}
	}
	if err != nil {
		fmt.Printf("ERR %v\n", err)
		os.Exit(3)
	}
	os.Exit(0)
}

// helperHold opens the store, writes BATPAK_EVENTS events, says "ready",
// and holds the store open until stdin closes.
func helperHold(dir string) error {
	s, err := core.Open(testConfig(dir))
	if err != nil {
		return err
	}
	n, _ := strconv.Atoi(os.Getenv("BATPAK_EVENTS"))
	c, _ := core.NewCoordinate("held", "s")
	for i := 0; i < n; i++ {
		if _, err := s.Append(context.Background(), c, kindA, []byte(payloadN(i))); err != nil {
			return err
		}
	}
	fmt.Printf("ready %d\n", os.Getpid())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return s.Close()
}

// helperTryOpen tries to open the store and reports what happened.
func helperTryOpen(dir string) error {
	s, err := core.Open(testConfig(dir))
	if err == nil {
		s.Close()
		fmt.Println("opened")
		return nil
	}
	fmt.Printf("error %q\n", err.Error())
	return nil
}

// child is a running helper process.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	stderr *testenv.Buffer
}

func startHelper(t *testing.T, mode, dir string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "BATPAK_DIR="+dir)
	// Under -race the runtime sleeps a second before exiting; not needed here.
	cmd.Env = append(cmd.Env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Env = append(cmd.Env, env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &testenv.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout), stderr: stderr}
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	})
	return c
}

// line reads the child's next complete line (without the newline); ok is
// false at end of output.
func (c *child) line() (string, bool) {
	s, err := c.out.ReadString('\n')
	if err != nil {
		return "", false // a partial last line is not a message
	}
	return strings.TrimSuffix(s, "\n"), true
}

// killWhen reads the child's lines until stop accepts one, waits delay,
// kills the child with SIGKILL and reads what it printed before dying
// (lines already in the pipe count too). Every complete line is returned.
// A line starting with "ERR", or the child stopping on its own, fails the
// test.
func (c *child) killWhen(t *testing.T, stop func(line string) bool, delay time.Duration) []string {
	t.Helper()
	var lines []string
	killed := false
	for {
		ln, ok := c.line()
		if !ok {
			break
		}
		if strings.HasPrefix(ln, "ERR") && !killed {
			t.Fatalf("helper said %q; stderr:\n%s", ln, c.stderr)
		}
		lines = append(lines, ln)
		if !killed && stop(ln) {
			time.Sleep(delay)
			if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err := c.cmd.Wait()
	if !killed {
		t.Fatalf("helper stopped on its own (%v) after %d lines; stderr:\n%s", err, len(lines), c.stderr)
	}
	if ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper was not killed by SIGKILL: %v; stderr:\n%s", c.cmd.ProcessState, c.stderr)
	}
	return lines
}

// expectLocked asserts err is a *LockedError naming pid.
func expectLocked(t *testing.T, err error, pid int) {
	t.Helper()
	if !isErr(err, core.ErrLocked) {
		t.Fatalf("got %v, want ErrLocked", err)
	}
	var le *core.LockedError
	if !errors.As(err, &le) {
		t.Fatalf("error %T is not a *LockedError", err)
	}
	if le.PID != pid {
		t.Errorf("LockedError.PID = %d, want %d", le.PID, pid)
	}
	if want := fmt.Sprintf("locked by pid %d", pid); !strings.Contains(err.Error(), want) {
		t.Errorf("message %q does not say %q", err, want)
	}
}

func waitTimeout(t *testing.T, c *child, d time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("helper exited with %v; stderr:\n%s", err, c.stderr)
		}
	case <-time.After(d):
		t.Fatalf("helper did not exit within %v", d)
	}
}
