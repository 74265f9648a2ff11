package cluster_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/testca"
	"github.com/batpak-go/batpak/server/cluster"
)

// nodeTLS writes a node certificate signed by signer, and trustPEM as its
// CA file, to dir, and loads them with cluster.LoadTLS (mutual TLS).
func nodeTLS(t testing.TB, dir, name string, signer *testca.CA, trustPEM []byte) *tls.Config {
	t.Helper()
	certPEM, keyPEM := signer.Issue(t, name)
	files := map[string][]byte{"node.crt": certPEM, "node.key": keyPEM, "ca.crt": trustPEM}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, b := range files {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := cluster.LoadTLS(filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"), filepath.Join(dir, "ca.crt"), true)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// openTCP opens a node on loopback TCP (cfg.Bind, a free port by default) with cfg's ID, Dir and guard
// (TLS or PeerKey) and fast raft timings; it closes when the test ends.
func openTCP(t testing.TB, cfg cluster.Config) *cluster.Node {
	t.Helper()
	if cfg.Bind == "" {
		cfg.Bind = "127.0.0.1:0"
	}
	fastTimeouts(&cfg)
	n, err := cluster.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// openTLS opens a node on loopback TCP with tlsCfg.
func openTLS(t testing.TB, dir, id string, tlsCfg *tls.Config, handshake time.Duration) *cluster.Node {
	t.Helper()
	return openTCP(t, cluster.Config{ID: id, Dir: dir, TLS: tlsCfg, HandshakeTimeout: handshake})
}

// tcpCluster opens n nodes named prefix1…prefixN under a fresh root with
// open(dir, id) and bootstraps them as one cluster.
func tcpCluster(t testing.TB, prefix string, n int, open func(dir, id string) *cluster.Node) []*cluster.Node {
	t.Helper()
	root := t.TempDir()
	var nodes []*cluster.Node
	var servers []cluster.Server
	for i := 1; i <= n; i++ {
		id := prefix + strconv.Itoa(i)
		node := open(filepath.Join(root, id), id)
		nodes = append(nodes, node)
		servers = append(servers, cluster.Server{ID: id, Address: node.Addr()})
	}
	if err := nodes[0].Bootstrap(servers...); err != nil {
		t.Fatal(err)
	}
	return nodes
}

// tlsCluster starts n nodes with mutual TLS, certificates from ca.
func tlsCluster(t testing.TB, ca *testca.CA, n int, handshake time.Duration) []*cluster.Node {
	t.Helper()
	return tcpCluster(t, "s", n, func(dir, id string) *cluster.Node {
		return openTLS(t, dir, id, nodeTLS(t, filepath.Join(dir, "tls"), id, ca, ca.PEM), handshake)
	})
}

func waitLeader(t testing.TB, nodes []*cluster.Node, within time.Duration) *cluster.Node {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, n := range nodes {
			if n.IsLeader() {
				return n
			}
		}
	}
	t.Fatalf("no leader within %s", within)
	return nil
}

// replicatesRefusingNothing: nodes elect a leader, replicate 10 writes
// identically, and none refused a connection from another.
func replicatesRefusingNothing(t *testing.T, nodes []*cluster.Node) {
	t.Helper()
	l := waitLeader(t, nodes, 10*time.Second)
	appendAndCompare(t, l, nodes, 0, 10)
	for _, n := range nodes {
		if st := n.Status(); st.RefusedConnections != 0 {
			t.Errorf("%s refused %d connections from its own cluster", n.ID(), st.RefusedConnections)
		}
	}
}

// appendAndCompare writes events from..to-1 of entity e of tenant acme
// through the leader l, each expecting the one before, and checks that
// every node holds the same.
func appendAndCompare(t *testing.T, l *cluster.Node, nodes []*cluster.Node, from, to int) {
	t.Helper()
	var last uint64
	for i := from; i < to; i++ {
		last = mustAppend(t, l, "acme", item("e", fmt.Sprintf(`{"i":%d}`, i), core.AppendOptions{ExpectedClock: expectAfter(i)}))[0].Index
	}
	assertIdentical(t, nodes, last, "acme")
}

// refusedAtJoin: joining rogue (after one event of tenant acme) through
// the leader l fails with ErrUnreachable naming why (want), the
// membership stays nodes', the cluster keeps replicating, and rogue
// receives no raft traffic.
func refusedAtJoin(t *testing.T, l *cluster.Node, nodes []*cluster.Node, rogue *cluster.Node, want string) {
	t.Helper()
	if err := l.Join("rogue", rogue.Addr()); !errors.Is(err, cluster.ErrUnreachable) || !strings.Contains(err.Error(), want) {
		t.Fatalf("joining the rogue node: %v, want ErrUnreachable naming the %s", err, want)
	}
	if got := len(l.Status().Servers); got != len(nodes) {
		t.Fatalf("%d members after a refused join, want %d", got, len(nodes))
	}
	appendAndCompare(t, l, nodes, 1, 10)
	time.Sleep(500 * time.Millisecond)
	if st := rogue.Status(); st.AppliedIndex != 0 || st.Leader.ID != "" || len(st.Servers) != 0 {
		t.Fatalf("the rogue node received raft traffic: %+v", st)
	}
	if err := rogue.View("acme", func(*core.Store) error { return nil }); !errors.Is(err, cluster.ErrNoTenant) {
		t.Fatalf("the rogue node holds tenant acme: %v", err)
	}
}

func TestTLSClusterElectsAndReplicates(t *testing.T) {
	replicatesRefusingNothing(t, tlsCluster(t, testca.NewCA(t, "batpak test CA"), 3, 0))
}

func TestTLSRefusesANodeFromAnotherCA(t *testing.T) {
	ca := testca.NewCA(t, "batpak test CA")
	nodes := tlsCluster(t, ca, 3, time.Second)
	l := waitLeader(t, nodes, 10*time.Second)
	mustAppend(t, l, "acme", item("e", `{"i":0}`, core.AppendOptions{}))

	// The rogue trusts the cluster's CA but holds a certificate another CA signed.
	other := testca.NewCA(t, "another CA")
	dir := filepath.Join(t.TempDir(), "rogue")
	rogueTLS := nodeTLS(t, filepath.Join(dir, "tls"), "rogue", other, ca.PEM)
	rogue := openTLS(t, dir, "rogue", rogueTLS, time.Second)
	refusedBefore := l.Status().RefusedConnections

	// Its connections to the leader are refused after the handshake.
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", l.Addr(), rogueTLS)
	if err == nil {
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		conn.Write([]byte{0})
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a client certificate from another CA was not refused: %v", err)
	}
	for deadline := time.Now().Add(2 * time.Second); l.Status().RefusedConnections == refusedBefore; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the leader does not count the refused connection")
		}
	}

	// Its join is refused (the handshake fails), nothing changes; it
	// receives nothing, and the majority keeps working.
	refusedAtJoin(t, l, nodes, rogue, "certificate")
}

// readUntilClosed reads conn until the node closes it (or 10s pass) and
// returns what it read and how long it took.
func readUntilClosed(t *testing.T, conn net.Conn) ([]byte, time.Duration) {
	t.Helper()
	start := time.Now()
	conn.SetReadDeadline(start.Add(10 * time.Second))
	got, err := io.ReadAll(conn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the node kept the connection open for 10s (read %q)", got)
	}
	return got, time.Since(start)
}

func TestTLSDropsPlainTCPPeer(t *testing.T) {
	ca := testca.NewCA(t, "batpak test CA")
	const bound = 400 * time.Millisecond
	n := openTLS(t, filepath.Join(t.TempDir(), "a"), "a", nodeTLS(t, filepath.Join(t.TempDir(), "tls"), "a", ca, ca.PEM), bound)

	// A raft message in the clear: not a TLS record, refused at once with
	// at most a TLS alert.
	conn, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("\x00\x85\xa4Term\x01\x86Leader\xc4\x01a")) // rpcAppendEntries, msgpack
	got, took := readUntilClosed(t, conn)
	if len(got) > 0 && got[0] != 0x15 { // 0x15: a TLS alert record
		t.Fatalf("a plain-TCP peer received %q", got)
	}
	if took > bound+time.Second {
		t.Fatalf("dropped after %s, the bound is %s", took, bound)
	}

	// A node without TLS: its raft RPC fails, the TLS node's raft never sees it.
	plain, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	start := time.Now()
	var resp raft.AppendEntriesResponse
	err = plain.AppendEntries("a", raft.ServerAddress(n.Addr()), &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("plain"), Addr: []byte(plain.LocalAddr())}, Term: 99}, &resp)
	if err == nil {
		t.Fatalf("a plain-TCP raft node's AppendEntries succeeded: %+v", resp)
	}
	if took := time.Since(start); took > bound+time.Second {
		t.Fatalf("a plain-TCP raft RPC failed after %s, the bound is %s", took, bound)
	}
	if st := n.Status(); st.Term >= 99 {
		t.Fatalf("the TLS node took the plain node's term: %+v", st)
	}

	// A plain peer that sent one byte of something that might be a record
	// header: dropped when the handshake bound ends.
	conn2, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	conn2.Write([]byte{0x16})
	got, took = readUntilClosed(t, conn2)
	if len(got) > 0 && got[0] != 0x15 {
		t.Fatalf("a plain-TCP peer received %q", got)
	}
	if took < bound/2 || took > bound+time.Second {
		t.Fatalf("a stalled handshake dropped after %s, the bound is %s", took, bound)
	}
	for deadline := time.Now().Add(2 * time.Second); n.Status().RefusedConnections != 3; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("refused_connections %d, want 3", n.Status().RefusedConnections)
		}
	}
}

func TestTLSClosesSilentConnections(t *testing.T) {
	ca := testca.NewCA(t, "batpak test CA")
	const bound = 400 * time.Millisecond
	nodes := tlsCluster(t, ca, 3, bound)
	l := waitLeader(t, nodes, 10*time.Second)

	conn, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got, took := readUntilClosed(t, conn)
	if len(got) != 0 {
		t.Fatalf("a silent peer received %q", got)
	}
	if took < bound/2 || took > bound+time.Second {
		t.Fatalf("a silent connection closed after %s, the bound is %s", took, bound)
	}
	t.Logf("a silent connection was closed after %s (bound %s)", took, bound)
	// The cluster kept working.
	rs := mustAppend(t, l, "acme", item("e", `{}`, core.AppendOptions{}))
	assertIdentical(t, nodes, rs[0].Index, "acme")
}

func TestTLSBoundsPendingHandshakes(t *testing.T) {
	ca := testca.NewCA(t, "batpak test CA")
	n := openTLS(t, filepath.Join(t.TempDir(), "a"), "a", nodeTLS(t, filepath.Join(t.TempDir(), "tls"), "a", ca, ca.PEM), 5*time.Second)
	held := dialSilent(t, n.Addr(), cluster.MaxPendingHandshakes)
	time.Sleep(time.Second) // let the node accept them all
	c, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The newcomer displaces the oldest: no more than the bound is held.
	if _, took := readUntilClosed(t, held[0]); took > 2*time.Second {
		t.Fatalf("a connection beyond %d pending handshakes left the oldest held %s", cluster.MaxPendingHandshakes, took)
	}
	// A legitimate peer gets through once the silent ones are gone.
	for _, c := range held {
		c.Close()
	}
	time.Sleep(100 * time.Millisecond)
	peer := nodeTLS(t, filepath.Join(t.TempDir(), "peer"), "peer", ca, ca.PEM)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", n.Addr(), peer)
	if err != nil {
		t.Fatalf("a trusted peer after the flood: %v", err)
	}
	conn.Close()
}

func TestLoadTLSNamesTheBadFile(t *testing.T) {
	ca := testca.NewCA(t, "batpak test CA")
	dir := t.TempDir()
	nodeTLS(t, dir, "a", ca, ca.PEM)
	otherKey := filepath.Join(dir, "other.key")
	_, k := ca.Issue(t, "b")
	if err := os.WriteFile(otherKey, k, 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "notpem.crt")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	crt, key, caf := filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"), filepath.Join(dir, "ca.crt")
	for _, tc := range []struct {
		cert, key, ca string
		verify        bool
		want          string
	}{
		{filepath.Join(dir, "missing.crt"), key, caf, true, "missing.crt"},
		{crt, filepath.Join(dir, "missing.key"), caf, true, "missing.key"},
		{crt, otherKey, caf, true, "other.key"},
		{notPEM, key, caf, true, "notpem.crt"},
		{crt, key, filepath.Join(dir, "missing-ca.crt"), true, "missing-ca.crt"},
		{crt, key, notPEM, true, "notpem.crt"},
		{crt, key, "", true, "CA file"},
		{"", key, caf, false, "certificate and key"},
	} {
		_, err := cluster.LoadTLS(tc.cert, tc.key, tc.ca, tc.verify)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadTLS(%q, %q, %q): %v, want an error naming %q", tc.cert, tc.key, tc.ca, err, tc.want)
		}
	}
	cfg, err := cluster.LoadTLS(crt, key, caf, true)
	if err != nil || cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.MinVersion != tls.VersionTLS13 {
		t.Fatalf("LoadTLS: %v %+v", err, cfg)
	}
	// TLS with an injected transport, or without a certificate, is refused.
	if _, err := cluster.Open(cluster.Config{ID: "a", Dir: t.TempDir(), Bind: "127.0.0.1:0", TLS: &tls.Config{}}); err == nil || !strings.Contains(err.Error(), "no certificate") {
		t.Fatalf("Open with a TLS config holding no certificate: %v", err)
	}
	_, tr := raft.NewInmemTransport("a")
	if _, err := cluster.Open(cluster.Config{ID: "a", Dir: t.TempDir(), Transport: tr, TLS: cfg}); err == nil || !strings.Contains(err.Error(), "Config.TLS") {
		t.Fatalf("Open with TLS and an injected transport: %v", err)
	}
}

// TestTLSPeerGetsInDuringSilentFlood: connections that never handshake,
// as many as MaxPendingHandshakes and renewed, must not lock a trusted
// peer out: a new connection past the bound displaces the oldest pending
// handshake instead of being refused, so a node still accepts its peers
// (a new leader dialling it, a restarted node) while someone on the
// network holds silent connections open.
func TestTLSPeerGetsInDuringSilentFlood(t *testing.T) {
	ca := testca.NewCA(t, "batpak test CA")
	n := openTLS(t, filepath.Join(t.TempDir(), "a"), "a", nodeTLS(t, filepath.Join(t.TempDir(), "tls"), "a", ca, ca.PEM), 5*time.Second)
	held := dialSilent(t, n.Addr(), cluster.MaxPendingHandshakes)
	time.Sleep(500 * time.Millisecond) // let the node accept them all
	peer := nodeTLS(t, filepath.Join(t.TempDir(), "peer"), "peer", ca, ca.PEM)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", n.Addr(), peer)
	if err != nil {
		t.Fatalf("a trusted peer while %d silent connections are pending: %v", len(held), err)
	}
	// The handshake completed on both sides: the node hands the
	// connection on rather than closing it.
	conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := conn.Read(make([]byte, 1)); err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the trusted peer's connection: %v, want it held open", err)
	}
	conn.Close()
}

// dialSilent opens n TCP connections to addr that never handshake,
// closed when the test ends.
func dialSilent(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	held := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	return held
}
