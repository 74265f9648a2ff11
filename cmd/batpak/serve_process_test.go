package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server/auth"
	"github.com/batpak-go/batpak/server/plugincompiler"
	"github.com/batpak-go/batpak/server/tenantpolicy"
)

// childEnv, when set, makes the test binary run the CLI with the arguments
// it holds (separated by \x1f) as the real batpak command would: signals
// included. The lifecycle tests start `batpak serve` this way and kill it.
const childEnv = "BATPAK_TEST_CLI_ARGS"

func TestMain(m *testing.M) {
	plugincompiler.RunChild() // a serving child's plugin compiler
	tenantpolicy.RunChild()   // a serving child's policy sandbox
	if args := os.Getenv(childEnv); args != "" {
		os.Args = append([]string{"batpak"}, strings.Split(args, "\x1f")...)
		main()
	}
	os.Exit(m.Run())
}

// serveChild is a `batpak serve` running in a child process.
type serveChild struct {
	cmd  *exec.Cmd
	base string
	done chan error
	logs *strings.Builder
}

var listeningRE = regexp.MustCompile(`listening on (\S+)`)

// startServe starts `batpak serve` on root with the operator token op and
// waits until it listens.
func startServe(t *testing.T, root, op string, extra ...string) *serveChild {
	t.Helper()
	args := append([]string{"serve", "--root", root, "--listen", "127.0.0.1:0", "--access-log", "off"}, extra...)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join(args, "\x1f"), "BATPAK_OPERATOR_TOKEN="+op)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &serveChild{cmd: cmd, done: make(chan error, 1), logs: &strings.Builder{}}
	addr := make(chan string, 1)
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			c.logs.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		c.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	select {
	case a := <-addr:
		c.base = "http://" + a
	case err := <-c.done:
		t.Fatalf("batpak serve exited before listening: %v\n%s", err, c.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("batpak serve did not listen within 30s\n%s", c.logs.String())
	}
	return c
}

// setupTenant creates tenant id with a writer and an admin key.
func setupTenant(t *testing.T, base, op, id string) (writer, admin string) {
	t.Helper()
	ctx := context.Background()
	adm, _ := client.New(base, op)
	if _, err := adm.Admin().CreateTenant(ctx, id, &client.Quotas{EventsPerSecond: -1, BytesPerSecond: -1, RequestsPerSecond: -1}, nil); err != nil {
		t.Fatal(err)
	}
	w, err := adm.Admin().IssueKey(ctx, id, "load", "writer")
	if err != nil {
		t.Fatal(err)
	}
	a, err := adm.Admin().IssueKey(ctx, id, "check", "admin")
	if err != nil {
		t.Fatal(err)
	}
	return w.Key, a.Key
}

// load appends from producers goroutines (half single appends, half
// batches of 10) until stop, recording the id of every acknowledged event
// and every failure that was a response rather than a transport error.
type load struct {
	mu        sync.Mutex
	acked     map[string]bool
	responses []string // non-2xx responses
	transport atomic.Int64
}

func runLoad(ctx context.Context, base, key string, producers int, stop <-chan struct{}) *load {
	l := &load{acked: map[string]bool{}}
	c, _ := client.New(base, key, client.Options{MaxRetries: -1})
	tn := c.Tenant("t1")
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				entity := fmt.Sprintf("p%d:%d", p, i%8)
				var ids []string
				var err error
				if p%2 == 0 {
					var r client.Receipt
					r, err = tn.Append(ctx, client.AppendRequest{Entity: entity, Scope: "s", Kind: "1:1", Payload: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
					ids = []string{r.ID}
				} else {
					batch := make([]client.AppendRequest, 10)
					for j := range batch {
						batch[j] = client.AppendRequest{Entity: entity, Scope: "s", Kind: "1:2", Payload: json.RawMessage(fmt.Sprintf(`{"i":%d,"j":%d}`, i, j))}
					}
					var rs []client.Receipt
					rs, err = tn.AppendBatch(ctx, batch)
					for _, r := range rs {
						ids = append(ids, r.ID)
					}
				}
				var pe *client.Error
				switch {
				case err == nil:
					l.mu.Lock()
					for _, id := range ids {
						l.acked[id] = true
					}
					l.mu.Unlock()
				case errors.As(err, &pe):
					l.mu.Lock()
					l.responses = append(l.responses, pe.Error())
					l.mu.Unlock()
				default:
					l.transport.Add(1)
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	go func() { <-stop; wg.Wait() }()
	return l
}

// allEvents reads every event of tenant t1 through a fresh server.
func allEvents(t *testing.T, base, key string) map[string]bool {
	t.Helper()
	c, _ := client.New(base, key)
	got := map[string]bool{}
	for ev, err := range c.Tenant("t1").Query(context.Background(), client.Query{Limit: 1000}) {
		if err != nil {
			t.Fatal(err)
		}
		got[ev.ID] = true
	}
	return got
}

func verifyTenant(t *testing.T, base, admin string) {
	t.Helper()
	c, _ := client.New(base, admin)
	rep, err := c.Tenant("t1").Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := rep["ok"].(bool); !ok {
		t.Fatalf("verify after restart: %v", rep)
	}
}

// TestServeSIGKILLUnderLoad kills `batpak serve` with SIGKILL while
// producers append singles and batches: after a restart every event that
// got a 2xx is there, and the tenant's chain verifies.
func TestServeSIGKILLUnderLoad(t *testing.T) {
	root := isolate(t) + "/srv"
	op, _, _ := auth.NewOperatorToken()
	for round := range 2 {
		srv := startServe(t, root, op)
		var writer, admin string
		if round == 0 {
			writer, admin = setupTenant(t, srv.base, op, "t1")
			t.Setenv("T1_KEYS", writer+" "+admin)
		} else {
			writer, admin, _ = strings.Cut(os.Getenv("T1_KEYS"), " ")
		}
		stop := make(chan struct{})
		l := runLoad(context.Background(), srv.base, writer, 16, stop)
		time.Sleep(700 * time.Millisecond)
		if err := srv.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-srv.done
		close(stop)
		l.mu.Lock()
		acked := len(l.acked)
		l.mu.Unlock()
		if acked == 0 {
			t.Fatalf("round %d: no event acknowledged before the kill\n%s", round, srv.logs.String())
		}
		again := startServe(t, root, op)
		got := allEvents(t, again.base, writer)
		l.mu.Lock()
		for id := range l.acked {
			if !got[id] {
				t.Errorf("round %d: acknowledged event %s lost after SIGKILL", round, id)
			}
		}
		l.mu.Unlock()
		verifyTenant(t, again.base, admin)
		t.Logf("round %d: %d acknowledged events before SIGKILL, all present after restart (%d stored)", round, acked, len(got))
		_ = again.cmd.Process.Signal(syscall.SIGTERM)
		<-again.done
	}
}

// TestServeSIGTERMUnderLoad sends SIGTERM while producers append and a
// subscriber follows: no request that reached the server fails (every
// response is a 2xx; requests after the listener closed fail to connect),
// the subscriber's stream ends with a shutdown event naming its resumable
// position, the process exits 0 within the shutdown timeout, and every
// acknowledged event is there after a restart.
func TestServeSIGTERMUnderLoad(t *testing.T) {
	root := isolate(t) + "/srv"
	op, _, _ := auth.NewOperatorToken()
	srv := startServe(t, root, op, "--shutdown-timeout", "10s")
	writer, admin := setupTenant(t, srv.base, op, "t1")

	// A raw subscriber, to see the shutdown event itself.
	req, _ := http.NewRequest("GET", srv.base+"/v1/tenants/t1/subscribe", nil)
	req.Header.Set("Authorization", "Bearer "+writer)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("subscribe: %s", resp.Status)
	}
	streamed := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(resp.Body)
		streamed <- string(b)
	}()

	stop := make(chan struct{})
	l := runLoad(context.Background(), srv.base, writer, 16, stop)
	time.Sleep(700 * time.Millisecond)
	start := time.Now()
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var exitErr error
	select {
	case exitErr = <-srv.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("batpak serve still running 15s after SIGTERM\n%s", srv.logs.String())
	}
	took := time.Since(start)
	close(stop)
	time.Sleep(50 * time.Millisecond)
	if exitErr != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", exitErr, srv.logs.String())
	}
	if !strings.Contains(srv.logs.String(), "batpak serve: stopped") {
		t.Errorf("no line says the server stopped cleanly:\n%s", srv.logs.String())
	}
	l.mu.Lock()
	if len(l.responses) > 0 {
		t.Errorf("%d requests got an error response during shutdown, first: %s", len(l.responses), l.responses[0])
	}
	acked := len(l.acked)
	l.mu.Unlock()
	select {
	case s := <-streamed:
		if !regexp.MustCompile(`event: shutdown\ndata: \{[^\n]*"resume_after":\d+[,}]`).MatchString(s) {
			t.Errorf("stream did not end with a shutdown event and position; tail: %q", s[max(0, len(s)-300):])
		}
	case <-time.After(5 * time.Second):
		t.Error("event stream still open after the server exited")
	}
	again := startServe(t, root, op)
	got := allEvents(t, again.base, writer)
	l.mu.Lock()
	for id := range l.acked {
		if !got[id] {
			t.Errorf("acknowledged event %s missing after SIGTERM and restart", id)
		}
	}
	l.mu.Unlock()
	verifyTenant(t, again.base, admin)
	t.Logf("SIGTERM: exited in %v; %d events acknowledged, %d transport errors after the listener closed", took.Round(time.Millisecond), acked, l.transport.Load())
	_ = again.cmd.Process.Signal(syscall.SIGTERM)
	<-again.done
}

// TestConfigListsServerKeys: `batpak config` shows the server keys with
// their source, and never the operator credential itself.
func TestConfigListsServerKeys(t *testing.T) {
	dir := isolate(t)
	writeFile(t, dir+"/batpak.yaml", "server:\n  listen: 127.0.0.1:9999\n  operator_token: bpko_secretsecret\n")
	t.Setenv("BATPAK_SERVER_MAX_CONNECTIONS", "10")
	out := ok(t, "config")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`server\.listen\s+127\.0\.0\.1:9999\s+config `),
		regexp.MustCompile(`server\.max_connections\s+10\s+env BATPAK_SERVER_MAX_CONNECTIONS`),
		regexp.MustCompile(`server\.quotas\.max_batch_events\s+4096\s+default`),
		regexp.MustCompile(`server\.operator_token\s+\(set, not shown\)`),
	} {
		if !want.MatchString(out) {
			t.Errorf("batpak config lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "secretsecret") {
		t.Error("batpak config printed the operator credential")
	}
}
