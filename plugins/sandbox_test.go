package plugins_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/plugins"
)

// WASI errno values (wasi_snapshot_preview1).
const (
	errnoSuccess = 0
	errnoBADF    = 8
)

// errnos folds one event through a WASI probe fixture and decodes its
// state: the errnos it got, as little-endian u32s.
func errnos(t *testing.T, fixtureName string) []uint32 {
	t.Helper()
	p := load(t, newHost(t), fixture(t, fixtureName), projManifest(fixtureName))
	st, err := p.Fold(context.Background(), nil, []core.StoredEvent{oneEvent(kindA)})
	if err != nil {
		t.Fatalf("Fold: %v", err)
	}
	if len(st)%4 != 0 {
		t.Fatalf("state %x is not a list of u32", st)
	}
	out := make([]uint32, len(st)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(st[4*i:])
	}
	return out
}

// TestSandboxNoFiles: a module calling WASI's path_open on fd 3 (where the
// first preopened directory would be) and asking for fd 3's preopen gets
// EBADF for both: the sandbox preopens nothing.
func TestSandboxNoFiles(t *testing.T) {
	got := errnos(t, "wasi-file")
	want := []uint32{errnoBADF, errnoBADF}
	if !equalU32(got, want) {
		t.Fatalf("path_open(3), fd_prestat_get(3) = errnos %v, want %v (EBADF: no preopens)", got, want)
	}
}

// TestSandboxNoSockets: sock_accept, sock_send, sock_recv and sock_shutdown
// on fd 3, and sock_send on stdout, all get EBADF: there are no sockets.
func TestSandboxNoSockets(t *testing.T) {
	got := errnos(t, "wasi-sock")
	want := []uint32{errnoBADF, errnoBADF, errnoBADF, errnoBADF, errnoBADF}
	if !equalU32(got, want) {
		t.Fatalf("sock_accept(3), sock_send(3), sock_recv(3), sock_shutdown(3), sock_send(1) = errnos %v, want %v (EBADF: no sockets)", got, want)
	}
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// probeReport mirrors testdata/goprobe's state.
type probeReport struct {
	Events   uint64 `json:"events"`
	ReadFile string `json:"read_file"`
	Home     string `json:"home"`
	Environ  int    `json:"environ"`
	Dial     string `json:"dial"`
	Now      string `json:"now"`
	Random   string `json:"random"`
}

func probe(t *testing.T, p *plugins.Plugin) probeReport {
	t.Helper()
	st, err := p.Fold(context.Background(), nil, []core.StoredEvent{oneEvent(kindA)})
	if err != nil {
		t.Fatalf("Fold: %v", err)
	}
	var r probeReport
	if err := json.Unmarshal(st, &r); err != nil {
		t.Fatalf("probe state %q: %v", st, err)
	}
	return r
}

const (
	fixedNow   = "2020-01-01T00:00:00Z"
	zeroRandom = "00000000000000000000000000000000"
)

// TestGoGuestSandbox: a Go guest's os.ReadFile("/etc/passwd") and
// net.Dial fail, it sees no environment (HOME is empty), the clock reads
// the fixed 2020-01-01T00:00:00Z and crypto/rand gives zeros. Grants open
// exactly what they name: an environment variable, the real clock, real
// randomness, and still no files or network.
func TestGoGuestSandbox(t *testing.T) {
	wasm := goProbe(t)
	h := newHost(t)

	r := probe(t, load(t, h, wasm, generous(projManifest("probe"))))
	t.Logf("sandboxed Go guest saw: %+v", r)
	if r.Events != 1 {
		t.Errorf("events %d, want 1", r.Events)
	}
	if strings.HasPrefix(r.ReadFile, "read ") || r.ReadFile == "" {
		t.Errorf("os.ReadFile(/etc/passwd) in the sandbox: %q, want an error", r.ReadFile)
	}
	if r.Home != "" || r.Environ != 0 {
		t.Errorf("environment in the sandbox: HOME=%q, %d variables; want none", r.Home, r.Environ)
	}
	if r.Dial == "connected" || r.Dial == "" {
		t.Errorf("net.Dial in the sandbox: %q, want an error", r.Dial)
	}
	if r.Now != fixedNow {
		t.Errorf("time.Now() in the sandbox: %s, want the fixed %s", r.Now, fixedNow)
	}
	if r.Random != zeroRandom {
		t.Errorf("crypto/rand in the sandbox: %s, want zeros", r.Random)
	}

	m := generous(projManifest("probe-granted"))
	m.Grants = plugins.Grants{Env: map[string]string{"HOME": "/granted"}, Clock: true, Random: true}
	g := probe(t, load(t, h, wasm, m))
	if g.Home != "/granted" || g.Environ != 1 {
		t.Errorf("with an env grant: HOME=%q, %d variables; want /granted, 1", g.Home, g.Environ)
	}
	if g.Now == fixedNow || g.Now < "2024" {
		t.Errorf("with the clock grant: %s, want the real time", g.Now)
	}
	if g.Random == zeroRandom {
		t.Errorf("with the random grant: zeros")
	}
	if strings.HasPrefix(g.ReadFile, "read ") || g.Dial == "connected" {
		t.Errorf("grants opened files or network: read_file %q, dial %q", g.ReadFile, g.Dial)
	}
}

// TestDeterministicReplay: the same events give byte-identical states
// every time: twice on one host and on a second, separately loaded host,
// for the Go probe (which reads the clock and the random source) through
// core.Project, and for the Go counter.
func TestDeterministicReplay(t *testing.T) {
	s := openStore(t)
	appendEvents(t, s, "order:1", 600, kindA, kindB) // three ProjectBatchSize calls

	for name, build := range map[string]func(testing.TB) []byte{"probe": goProbe, "go-counter": goCounter} {
		t.Run(name, func(t *testing.T) {
			wasm := build(t)
			var states [][]byte
			for hostN := 0; hostN < 2; hostN++ {
				p := load(t, newHost(t), wasm, projManifest(name))
				for i := 0; i < 2; i++ {
					st, found, err := core.Project(s, "order:1", plugins.Projection{P: p}, core.Consistent())
					if err != nil || !found {
						t.Fatalf("host %d, run %d: %v, found %v", hostN, i, err, found)
					}
					states = append(states, st)
				}
			}
			for i, st := range states[1:] {
				if !bytes.Equal(st, states[0]) {
					t.Fatalf("replay %d differs:\n%s\nvs the first:\n%s", i+1, st, states[0])
				}
			}
			if name == "probe" {
				var r probeReport
				if err := json.Unmarshal(states[0], &r); err != nil {
					t.Fatal(err)
				}
				if r.Events != 600 || r.Now != fixedNow || r.Random != zeroRandom {
					t.Fatalf("probe state %+v: want 600 events, the fixed clock and zero randomness", r)
				}
			}
		})
	}
}
