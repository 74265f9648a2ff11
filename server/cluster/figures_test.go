//go:build unix

package cluster_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// The figures of a cluster that take a real process or a million events:
// run only with BATPAK_CLUSTER_FIGURES=1.
//
//	BATPAK_CLUSTER_FIGURES=1 go test ./server/cluster -count=1 -run 'TestFailoverTimeProcess|TestCatchUp1M|TestSmallWritesBesideLargeBatches|TestWritesDuringASnapshot' -v -timeout 30m
//
// BATPAK_CLUSTER_FIGURES_ROUNDS sets the kills per timing (default 5).

func figures(t *testing.T) {
	if os.Getenv("BATPAK_CLUSTER_FIGURES") == "" {
		t.Skip("set BATPAK_CLUSTER_FIGURES=1 to measure")
	}
}

// childEnv names the variables a figures child process reads.
const (
	envChild   = "BATPAK_CLUSTER_CHILD"   // node id
	envDir     = "BATPAK_CLUSTER_DIR"     // data dir
	envBind    = "BATPAK_CLUSTER_BIND"    // raft address
	envControl = "BATPAK_CLUSTER_CONTROL" // control HTTP address
	envPeers   = "BATPAK_CLUSTER_PEERS"   // id=addr,… (bootstrap: the first)
	envTiming  = "BATPAK_CLUSTER_TIMING"  // "default" or "fast"
)

// TestClusterFigureChild is the body of a child process of
// TestFailoverTimeProcess: one cluster node on loopback TCP plus a control
// HTTP server (GET /leader answers "1" on the leader; GET /applied the
// applied index; POST /append writes one event and answers 200 and its
// raft index once it is committed). It does nothing unless started as a
// child.
func TestClusterFigureChild(t *testing.T) {
	id := os.Getenv(envChild)
	if id == "" {
		t.Skip("only runs as a child of TestFailoverTimeProcess")
	}
	cfg := cluster.Config{ID: id, Dir: os.Getenv(envDir), Bind: os.Getenv(envBind)}
	if os.Getenv(envTiming) == "fast" {
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 300*time.Millisecond, 300*time.Millisecond, 300*time.Millisecond
	}
	n, err := cluster.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	var servers []cluster.Server
	for _, p := range strings.Split(os.Getenv(envPeers), ",") {
		pid, addr, _ := strings.Cut(p, "=")
		servers = append(servers, cluster.Server{ID: pid, Address: addr})
	}
	if servers[0].ID == id {
		// Fails harmlessly with raft.ErrCantBootstrap on a restart.
		_ = n.Bootstrap(servers...)
	}
	var written atomic.Uint64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /leader", func(w http.ResponseWriter, r *http.Request) {
		if n.IsLeader() {
			io.WriteString(w, "1")
			return
		}
		io.WriteString(w, "0")
	})
	mux.HandleFunc("GET /applied", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strconv.FormatUint(n.AppliedIndex(), 10))
	})
	mux.HandleFunc("POST /append", func(w http.ResponseWriter, r *http.Request) {
		entity := "e-" + id + "-" + strconv.FormatUint(written.Add(1), 10)
		rs, err := n.Append(r.Context(), "fig", item(entity, `{"n":1}`, core.AppendOptions{}))
		if err == nil {
			err = rs[0].Err
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, strconv.FormatUint(rs[0].Index, 10))
	})
	l, err := net.Listen("tcp", os.Getenv(envControl))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	// Serves until the parent kills this process.
	t.Fatal(http.Serve(l, mux))
}

func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

type figureProc struct {
	id, dir, bind, control string
	cmd                    *exec.Cmd
}

func (p *figureProc) start(t *testing.T, peers, timing string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestClusterFigureChild$", "-test.count=1", "-test.timeout=0")
	cmd.Env = append(os.Environ(), envChild+"="+p.id, envDir+"="+p.dir, envBind+"="+p.bind,
		envControl+"="+p.control, envPeers+"="+peers, envTiming+"="+timing)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.cmd = cmd
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if sc.Text() == "ready" {
			go io.Copy(io.Discard, out)
			return
		}
	}
	t.Fatalf("%s exited before it was ready", p.id)
}

func (p *figureProc) kill() {
	if p.cmd != nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
		p.cmd = nil
	}
}

var figureHTTP = &http.Client{Timeout: 2 * time.Second}

func (p *figureProc) isLeader() bool {
	resp, err := figureHTTP.Get("http://" + p.control + "/leader")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b) == "1"
}

// appendOne writes one event through p and returns its raft index.
func (p *figureProc) appendOne() (uint64, error) {
	resp, err := figureHTTP.Post("http://"+p.control+"/append", "text/plain", nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return 0, errors.New(strings.TrimSpace(string(b)))
	}
	return strconv.ParseUint(string(b), 10, 64)
}

func (p *figureProc) applied() uint64 {
	resp, err := figureHTTP.Get("http://" + p.control + "/applied")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	v, _ := strconv.ParseUint(string(b), 10, 64)
	return v
}

// TestFailoverTimeProcess measures the time from kill -9 of the leader of
// a 3-process cluster (loopback TCP) until a surviving node accepts a
// write (committed by the two survivors), with raft's default timings
// and with the 300 ms test timings. Each round restarts the killed node
// and waits for it to catch up before the next kill.
func TestFailoverTimeProcess(t *testing.T) {
	figures(t)
	rounds := 5
	if v, _ := strconv.Atoi(os.Getenv("BATPAK_CLUSTER_FIGURES_ROUNDS")); v > 0 {
		rounds = v
	}
	for _, timing := range []string{"default", "fast"} {
		t.Run(timing, func(t *testing.T) {
			root := t.TempDir()
			raftAddrs, ctlAddrs := freeAddrs(t, 3), freeAddrs(t, 3)
			var procs []*figureProc
			var peers []string
			for i := range 3 {
				p := &figureProc{id: fmt.Sprintf("p%d", i+1), dir: filepath.Join(root, strconv.Itoa(i+1)), bind: raftAddrs[i], control: ctlAddrs[i]}
				procs = append(procs, p)
				peers = append(peers, p.id+"="+p.bind)
			}
			peerList := strings.Join(peers, ",")
			for _, p := range procs {
				p.start(t, peerList, timing)
				defer p.kill()
			}
			var took []time.Duration
			for round := range rounds {
				leader := waitFigureLeader(t, procs, 30*time.Second)
				// The cluster writes, and every node (the one killed last round
				// too) has applied the writes before the leader is killed.
				var last uint64
				for range 20 {
					idx, err := leader.appendOne()
					if err != nil {
						t.Fatalf("round %d: write through leader %s: %v", round, leader.id, err)
					}
					last = idx
				}
				for _, p := range procs {
					for deadline := time.Now().Add(30 * time.Second); p.applied() < last; time.Sleep(10 * time.Millisecond) {
						if time.Now().After(deadline) {
							t.Fatalf("round %d: %s did not apply index %d", round, p.id, last)
						}
					}
				}
				time.Sleep(200 * time.Millisecond)
				t0 := time.Now()
				leader.kill()
				var d time.Duration
			poll:
				for {
					for _, p := range procs {
						if p.cmd == nil {
							continue
						}
						if _, err := p.appendOne(); err == nil {
							d = time.Since(t0)
							break poll
						}
					}
					if time.Since(t0) > 30*time.Second {
						t.Fatalf("round %d: no write accepted within 30s of killing %s", round, leader.id)
					}
					time.Sleep(2 * time.Millisecond)
				}
				took = append(took, d)
				t.Logf("round %d: killed leader %s, a write was accepted after %s", round, leader.id, d.Round(time.Millisecond))
				leader.start(t, peerList, timing)
			}
			sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
			t.Logf("FIGURE failover (%s timings), %d kills: min %s, median %s, max %s", timing, len(took),
				took[0].Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
		})
	}
}

func waitFigureLeader(t *testing.T, procs []*figureProc, within time.Duration) *figureProc {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for _, p := range procs {
			if p.cmd != nil && p.isLeader() {
				return p
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no leader within %s", within)
	return nil
}

// dirBytes is the bytes allocated on disk under dir.
func dirBytes(dir string) int64 {
	var total int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			} else {
				total += fi.Size()
			}
		}
		return nil
	})
	return total
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// TestCatchUp1M measures how long a node that was down while 1M events
// were written (by the two others, over loopback TCP) takes to apply
// everything after it restarts: "snapshot" has the leader snapshot and
// truncate its log first (the node is sent the snapshot, then the log's
// tail), "log" does not (the node replays the log). It reports raft's disk
// use on the leader before and after the snapshot.
func TestCatchUp1M(t *testing.T) {
	figures(t)
	const total, batch, clients = 1_000_000, 1000, 8
	for _, mode := range []string{"snapshot", "log"} {
		t.Run(mode, func(t *testing.T) {
			root := t.TempDir()
			cfgs := make([]cluster.Config, 3)
			nodes := make([]*cluster.Node, 3)
			var servers []cluster.Server
			for i := range cfgs {
				cfgs[i] = cluster.Config{ID: fmt.Sprintf("c%d", i+1), Dir: filepath.Join(root, strconv.Itoa(i+1)), Bind: "127.0.0.1:0",
					TrailingLogs: 64, SnapshotInterval: time.Hour, SnapshotThreshold: 1 << 40}
				// A 300 ms lease loses the leader to a loaded 2-core machine
				// during the bulk write: raft's own timings.
				if os.Getenv("BATPAK_RAFT_LOG") != "" {
					cfgs[i].Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
				}
				n, err := cluster.Open(cfgs[i])
				if err != nil {
					t.Fatal(err)
				}
				nodes[i] = n
				cfgs[i].Bind = n.Addr() // the restart listens where the others dial
				servers = append(servers, cluster.Server{ID: cfgs[i].ID, Address: n.Addr()})
			}
			defer func() {
				for _, n := range nodes {
					if n != nil {
						n.Close()
					}
				}
			}()
			if err := nodes[0].Bootstrap(servers...); err != nil {
				t.Fatal(err)
			}
			var leader *cluster.Node
			for deadline := time.Now().Add(20 * time.Second); leader == nil; time.Sleep(10 * time.Millisecond) {
				if nodes[0].IsLeader() {
					leader = nodes[0]
				} else if time.Now().After(deadline) {
					t.Fatal("node 1 did not lead")
				}
			}
			// A write every node applied, then node 3 goes down.
			rs := mustAppend(t, leader, "bulk", item("warm", `{}`, core.AppendOptions{}))
			for _, n := range nodes {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if err := n.WaitApplied(ctx, rs[0].Index); err != nil {
					t.Fatal(err)
				}
				cancel()
			}
			if err := nodes[2].Close(); err != nil {
				t.Fatal(err)
			}
			nodes[2] = nil

			payload := []byte(`{"amount":1234,"currency":"EUR","note":"catch-up benchmark event, about one hundred bytes long.."}`)
			var wg sync.WaitGroup
			var mu sync.Mutex
			var last uint64
			var failed error
			start := time.Now()
			for c := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					items := make([]core.BatchItem, batch)
					for i := range items {
						items[i] = core.BatchItem{Coordinate: core.Coordinate{Entity: fmt.Sprintf("w%d", c), Scope: "s"}, Kind: kindA, Payload: payload}
					}
					for range total / batch / clients {
						rs, err := leader.AppendBatch(context.Background(), "bulk", items)
						if err == nil {
							err = rs[0].Err
						}
						mu.Lock()
						if err != nil && failed == nil {
							failed = err
						}
						if err == nil && rs[0].Index > last {
							last = rs[0].Index
						}
						mu.Unlock()
						if err != nil {
							return
						}
					}
				}()
			}
			wg.Wait()
			if failed != nil {
				t.Fatal(failed)
			}
			wrote := time.Since(start)
			t.Logf("wrote %d events in %s (%.0f events/s) with node 3 down", total, wrote.Round(time.Millisecond), float64(total)/wrote.Seconds())
			raftDir := filepath.Join(cfgs[0].Dir, "raft")
			before := dirBytes(raftDir)
			if mode == "snapshot" {
				t0 := time.Now()
				if err := leader.Snapshot(); err != nil {
					t.Fatal(err)
				}
				t.Logf("leader snapshot took %s", time.Since(t0).Round(time.Millisecond))
			}
			after := dirBytes(raftDir)
			st := leader.Stats()
			t.Logf("leader raft dir: %s before, %s after (raft.db %s, snapshots %s); last_log_index %s, last_snapshot_index %s",
				mib(before), mib(after), mib(dirBytes(filepath.Join(raftDir, "raft.db"))), mib(dirBytes(filepath.Join(raftDir, "snapshots"))),
				st["last_log_index"], st["last_snapshot_index"])

			t0 := time.Now()
			n3, err := cluster.Open(cfgs[2])
			if err != nil {
				t.Fatal(err)
			}
			nodes[2] = n3
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			if err := n3.WaitApplied(ctx, last); err != nil {
				t.Fatal(err)
			}
			took := time.Since(t0)
			var count uint64
			if err := n3.View("bulk", func(s *core.Store) error {
				count = s.Stats().Events
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if count != total+1 {
				t.Fatalf("node 3 holds %d events, want %d", count, total+1)
			}
			t.Logf("FIGURE catch-up (%s) of a node %d events behind: %s (%.0f events/s); node 3 raft dir %s, stores %s",
				mode, total, took.Round(time.Millisecond), float64(total)/took.Seconds(),
				mib(dirBytes(filepath.Join(cfgs[2].Dir, "raft"))), mib(dirBytes(filepath.Join(cfgs[2].Dir, "tenants"))))
		})
	}
}

// TestSmallWritesBesideLargeBatches measures what one tenant's largest
// batches (4,096 events of 4 KiB, 16 MiB: Config.MaxBytes) from two
// clients cost another tenant's single appends on a 3-node cluster over
// loopback TCP, for 15 s: the small writes' latency and the large ones'
// rate. Raft's log is one order, so a small write waits for the large
// entry in flight before it.
func TestSmallWritesBesideLargeBatches(t *testing.T) {
	figures(t)
	l := threeNodesTCP(t)
	items := largeBatch()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// The large writers end before the test does, however it ends (their
	// errors are reported through t).
	defer wg.Wait()
	defer cancel()
	var mu sync.Mutex
	var large []time.Duration
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				t0 := time.Now()
				rs, err := l.AppendBatch(ctx, "large", items)
				if ctx.Err() != nil {
					return
				}
				if err != nil || rs[0].Err != nil {
					t.Errorf("a large batch: %v %+v", err, rs)
					return
				}
				mu.Lock()
				large = append(large, time.Since(t0))
				mu.Unlock()
			}
		}()
	}
	var small []time.Duration
	one := core.BatchItem{Coordinate: core.Coordinate{Entity: "v", Scope: "s"}, Kind: core.MustKind(1, 1), Payload: []byte(`{"n":1}`)}
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		t0 := time.Now()
		rs, err := l.Append(context.Background(), "small", one)
		if err != nil || rs[0].Err != nil {
			t.Errorf("a small write: %v %+v", err, rs)
			return
		}
		small = append(small, time.Since(t0))
	}
	cancel()
	wg.Wait()
	pct := func(d []time.Duration, p int) time.Duration {
		slices.Sort(d)
		return d[min(len(d)-1, len(d)*p/100)]
	}
	t.Logf("small writes: %d, p50 %v, p99 %v, max %v; large batches: %d in 15 s (%.1f MiB/s), p50 %v, max %v",
		len(small), pct(small, 50), pct(small, 99), pct(small, 100), len(large), float64(len(large))*16/15, pct(large, 50), pct(large, 100))
}

// threeNodesTCP starts 3 nodes on loopback TCP with raft's default
// timings and returns the leader.
func threeNodesTCP(t *testing.T) *cluster.Node {
	t.Helper()
	nodes := tcpCluster(t, "f", 3, func(dir, id string) *cluster.Node {
		cfg := cluster.Config{ID: id, Dir: dir, Bind: "127.0.0.1:0"}
		if os.Getenv("BATPAK_RAFT_LOG") != "" {
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
		}
		n, err := cluster.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	})
	return waitLeader(t, nodes, 10*time.Second)
}

// largeBatch is a batch of Config.MaxBytes (4,096 events of 4 KiB) over
// 16 entities.
func largeBatch() []core.BatchItem {
	pad := []byte(`{"p":"` + strings.Repeat("x", 4000) + `"}`)
	items := make([]core.BatchItem, 4096)
	for i := range items {
		items[i] = core.BatchItem{Coordinate: core.Coordinate{Entity: "b" + strconv.Itoa(i%16), Scope: "s"}, Kind: core.MustKind(1, 1), Payload: pad}
	}
	return items
}

// TestWritesDuringASnapshot measures what a raft snapshot of a node
// holding 320 MiB of one tenant's events costs another tenant's single
// appends on a 3-node cluster over loopback TCP: their latency while the
// leader snapshots (Node.Snapshot), which copies every store.
func TestWritesDuringASnapshot(t *testing.T) {
	figures(t)
	l := threeNodesTCP(t)
	items := largeBatch()
	for range 20 {
		if rs, err := l.AppendBatch(context.Background(), "bulk", items); err != nil || rs[0].Err != nil {
			t.Fatalf("a batch: %v %+v", err, rs)
		}
	}
	one := core.BatchItem{Coordinate: core.Coordinate{Entity: "v", Scope: "s"}, Kind: core.MustKind(1, 1), Payload: []byte(`{"n":1}`)}
	var took time.Duration
	snapped := make(chan error, 1)
	var lat []time.Duration
	for i := 0; ; i++ {
		if i == 50 {
			go func() {
				t0 := time.Now()
				err := l.Snapshot()
				took = time.Since(t0)
				snapped <- err
			}()
		}
		t0 := time.Now()
		if rs, err := l.Append(context.Background(), "small", one); err != nil || rs[0].Err != nil {
			t.Fatalf("a small write: %v %+v", err, rs)
		}
		lat = append(lat, time.Since(t0))
		if i > 50 && len(snapped) > 0 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := <-snapped; err != nil {
		t.Fatal(err)
	}
	before, during := slices.Clone(lat[:50]), slices.Clone(lat[50:])
	slices.Sort(before)
	slices.Sort(during)
	t.Logf("snapshot of 320 MiB took %v; small writes before it: p50 %v, max %v; during it (%d): p50 %v, max %v",
		took, before[len(before)/2], before[len(before)-1], len(during), during[len(during)/2], during[len(during)-1])
}
