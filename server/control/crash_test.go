package control_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/batpak-go/batpak/server/control"
)

// Crash safety with a real SIGKILL: a child process churns admin changes
// from two goroutines and prints each one the moment its method returns;
// the parent kills it mid-churn and checks that the reopened plane holds
// every acknowledged change.

const helperEnv = "BATPAK_CONTROL_HELPER"

// TestHelperProcess is not a test: it is the body of the child process of
// TestCrashLosesNoAcknowledgedChange. It does nothing unless
// BATPAK_CONTROL_HELPER is set.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return
	}
	if err := churn(os.Getenv("BATPAK_DIR")); err != nil {
		fmt.Printf("ERR %v\n", err)
		os.Exit(3)
	}
	os.Exit(0)
}

// Each child round uses ids of its own: the next round's reopened plane
// still holds the last round's tenants.
func churnKeyID(round, g, i int) string  { return fmt.Sprintf("r%dk%dx%d", round, g, i) }
func churnTenant(round, g, i int) string { return fmt.Sprintf("r%d-t%d-%d", round, g, i) }

// churn runs until killed: per step, create a tenant, issue its key, then
// suspend it (i%3 == 0), revoke the key (i%4 == 0), delete the tenant
// (i%7 == 6). "ACK op g i" follows each change that returned.
func churn(dir string) error {
	round, _ := strconv.Atoi(os.Getenv("BATPAK_ROUND"))
	p, err := control.Open(control.Options{Dir: dir, Defaults: defaults})
	if err != nil {
		return err
	}
	ctx := context.Background()
	var mu sync.Mutex
	ack := func(op string, g, i int) {
		mu.Lock()
		os.Stdout.WriteString(fmt.Sprintf("ACK %s %d %d %d\n", op, round, g, i)) // one write: the line is whole or absent
		mu.Unlock()
	}
	errs := make(chan error, 2)
	for g := 0; g < 2; g++ {
		go func(g int) {
			for i := 0; ; i++ {
				id := churnTenant(round, g, i)
				steps := []struct {
					op string
					do func() error
				}{
					{"create", func() error {
						_, err := p.CreateTenant(ctx, id, control.Quotas{MaxCursors: i + 1}, control.Settings{})
						return err
					}},
					{"key", func() error {
						_, err := p.IssueKey(ctx, control.Key{ID: churnKeyID(round, g, i), Tenant: id, Roles: []control.Role{control.RoleWriter}, Hash: hashOf(id)})
						return err
					}},
					{"suspend", func() error { _, err := p.SuspendTenant(ctx, id, "r"); return err }},
					{"revoke", func() error { return p.RevokeKey(ctx, id, churnKeyID(round, g, i)) }},
					{"delete", func() error { return p.DeleteTenant(ctx, id) }},
				}
				for _, s := range steps {
					switch {
					case s.op == "suspend" && i%3 != 0, s.op == "revoke" && i%4 != 0, s.op == "delete" && i%7 != 6:
						continue
					}
					if err := s.do(); err != nil {
						errs <- fmt.Errorf("%s %s: %w", s.op, id, err)
						return
					}
					ack(s.op, g, i)
				}
			}
		}(g)
	}
	return <-errs
}

func TestCrashLosesNoAcknowledgedChange(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test")
	}
	dir := t.TempDir()
	acked := map[string]bool{} // "op round g i", over every round
	for round, target := range []int{40, 80} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		cmd.Env = append(os.Environ(), helperEnv+"=1", "BATPAK_DIR="+dir, "BATPAK_ROUND="+strconv.Itoa(round),
			"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		n, killed := 0, false
		for sc.Scan() {
			ln := sc.Text()
			if !strings.HasPrefix(ln, "ACK ") {
				if !killed {
					t.Fatalf("round %d: child said %q; stderr:\n%s", round, ln, stderr.String())
				}
				continue
			}
			acked[strings.TrimPrefix(ln, "ACK ")] = true
			n++
			if !killed && n >= target {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				killed = true // keep reading: lines already in the pipe were acknowledged too
			}
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !killed || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child not killed by SIGKILL (%v); stderr:\n%s", round, err, stderr.String())
		}
		p := open(t, dir)
		checkAcked(t, p, acked)
		check(t, p.Close())
	}
}

// checkAcked asserts every acknowledged change is in the reopened plane.
// A change that was written but not acknowledged may be there too, so
// each check allows what a later step of the same tenant may have done.
func checkAcked(t *testing.T, p *control.Plane, acked map[string]bool) {
	t.Helper()
	if _, err := p.Verify(); err != nil {
		t.Fatalf("Verify after SIGKILL: %v", err)
	}
	for a := range acked {
		var op string
		var round, g, i int
		if _, err := fmt.Sscanf(a, "%s %d %d %d", &op, &round, &g, &i); err != nil {
			t.Fatal(err)
		}
		id := churnTenant(round, g, i)
		mayDelete := i%7 == 6
		tn, exists := p.Tenant(id)
		_, live := p.Key(churnKeyID(round, g, i))
		switch op {
		case "create":
			if !exists && !mayDelete {
				t.Errorf("acknowledged tenant %s lost", id)
			}
		case "key":
			if !live && i%4 != 0 && !mayDelete {
				t.Errorf("acknowledged key of %s lost", id)
			}
		case "suspend":
			if exists && tn.State != control.StateSuspended || !exists && !mayDelete {
				t.Errorf("acknowledged suspension of %s lost (%+v, %v)", id, tn, exists)
			}
		case "revoke":
			if live {
				t.Errorf("acknowledged revocation of %s's key lost", id)
			}
		case "delete":
			if exists || live {
				t.Errorf("acknowledged deletion of %s lost", id)
			}
		}
	}
	if len(acked) == 0 {
		t.Fatal("no change was acknowledged")
	}
	if t.Failed() {
		t.FailNow()
	}
}
