package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server/auth"
)

var demoExportRE = regexp.MustCompile(`export B=(\S+) KEY=(\S+)(?: OP=(\S+))?`)

// demoRun is one `batpak serve --demo` child process and what it printed.
type demoRun struct {
	cmd           *exec.Cmd
	base, key, op string
	out           string // stdout up to the last curl line
}

// startDemo runs `batpak serve --demo --root root` without a configured
// operator credential and reads its ready-to-paste lines.
func startDemo(t *testing.T, root string) *demoRun {
	t.Helper()
	args := []string{"serve", "--demo", "--root", root, "--listen", "127.0.0.1:0", "--access-log", "off"}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BATPAK_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, childEnv+"="+strings.Join(args, "\x1f"))
	stdout, err := cmd.StdoutPipe()
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
	got := make(chan *demoRun, 1)
	go func() {
		r := &demoRun{cmd: cmd}
		var b strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if m := demoExportRE.FindStringSubmatch(sc.Text()); m != nil {
				r.base, r.key, r.op = m[1], m[2], m[3]
			}
			if strings.Contains(sc.Text(), `Bearer $OP`) {
				r.out = b.String()
				got <- r
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case r := <-got:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("batpak serve --demo printed no ready-to-paste lines within 30s")
		return nil
	}
}

func (r *demoRun) stop(t *testing.T) {
	t.Helper()
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("batpak serve --demo did not stop on SIGTERM")
	}
}

func demoStatus(t *testing.T, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestServeDemoKeepsTheRootsOperatorCredential: the demo's operator
// credential is the root's own — recorded on a fresh root, so it still
// works after a restart without --demo, and never replaced on a root that
// has one (the demo then says where the credential comes from instead of
// printing one that would lock the operator out).
func TestServeDemoKeepsTheRootsOperatorCredential(t *testing.T) {
	root := t.TempDir()
	first := startDemo(t, root)
	if !strings.HasPrefix(first.op, "bpko_") {
		t.Fatalf("a fresh root's demo printed no operator credential:\n%s", first.out)
	}
	if c := demoStatus(t, first.base+"/v1/admin/tenants", first.op); c != http.StatusOK {
		t.Fatalf("the printed operator credential: GET /v1/admin/tenants = %d, want 200", c)
	}
	first.stop(t)

	second := startDemo(t, root)
	if second.op != "" {
		t.Fatalf("the demo on a root with a credential printed another one, OP=%s:\n%s", second.op, second.out)
	}
	if !strings.Contains(second.out, "set OP to this root's operator credential") {
		t.Fatalf("the demo does not say what OP is:\n%s", second.out)
	}
	if c := demoStatus(t, second.base+"/v1/admin/tenants", first.op); c != http.StatusOK {
		t.Fatalf("the root's operator credential during a later demo: GET /v1/admin/tenants = %d, want 200", c)
	}
	if c := demoStatus(t, second.base+"/v1/tenants/demo/events", second.key); c != http.StatusOK {
		t.Fatalf("the second demo's key: GET events = %d, want 200", c)
	}
	second.stop(t)
}

// TestServeCollidingWithARunningServer: a second `batpak serve` on the
// root or the address of a running one is refused with a line that says
// which and what to do, not the stores' lock error three layers deep.
func TestServeCollidingWithARunningServer(t *testing.T) {
	isolate(t)
	op, _, _ := auth.NewOperatorToken()
	root := t.TempDir()
	first := startServe(t, root, op)
	t.Setenv("BATPAK_OPERATOR_TOKEN", op)
	serve := func(args ...string) result {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var out, errb bytes.Buffer
		code := run(ctx, append([]string{"serve", "--access-log", "off"}, args...), strings.NewReader(""), &out, &errb)
		return result{code: code, stdout: out.String(), stderr: errb.String()}
	}
	r := serve("--root", root, "--listen", "127.0.0.1:0")
	if r.code != exitLocked || !regexp.MustCompile(`^batpak: serve: root \S+ is in use by pid \d+ \(another batpak serve\?\): stop it, or give this one another --root\n$`).MatchString(r.stderr) {
		t.Errorf("the same root: exit %d, stderr %q", r.code, r.stderr)
	}
	addr := strings.TrimPrefix(first.base, "http://")
	r = serve("--root", t.TempDir(), "--listen", addr)
	if want := "batpak: serve: listen on " + addr + ": address already in use (another batpak serve?): stop it, or give this one another --listen address\n"; r.code != exitUnavailable || r.stderr != want {
		t.Errorf("the same address: exit %d, stderr %q, want %q", r.code, r.stderr, want)
	}
}
