package hostedworker_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/tenancy"
)

// Resume after SIGKILL: a child process runs the server (with the fixture
// plugin source); the parent starts a worker through the API, kills the
// child with SIGKILL while the worker is reacting, starts a new child
// over the same root and checks that the worker resumed by itself from
// its named cursor and that every input event has exactly one reaction.

const childEnv = "BATPAK_HOSTEDWORKER_CHILD"

// TestServerChildProcess is not a test: it is the body of the child
// process of TestWorkerResumesAfterSIGKILL. It does nothing unless
// BATPAK_HOSTEDWORKER_CHILD is set.
func TestServerChildProcess(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		return
	}
	cfg := server.DefaultConfig()
	cfg.Root, cfg.Listen, cfg.AccessLog, cfg.Stderr = os.Getenv("BATPAK_DIR"), "127.0.0.1:0", "off", io.Discard
	cfg.OperatorToken = operatorToken
	cfg.Logger = quiet()
	cfg.PluginSource = newSource(t, standardFixtures())
	srv, err := server.New(context.Background(), cfg)
	if err != nil {
		fmt.Printf("ERR %v\n", err)
		os.Exit(3)
	}
	if err := srv.Listen(); err != nil {
		fmt.Printf("ERR %v\n", err)
		os.Exit(3)
	}
	fmt.Printf("ADDR %s\n", srv.Addr())
	_ = srv.Serve(context.Background()) // until killed
	os.Exit(0)
}

type child struct {
	cmd    *exec.Cmd
	stderr *strings.Builder
	base   string
}

func startChild(t *testing.T, dir string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerChildProcess$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "BATPAK_DIR="+dir,
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	c := &child{cmd: cmd, stderr: &strings.Builder{}}
	cmd.Stderr = c.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	sc := bufio.NewScanner(out)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "ADDR ") {
		t.Fatalf("child said %q; stderr:\n%s", sc.Text(), c.stderr.String())
	}
	c.base = "http://" + strings.TrimPrefix(sc.Text(), "ADDR ")
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return c
}

func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
	if ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child not killed by SIGKILL; stderr:\n%s", c.stderr.String())
	}
}

func TestWorkerResumesAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test")
	}
	dir := t.TempDir()
	ctx := context.Background()

	c := startChild(t, dir)
	op, _ := client.New(c.base, operatorToken)
	if _, err := op.Admin().CreateTenant(ctx, "acme", nil, nil); err != nil {
		t.Fatal(err)
	}
	k, err := op.Admin().IssueKey(ctx, "acme", "k", "admin")
	if err != nil {
		t.Fatal(err)
	}
	tenant := func(c *child) *client.Tenant {
		cl, _ := client.New(c.base, k.Key)
		return cl.Tenant("acme")
	}
	acme := tenant(c)
	srcs := appendOrders(t, acme, "order:1", 400)
	if _, err := acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: inputs,
		Restart: client.WorkerRestart{BackoffMinMs: 5}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "60 echoes", func() bool { return len(echoes(t, acme)) >= 60 })
	c.kill(t)
	inFlight := uncommitted(t, dir)

	// Second life: more inputs arrive while the worker catches up; kill
	// it again mid-way.
	c = startChild(t, dir)
	acme = tenant(c)
	srcs = append(srcs, appendOrders(t, acme, "order:2", 200)...)
	waitFor(t, "450 echoes", func() bool { return len(echoes(t, acme)) >= 450 })
	c.kill(t)
	inFlight += uncommitted(t, dir)
	t.Logf("%d reactions were written past the committed cursor at the kills (redelivered, deduplicated)", inFlight)

	// Third life: nobody starts the worker; it resumes by itself and ends
	// with exactly one reaction per input.
	c = startChild(t, dir)
	acme = tenant(c)
	waitFor(t, "an echo per input", func() bool { return len(echoes(t, acme)) >= len(srcs) })
	last := srcs[len(srcs)-1].GlobalSequence
	waitFor(t, "the cursor past the last input", func() bool { return worker(t, acme, "echoer").Position > last })
	checkOnce(t, srcs, echoes(t, acme))
	if st := worker(t, acme, "echoer"); st.State != "running" || st.Desired != "running" {
		t.Fatalf("after two kills: %+v", st)
	}
	c.kill(t)
}

// uncommitted opens the killed server's tenant store and counts the
// echoes of inputs at or past the worker's committed position: reactions
// written before the kill whose batch was not committed, which the
// resumed worker is delivered again.
func uncommitted(t *testing.T, dir string) int {
	t.Helper()
	s, err := core.Open(tenancy.StoreConfig(filepath.Join(dir, "tenants", "acme"), true))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cur, err := s.NamedCursor("echoer", core.All())
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.Query(core.All())
	if err != nil {
		t.Fatal(err)
	}
	seq := map[core.EventID]uint64{}
	for _, ev := range evs {
		seq[ev.Header.ID] = ev.GlobalSequence
	}
	n := 0
	for _, ev := range evs {
		if ev.Coordinate.Entity == "echo" && seq[ev.Header.CausationID] >= cur.Committed() {
			n++
		}
	}
	return n
}
