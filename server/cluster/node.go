package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/durable"
	"github.com/batpak-go/batpak/server/tenancy"
)

// Config configures one node. ID and Dir are required, and one of Bind
// or Transport.
type Config struct {
	// ID is the node's raft server id, unique and stable for the cluster's
	// life (a node restarted with the same Dir keeps it).
	ID string
	// Dir holds the node's data: raft/ (the raft log and stable store in
	// raft.db, raft's snapshots), tenants/<tenant>/ (the stores, rebuilt
	// from raft on every Open), blobs/ (Node.PutBlob's, kept) and member
	// (the node has been a member: Node.Removed).
	Dir string
	// Bind is the TCP address node-to-node traffic listens on, e.g.
	// "10.0.0.5:7000" ("127.0.0.1:0" picks a free port; see Node.Addr).
	Bind string
	// Advertise is the address other nodes dial; empty means Bind's
	// (which must then not be an unspecified address like 0.0.0.0).
	Advertise string
	// TLS, when set, carries node-to-node traffic over TLS: the node
	// presents TLS's certificate to nodes that dial it and to nodes it
	// dials, verifies theirs against RootCAs (the server name is the host
	// of the address dialled unless TLS.ServerName is set), and with
	// ClientAuth tls.RequireAndVerifyClientCert accepts only peers with a
	// certificate ClientCAs signed: mutual TLS. LoadTLS builds one from PEM
	// files. Every node of a cluster must use TLS, or none. Nil: plain TCP.
	TLS *tls.Config
	// PeerKey, when set and TLS is not, is a secret every node of the
	// cluster holds (at least MinPeerKeyBytes): every raft connection
	// then starts with a challenge-response handshake in which each end
	// proves it holds the key (HMAC-SHA256 over fresh nonces from both;
	// see peerkey.go), and a connection that does not complete it never
	// reaches raft. It authenticates peers; it does not encrypt the
	// traffic or protect it from an attacker on the network path (use TLS
	// for that). Every node of a cluster must use the same key, or none.
	PeerKey []byte
	// HandshakeTimeout bounds an inbound connection's handshake (TLS or
	// the peer key's): a peer that connects and completes no handshake
	// within it is disconnected (see MaxPendingHandshakes). Default 5s
	// (DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	// Transport, when set, replaces the TCP transport (tests pass a
	// raft.InmemTransport). The node closes it on Close if it is an
	// io.Closer.
	Transport raft.Transport
	// StoreConfig is the core.Config of the store of tenant (or of
	// SystemStore) in dir; every node of a cluster must use the same limits
	// (batch sizes, payload size), or their refusals differ. The node sets
	// its Replicator: writes taken by the store through its ordinary API
	// (Append, AppendBatch, reactions, Import) are admitted by its
	// Admission on this node and then proposed to raft (see Node.Store).
	// Default: tenancy.StoreConfig(dir, false) with syncing off
	// (Sync.EveryNEvents and Interval 0): raft's log is what makes a write
	// durable, and Open rebuilds the stores from it, so syncing them would
	// cost every node fsyncs for nothing.
	StoreConfig func(tenant, dir string) core.Config

	// HeartbeatTimeout and ElectionTimeout: how long a follower waits
	// without hearing from the leader before it stands for election.
	// Default 1s each (raft's); loopback tests use about 100ms.
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	// LeaderLeaseTimeout: how long a leader keeps leading without hearing
	// from a quorum. Default 500ms; at most HeartbeatTimeout.
	LeaderLeaseTimeout time.Duration
	// SnapshotThreshold is how many log entries since the last snapshot
	// trigger a new one (checked every SnapshotInterval). Default 8192.
	SnapshotThreshold uint64
	// SnapshotInterval is how often the threshold is checked. Default 2m.
	SnapshotInterval time.Duration
	// TrailingLogs is how many entries a snapshot leaves in the log, so a
	// follower slightly behind catches up from the log rather than a
	// snapshot. Default 10240.
	TrailingLogs uint64
	// LogMaxBytes bounds, roughly, the bytes of the entries raft's log
	// holds (raft.db; bolt reuses the pages a truncation frees but never
	// shrinks its file): once the entries applied since the last snapshot
	// pass half of it, the node takes a snapshot, and a snapshot keeps
	// fewer than TrailingLogs entries behind it (at least 8) when their
	// average size would pass the other half. So a tenant writing batches
	// of MaxBytes — or batches every replica refuses, which raft logs all
	// the same — cannot fill the nodes' disks through TrailingLogs' count.
	// Raft's own count-based snapshots (SnapshotThreshold) go on.
	// Default DefaultLogMaxBytes (1 GiB); at least MinLogMaxBytes (1 MiB).
	LogMaxBytes int64
	// ApplyTimeout bounds how long Append waits for its entry to be
	// enqueued when ctx has no deadline, and how long Join and Leave wait
	// for a change under way on this node, for raft to take theirs, and
	// then for it to commit. Default 10s.
	ApplyTimeout time.Duration
	// Logger receives raft's own log lines ("raft ID: message", with
	// raft's key/value pairs as attributes) at their levels, raft's trace
	// as debug; nil discards them.
	Logger *slog.Logger

	// MaxItems is the most items one Append or AppendBatch may carry (one
	// raft entry). Default 4096; range 1..65536.
	MaxItems int
	// MaxBytes bounds the sum of the payload sizes of one Append or
	// AppendBatch. Default 16 MiB; range 1..64 MiB.
	MaxBytes int
	// SingleWriteEntries makes the leader propose every write (an Append,
	// an AppendBatch, a store's write) in a raft entry of its own. By
	// default, writes proposed while earlier ones are on their way to a
	// quorum share the next entry (a write group, up to 1024 writes and
	// 4 MiB): far less work per write on every node. Nodes of versions
	// before write groups halt on such an entry (Node.Err names it): set
	// this on every upgraded node until no such node is left in the
	// cluster.
	SingleWriteEntries bool

	// MaxOpenStores bounds the tenant stores this node keeps open (each
	// holds its index in memory and file descriptors): opening one more
	// first closes the least recently used store nobody holds (see
	// Node.Store). When every open store is held, raft's apply opens it
	// anyway rather than stall, and StoreStats.OverBound counts it.
	// Default DefaultMaxOpenStores (10000, the server's
	// max_open_tenants); range 1..MaxMaxOpenStores.
	MaxOpenStores int
	// StoreIdleTimeout: a store nobody holds and nobody used for this
	// long is closed (its checkpoint written) by the node's janitor, and
	// opened again on its next use. Default DefaultStoreIdleTimeout (5m,
	// the server's tenant_idle_timeout); negative: never closed for
	// idleness; at most MaxStoreIdleTimeout (24h).
	StoreIdleTimeout time.Duration
}

// Defaults and ranges of Config's limits.
const (
	DefaultMaxItems = 4096
	MaxMaxItems     = 1 << 16
	DefaultMaxBytes = 16 << 20
	MaxMaxBytes     = 64 << 20

	DefaultLogMaxBytes = 1 << 30
	MinLogMaxBytes     = 1 << 20
)

// Server names a cluster member.
type Server struct {
	ID      string
	Address string
}

// Result is what one write became on every replica: a receipt, or the
// refusal every replica made alike (a *core.ConflictError, an idempotency
// mismatch, a validation error). Index is the raft log index of the entry
// that carried it: pass it to WaitApplied on any node to read the write
// there.
type Result struct {
	Receipt core.Receipt
	Err     error
	Index   uint64
}

// Node is one member of a cluster: a raft instance whose state machine is
// this node's tenant stores.
type Node struct {
	cfg     Config
	raft    *raft.Raft
	fsm     *fsm
	trans   raft.Transport
	stream  *guardedStream // raft's stream layer over TCP (nil with Config.Transport)
	bolt    *raftboltdb.BoltStore
	stable  *closingStable    // bolt as raft's stable store
	watch   *watchedTransport // trans as raft sees it: AppendEntries observed
	catchUp catchUp
	state   stateIndex // the last log index the stores reflect
	timeout time.Duration
	group   *grouper // nil with Config.SingleWriteEntries
	member  memberMark

	// changing holds one token while a membership change (Join, Leave)
	// is judged, proposed and waited for: changes on this node are made
	// one after the other, each judged against the configuration the one
	// before made (see lockMembership).
	changing chan struct{}

	// leadTerm is the term in which this node, leading, applied a barrier
	// (see Leading); leadCheck the term a barrier was started for.
	leadTerm, leadCheck atomic.Uint64

	handOverDone chan struct{} // closed when handOverWhileHalted returned
	janitorStop  chan struct{} // closed by Close
	janitorDone  chan struct{} // closed when the janitor returned
	budgetDone   chan struct{} // closed when logBudget returned
	pauseStop    chan struct{} // closed by Close: stops catchUp.watchPauses
	pauseDone    chan struct{} // closed when watchPauses returned

	closeOnce sync.Once
	closeErr  error
}

// Open starts a node. It removes Dir/tenants (never Dir/blobs), then raft restores the stores
// from its latest snapshot and replays the log after it: the stores are
// derived state, raft's log is the truth. A node with no raft state waits
// for Bootstrap (first node) or for a leader's Join.
func Open(cfg Config) (*Node, error) {
	if cfg.ID == "" || cfg.Dir == "" {
		return nil, errors.New("cluster: Config.ID and Config.Dir are required")
	}
	if err := ValidNodeID(cfg.ID); err != nil {
		return nil, err
	}
	if cfg.Transport == nil && cfg.Bind == "" {
		return nil, errors.New("cluster: Config.Bind (or Config.Transport) is required")
	}
	if cfg.Transport != nil && cfg.TLS != nil {
		return nil, errors.New("cluster: Config.TLS secures the TCP transport; it cannot apply to Config.Transport")
	}
	switch {
	case cfg.MaxItems == 0:
		cfg.MaxItems = DefaultMaxItems
	case cfg.MaxItems < 0 || cfg.MaxItems > MaxMaxItems:
		return nil, fmt.Errorf("cluster: Config.MaxItems is %d, the range is 1..%d", cfg.MaxItems, MaxMaxItems)
	}
	switch {
	case cfg.MaxBytes == 0:
		cfg.MaxBytes = DefaultMaxBytes
	case cfg.MaxBytes < 0 || cfg.MaxBytes > MaxMaxBytes:
		return nil, fmt.Errorf("cluster: Config.MaxBytes is %d, the range is 1..%d", cfg.MaxBytes, MaxMaxBytes)
	}
	switch {
	case cfg.LogMaxBytes == 0:
		cfg.LogMaxBytes = DefaultLogMaxBytes
	case cfg.LogMaxBytes < MinLogMaxBytes:
		return nil, fmt.Errorf("cluster: Config.LogMaxBytes is %d, the least is %d", cfg.LogMaxBytes, MinLogMaxBytes)
	}
	switch {
	case cfg.MaxOpenStores == 0:
		cfg.MaxOpenStores = DefaultMaxOpenStores
	case cfg.MaxOpenStores < 0 || cfg.MaxOpenStores > MaxMaxOpenStores:
		return nil, fmt.Errorf("cluster: Config.MaxOpenStores is %d, the range is 1..%d", cfg.MaxOpenStores, MaxMaxOpenStores)
	}
	switch {
	case cfg.StoreIdleTimeout == 0:
		cfg.StoreIdleTimeout = DefaultStoreIdleTimeout
	case cfg.StoreIdleTimeout > MaxStoreIdleTimeout:
		return nil, fmt.Errorf("cluster: Config.StoreIdleTimeout is %s, the most is %s", cfg.StoreIdleTimeout, MaxStoreIdleTimeout)
	}
	if cfg.StoreConfig == nil {
		cfg.StoreConfig = func(_, dir string) core.Config {
			c := tenancy.StoreConfig(dir, false)
			c.Sync.EveryNEvents, c.Sync.Interval = 0, 0
			return c
		}
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	setDur(&rc.HeartbeatTimeout, cfg.HeartbeatTimeout)
	setDur(&rc.ElectionTimeout, cfg.ElectionTimeout)
	setDur(&rc.LeaderLeaseTimeout, cfg.LeaderLeaseTimeout)
	setDur(&rc.SnapshotInterval, cfg.SnapshotInterval)
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	rc.Logger = newRaftLogger(cfg.Logger, "raft "+cfg.ID)
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}

	raftDir := filepath.Join(cfg.Dir, "raft")
	root := filepath.Join(cfg.Dir, "tenants")
	if err := os.MkdirAll(raftDir, 0o755); err != nil {
		return nil, err
	}
	// raft.db's lock is the node's: taken before anything is removed, so a
	// second Open of a Dir in use fails without touching the running node.
	bolt, err := openRaftLog(filepath.Join(raftDir, "raft.db"))
	if err != nil {
		return nil, err
	}
	if err := claimDir(raftDir, cfg.ID); err != nil {
		bolt.Close()
		return nil, err
	}
	staging := filepath.Join(cfg.Dir, "snapshot-staging")
	for _, d := range []string{root, staging, filepath.Join(cfg.Dir, "restoring"), filepath.Join(cfg.Dir, trashDir)} {
		if err := os.RemoveAll(d); err != nil {
			bolt.Close()
			return nil, err
		}
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		bolt.Close()
		return nil, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(raftDir, 2, newRaftLogger(cfg.Logger, "raft-snapshots "+cfg.ID))
	if err != nil {
		bolt.Close()
		return nil, fmt.Errorf("cluster: opening raft snapshots: %w", err)
	}
	trans := cfg.Transport
	var stream *guardedStream
	if trans == nil {
		if trans, stream, err = newTCPTransport(cfg); err != nil {
			bolt.Close()
			return nil, err
		}
	}
	n := &Node{cfg: cfg, trans: trans, stream: stream, bolt: bolt, timeout: cfg.ApplyTimeout, changing: make(chan struct{}, 1)}
	if stream != nil {
		slow := func(d time.Duration) { n.catchUp.stalled(d, time.Now()) }
		stream.slowAccept.Store(&slow)
	}
	if n.timeout <= 0 {
		n.timeout = 10 * time.Second
	}
	f := newFSM(root, staging, func(tenant, dir string) core.Config {
		c := cfg.StoreConfig(tenant, dir)
		c.Replicator = &replicator{n: n, tenant: tenant}
		return c
	})
	f.maxOpen = cfg.MaxOpenStores
	n.fsm = f
	logs := newLogCache(bolt, logCacheEntries, logCacheBytes(cfg.MaxBytes))
	n.watch = watchTransport(trans)
	n.stable = newClosingStable(bolt)
	// Requests are noted as they arrive, from now on: while NewRaft
	// restores the last snapshot (seconds with large stores) the transport
	// already takes the leader's requests, which wait for raft.
	n.catchUp.stored = func() uint64 {
		t, _ := n.stable.GetUint64([]byte("CurrentTerm")) // raft's key for its term
		return t
	}
	n.pauseStop, n.pauseDone = make(chan struct{}), make(chan struct{})
	go n.catchUp.watchPauses(n.pauseStop, n.pauseDone)
	n.watch.start(&n.catchUp)
	// A node with no raft state starts a new membership: a mark left
	// from before (its raft directory emptied) would make the old
	// configurations it catches up through look like its removal.
	failed := func(what string, err error) (*Node, error) {
		n.watch.halt()
		close(n.pauseStop)
		bolt.Close()
		closeTransport(trans)
		return nil, fmt.Errorf("cluster: %s: %w", what, err)
	}
	existing, err := raft.HasExistingState(logs, n.stable, snaps)
	if err == nil {
		err = n.member.open(filepath.Join(cfg.Dir, memberFile), !existing)
	}
	if err != nil {
		return failed("reading the node's state", err)
	}
	r, err := newRaft(rc, f, logs, n.stable, snaps, n.watch.forRaft())
	if err != nil {
		f.mu.Lock()
		_ = f.closeStores()
		f.mu.Unlock()
		return failed("starting raft", unrestorable(err, raftDir, snaps, logs))
	}
	n.raft = r
	n.state = stateIndex{fsm: f.appliedIndex, raft: r.AppliedIndex, log: logs}
	n.catchUp.bind(n.state.index, r.CurrentTerm, n.noteMember)
	if stream != nil {
		role := func() (uint64, bool) { return r.CurrentTerm(), r.State() == raft.Leader }
		stream.role.Store(&role)
		commit := r.CommitIndex
		stream.commit.Store(&commit)
	}
	if !cfg.SingleWriteEntries {
		n.group = newGrouper(n)
		go n.group.run()
	}
	n.handOverDone = make(chan struct{})
	go n.handOverWhileHalted()
	n.budgetDone = make(chan struct{})
	go n.logBudget(rc.TrailingLogs, n.budgetDone)
	n.janitorStop, n.janitorDone = make(chan struct{}), make(chan struct{})
	if cfg.StoreIdleTimeout > 0 {
		go f.janitor(cfg.StoreIdleTimeout, n.janitorStop, n.janitorDone)
	} else {
		close(n.janitorDone)
	}
	return n, nil
}

// handOverWhileHalted waits for the node to halt (Err); from then until
// Close it hands leadership to a follower whenever it leads (checked
// every HeartbeatTimeout). A halted leader refuses every write, and its
// heartbeats keep the followers from electing another: without handing
// over, one node's local failure (a full disk) would stop the cluster's
// writes until it restarted.
func (n *Node) handOverWhileHalted() {
	defer close(n.handOverDone)
	select {
	case <-n.fsm.halted:
	case <-n.fsm.stop:
		return
	}
	every := n.cfg.HeartbeatTimeout
	if every <= 0 {
		every = time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if n.raft.State() == raft.Leader && n.otherVoter() {
			// Not waited for: raft never answers a request its leader
			// loop had no time to take before shutting down. It fails
			// while no follower can take over (a lone node, or none
			// caught up in time) or one is under way: tried again on
			// the next tick.
			n.raft.LeadershipTransfer()
		}
		select {
		case <-tick.C:
		case <-n.fsm.stop:
			return
		}
	}
}

// otherVoter reports whether the configuration names a voter besides
// this node (one leadership can go to).
func (n *Node) otherVoter() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && string(s.ID) != n.cfg.ID {
			return true
		}
	}
	return false
}

// nodeIDFile, in Dir/raft, names the node whose raft state the
// directory holds.
const nodeIDFile = "node-id"

// claimDir records id as the owner of raftDir's raft state on its first
// Open, and refuses a later Open under another id. Raft's log does not
// say whose it is: a node restarted with another member's id (a copied
// unit file) would vote and replicate as both — counting a vote of its
// own as the other member's, it wins an election alone — and a data root
// copied from another node would pose as it. A directory from before the
// record existed is claimed by its next Open.
func claimDir(raftDir, id string) error {
	path := filepath.Join(raftDir, nodeIDFile)
	b, err := durable.ReadFile(path, 4<<10) // an id; more is not this file
	switch {
	case err == nil:
		if owner := strings.TrimSpace(string(b)); owner != id {
			return fmt.Errorf("cluster: %s holds the raft state of node %q, not %q: start it with its own node id (or, for a new node, an empty data root)", filepath.Dir(raftDir), owner, id)
		}
		return nil
	case errors.Is(err, fs.ErrNotExist):
		if err := durable.WriteFile(path, []byte(id+"\n")); err != nil {
			return fmt.Errorf("cluster: recording this node's id in %s: %w", path, err)
		}
		return nil
	default:
		return fmt.Errorf("cluster: reading %s: %w", path, err)
	}
}

// newRaft is raft.NewRaft with its panics turned into errors: NewRaft
// panics when the log does not go on from the snapshot it restored (its
// newest snapshot damaged, it falls back to the one before, whose
// following entries were trimmed away), instead of returning an error.
// It panics before starting any goroutine of its own.
func newRaft(rc *raft.Config, f raft.FSM, logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore, trans raft.Transport) (r *raft.Raft, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("%v", p)
		}
	}()
	return raft.NewRaft(rc, f, logs, stable, snaps, trans)
}

// unrestorable explains why raft could not start from the node's state
// when a snapshot is the cause: which snapshot cannot be read, and that
// the log does not reach back to the one before it. A node in that state
// cannot catch up on its own (its log no longer says what it
// acknowledged): it must leave the cluster and join again, emptied.
func unrestorable(err error, raftDir string, snaps *raft.FileSnapshotStore, logs raft.LogStore) error {
	metas, lerr := snaps.List()
	if lerr != nil || len(metas) == 0 {
		return err
	}
	var damaged []string
	usable := -1
	for i, m := range metas {
		_, rc, oerr := snaps.Open(m.ID)
		if oerr != nil {
			damaged = append(damaged, fmt.Sprintf("%s (%v)", m.ID, oerr))
			continue
		}
		rc.Close()
		usable = i
		break
	}
	if len(damaged) == 0 {
		return err
	}
	first, _ := logs.FirstIndex()
	why := "no snapshot can be read"
	if usable >= 0 {
		why = fmt.Sprintf("the log starts at entry %d, past the entries that follow the readable snapshot %s (%d)", first, metas[usable].ID, metas[usable].Index)
	}
	return fmt.Errorf("%w: the raft snapshot %s in %s is damaged and %s: this node cannot restore its state. "+
		"Remove it from the cluster (batpak cluster leave ID against a member, or DELETE /v1/cluster/nodes/{id}), move its data root away, and join it again with an empty one (cluster.join)",
		err, strings.Join(damaged, ", "), filepath.Join(raftDir, "snapshots"), why)
}

// openRaftLog opens raft.db and reads its ends. bbolt panics on a damaged
// file (cut short, overwritten) instead of returning an error: the panic
// is turned into an error naming the file, so a damaged node fails Open
// (restore its Dir from a member: remove it and let it rejoin) instead of
// crashing the process.
func openRaftLog(path string) (bolt *raftboltdb.BoltStore, err error) {
	// A file cut short faults on its mmap (SIGBUS) rather than panicking:
	// made a panic on this goroutine while the file is opened and read.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if bolt != nil {
				bolt.Close()
			}
			bolt, err = nil, fmt.Errorf("cluster: the raft log %s is damaged (%v): move it away and let the node rejoin with an empty one (cluster.join)", path, p)
		}
	}()
	bolt, err = raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{Timeout: time.Second}})
	if err != nil {
		return nil, fmt.Errorf("cluster: opening the raft log %s (is another node using it?): %w", path, err)
	}
	first, err := bolt.FirstIndex()
	if err == nil {
		var last uint64
		if last, err = bolt.LastIndex(); err == nil && last > 0 {
			var l raft.Log
			if err = bolt.GetLog(first, &l); err == nil {
				err = bolt.GetLog(last, &l)
			}
		}
	}
	if err != nil {
		bolt.Close()
		return nil, fmt.Errorf("cluster: the raft log %s is damaged: %w", path, err)
	}
	return bolt, nil
}

func setDur(dst *time.Duration, v time.Duration) {
	if v > 0 {
		*dst = v
	}
}

func closeTransport(t raft.Transport) {
	if c, ok := t.(io.Closer); ok {
		c.Close()
	}
}

// Addr is the node's raft address (with Bind "host:0", the port chosen).
func (n *Node) Addr() string { return string(n.trans.LocalAddr()) }

// ID is the node's server id.
func (n *Node) ID() string { return n.cfg.ID }

// Bootstrap makes servers (this node among them) the cluster's first
// configuration. Call it once, on one node of a new cluster; on a node
// with raft state it fails with raft.ErrCantBootstrap.
func (n *Node) Bootstrap(servers ...Server) error {
	var c raft.Configuration
	for _, s := range servers {
		c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Address)})
	}
	return n.raft.BootstrapCluster(c).Error()
}

// Join adds a voting member (leader only: otherwise a *NotLeaderError). It
// returns once the new configuration is committed; the new node then
// catches up from the leader — from a snapshot when the log it needs was
// truncated. The id must pass ValidNodeID; on a TCP transport the address
// must pass ValidAddress and accept a connection — with Config.TLS or
// Config.PeerKey, one that completes the handshake, so a node with another
// CA's certificate or another key is refused too (ErrUnreachable
// otherwise, nothing changed): start the node before it joins.
//
// Joining again is safe: a voter already in the configuration with the
// same id and address is left as it is (nil, nothing proposed). A member
// with the same id at another address, or another id at the same address,
// is a node that came back changed (a new address, a wiped disk with a new
// id): it is removed first, then id is added at addr, so the leader forgets
// what it knew of the old member's log instead of counting it towards a
// quorum. The leader cannot be replaced this way (an error): move
// leadership first. Removing the old member is refused (a *QuorumError,
// nothing changed) when it would leave the cluster without a quorum, as
// Leave's is.
//
// A join is refused too (a *QuorumError, nothing changed) when the voters
// after it would not have a majority able to store new entries counting
// the new node as unable (it has yet to catch up, and may not speak raft
// at all): with a voter down, 3 voters becoming 4 need 3, the new one
// among them. A cluster of one voter, the leader, adding its second is
// the exception (see quorum.go). ForceJoin skips these checks. Errors
// after proposing are Leave's (ErrMembershipUnknown,
// ErrMembershipChanging).
func (n *Node) Join(id, addr string) error { return n.join(id, addr, false) }

// ForceJoin is Join without the quorum guard (for the removals a
// replacement makes too), for when the guard misjudges: the members it
// named are known to be alive and able to write. Dangerous: if the
// voters after the join cannot form a majority without the new node,
// no write commits — this join included — until it has caught up (or
// those members are back); if it never does, the cluster is lost.
func (n *Node) ForceJoin(id, addr string) error { return n.join(id, addr, true) }

func (n *Node) join(id, addr string, force bool) error {
	if err := ValidNodeID(id); err != nil {
		return err
	}
	if addr == "" {
		return errors.New("cluster: Join needs the node's address")
	}
	if n.cfg.Transport == nil {
		if err := ValidAddress(addr); err != nil {
			return err
		}
	}
	if n.raft.State() == raft.Leader && n.cfg.Transport == nil && !n.isMember(id, addr) {
		// A voter nobody answers for counts towards every quorum from
		// the moment it is added: one at a mistyped address takes a
		// one-node cluster down at once, with no leader left to remove it.
		// With TLS or the peer key, the node must also complete the
		// handshake: one that cannot (another CA, another key) would be
		// a voter that never answers all the same.
		c, err := n.stream.dialOnce(raft.ServerAddress(addr), joinDialTimeout)
		if _, plain := n.stream.guard.(plainGuard); err != nil && plain {
			return fmt.Errorf("%w: nothing answers at %s (%v): start node %s first, and check its address", ErrUnreachable, addr, err, id)
		} else if err != nil {
			return fmt.Errorf("%w: the node at %s did not complete the raft handshake (%v): start node %s first, check its address, and give it this cluster's TLS certificates or operator credential", ErrUnreachable, addr, err, id)
		}
		c.Close()
	}
	unlock, f, err := n.beginMembershipChange()
	if err != nil {
		return err
	}
	defer unlock()
	// prev 0: raft checks no index for the first proposal (in raft v1.7.2
	// GetConfiguration leaves its Index 0); lockMembership keeps this
	// node's other changes out meanwhile. The addition after a removal
	// passes the removal's index, which raft does check.
	cur, prev := f.Configuration(), uint64(0)
	var replaced []raft.Server
	for _, s := range cur.Servers {
		sameID, sameAddr := s.ID == raft.ServerID(id), s.Address == raft.ServerAddress(addr)
		switch {
		case !sameID && !sameAddr:
			continue
		case sameID && sameAddr && s.Suffrage == raft.Voter:
			return nil
		case sameID && sameAddr:
			continue // a nonvoter: AddVoter promotes it
		case s.ID == raft.ServerID(n.cfg.ID):
			return fmt.Errorf("cluster: joining %s at %s would replace the leader (%s at %s); transfer leadership first", id, addr, s.ID, s.Address)
		}
		replaced = append(replaced, s)
	}
	if !force {
		after := cur
		for _, s := range replaced {
			after = without(after, s.ID)
		}
		if err := n.quorumWith(after, raft.ServerID(id)); err != nil {
			return err
		}
	}
	for _, s := range replaced {
		if !force {
			if err := n.quorumWithout(cur, s.ID); err != nil {
				return fmt.Errorf("cluster: joining %s at %s would first remove %s at %s: %w", id, addr, s.ID, s.Address, err)
			}
		}
		rf := n.raft.RemoveServer(s.ID, prev, n.timeout)
		if err := n.changed(rf, fmt.Sprintf("removing %s at %s before adding %s at %s", s.ID, s.Address, id, addr)); err != nil {
			return err
		}
		cur, prev = without(cur, s.ID), rf.Index()
	}
	return n.changed(n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), prev, n.timeout),
		fmt.Sprintf("adding %s at %s", id, addr))
}

// without is c less server id.
func without(c raft.Configuration, id raft.ServerID) raft.Configuration {
	out := raft.Configuration{Servers: make([]raft.Server, 0, len(c.Servers))}
	for _, s := range c.Servers {
		if s.ID != id {
			out.Servers = append(out.Servers, s)
		}
	}
	return out
}

// joinDialTimeout bounds Join's check that a new member's address
// answers.
const joinDialTimeout = 3 * time.Second

// ErrUnreachable: Join found nothing listening at the new member's
// address (a TCP transport only), and added nothing.
var ErrUnreachable = errors.New("cluster: the node to join is unreachable")

// HasMember reports whether the node named id is in the cluster's
// configuration as this node knows it (a voter or not).
func (n *Node) HasMember(id string) bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == raft.ServerID(id) {
			return true
		}
	}
	return false
}

// isMember reports whether id at addr is a voter already.
func (n *Node) isMember(id, addr string) bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == raft.ServerID(id) && s.Address == raft.ServerAddress(addr) && s.Suffrage == raft.Voter {
			return true
		}
	}
	return false
}

// MaxNodeIDBytes is the longest node id.
const MaxNodeIDBytes = 128

// ValidNodeID checks a node id (Config.ID, Join): 1..MaxNodeIDBytes bytes
// of UTF-8 without control characters or spaces. An id is named in logs,
// in the admin API and in the server's member records.
func ValidNodeID(id string) error {
	if id == "" || len(id) > MaxNodeIDBytes || !utf8.ValidString(id) {
		return fmt.Errorf("cluster: node id %q: want 1..%d bytes of UTF-8", id, MaxNodeIDBytes)
	}
	for _, r := range id {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return fmt.Errorf("cluster: node id %q: control characters and spaces are not allowed", id)
		}
	}
	return nil
}

// ValidAddress checks a member's raft address on a TCP transport: a
// host:port other nodes can dial (no wildcard address, a port 1..65535).
// A member added at an address nobody answers still counts towards
// every quorum: a typo would leave the cluster one failure short.
func ValidAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return fmt.Errorf("cluster: node address %q: want host:port (its raft address, cluster.bind or cluster.advertise)", addr)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("cluster: node address %q: want a port 1..65535", addr)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("cluster: node address %q: a wildcard address is not one other nodes can dial", addr)
	}
	return nil
}

// Leave removes a member (leader only: otherwise a *NotLeaderError). It
// refuses, proposing nothing, a removal that would leave the cluster
// without a quorum: a *QuorumError when fewer than a majority of the
// voters that would remain stored the entry the leader wrote to probe
// them, within two heartbeat timeouts (see quorum.go; a
// removal of a nonvoter is never refused). Errors after proposing:
// ErrMembershipUnknown when leadership was lost (or the node closed)
// before the removal was known to commit, or it had not committed within
// the apply timeout (Config.ApplyTimeout) — it may or may not take
// effect; ErrMembershipChanging when another membership change was under
// way (nothing changed; retry). A node makes one membership change at a
// time (Join, Leave, ForceLeave): each is judged once the one before it
// has committed, against the configuration that one made.
func (n *Node) Leave(id string) error { return n.leave(id, false) }

// ForceLeave is Leave without the quorum guard, for when the guard
// misjudges: the members it found silent are known to be alive (members
// gone for good are removed first, which the guard accepts). Dangerous: if the voters that remain cannot form a
// majority, the removal never commits, the leader steps down, and the
// cluster takes no write until enough of them come back — if they never
// do, it is lost (see README, "When a quorum is lost for good").
func (n *Node) ForceLeave(id string) error { return n.leave(id, true) }

func (n *Node) leave(id string, force bool) error {
	unlock, f, err := n.beginMembershipChange()
	if err != nil {
		return err
	}
	defer unlock()
	if !force {
		if err := n.quorumWithout(f.Configuration(), raft.ServerID(id)); err != nil {
			return err
		}
	}
	// prevIndex 0: raft checks none (GetConfiguration's Index is always 0
	// in raft v1.7.2); lockMembership keeps this node's other changes out
	// until this one has committed, so the check above judged the
	// configuration raft changes.
	return n.changed(n.raft.RemoveServer(raft.ServerID(id), 0, n.timeout), "removing "+id)
}

// changed waits for a membership change's future f, at most the apply
// timeout once raft has taken it (its enqueue is bounded by the same),
// and maps its error (membershipErr). Past the bound it is
// ErrMembershipUnknown: the change was proposed and may still commit — a
// change whose new quorum cannot store it (its voters down, or unable to
// write their logs) waits for ever, and raft proposes no other meanwhile.
func (n *Node) changed(f raft.Future, change string) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	t := time.NewTimer(n.timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return n.membershipErr(err, change)
	case <-t.C:
		return &timedOutChange{change: change, after: n.timeout}
	}
}

// timedOutChange is a membership change proposed that had not committed
// within the apply timeout while this node still led: it may yet take
// effect. It matches ErrMembershipUnknown.
type timedOutChange struct {
	change string
	after  time.Duration
}

func (e *timedOutChange) Error() string {
	return fmt.Sprintf("cluster: %s was proposed and has not committed within %s (a member it needs is slow, down or cannot store entries); it may yet take effect: the leader's member list says when", e.change, e.after)
}

func (e *timedOutChange) Is(target error) bool { return target == ErrMembershipUnknown }

// beginMembershipChange starts a join or removal on the leader: it takes
// the node's membership token (lockMembership; unlock gives it back) and
// reads the configuration the change is judged against. A
// *NotLeaderError on a follower.
func (n *Node) beginMembershipChange() (unlock func(), f raft.ConfigurationFuture, err error) {
	if n.raft.State() != raft.Leader {
		return nil, nil, n.notLeader()
	}
	unlock, err = n.lockMembership()
	if err != nil {
		return nil, nil, err
	}
	f = n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		unlock()
		return nil, nil, n.configErr(err)
	}
	return unlock, f, nil
}

// lockMembership takes the node's membership token (see Node.changing),
// waiting at most the apply timeout for a change under way on this node
// (ErrMembershipChanging past it, nothing changed; ErrClosed once the
// node closes); unlock gives it back.
//
// raft alone does not keep two changes apart: it proposes a change once
// the one before has committed, but judges neither against the other
// (the prevIndex it can check is one GetConfiguration never gives in
// raft v1.7.2), so two removals each keeping a quorum alone could both
// be proposed and together lose it.
func (n *Node) lockMembership() (unlock func(), err error) {
	t := time.NewTimer(n.timeout)
	defer t.Stop()
	select {
	case n.changing <- struct{}{}:
		return func() { <-n.changing }, nil
	case <-t.C:
		return nil, fmt.Errorf("%w: another membership change on this node has not finished within %s", ErrMembershipChanging, n.timeout)
	case <-n.fsm.stop:
		return nil, ErrClosed
	}
}

// configErr maps an error reading raft's configuration.
func (n *Node) configErr(err error) error {
	if errors.Is(err, raft.ErrRaftShutdown) {
		return ErrClosed
	}
	return err
}

// membershipErr maps the error of a membership change's future (change
// says which): a *NotLeaderError when raft refused it as a follower
// (nothing proposed); ErrMembershipChanging when it was not proposed
// because another change was under way — raft had not committed the
// configuration before it (or this leader's first entry) within the
// node's apply timeout, or, for Join's addition after its removal, the
// configuration changed in between (another leader changed it while this
// node had lost and regained leadership); ErrMembershipUnknown when
// leadership was lost, or raft shut down, after it was proposed.
func (n *Node) membershipErr(err error, change string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout) && n.raft.State() != raft.Leader:
		return n.notLeader()
	case errors.Is(err, raft.ErrEnqueueTimeout),
		// raft's refusal of a change whose prevIndex is not the latest
		// configuration's (it has no sentinel for it): only Join's
		// addition passes one (its removal's index).
		strings.HasPrefix(err.Error(), "configuration changed since"):
		return fmt.Errorf("%w: %s was not proposed (%v)", ErrMembershipChanging, change, err)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, raft.ErrAbortedByRestore):
		return fmt.Errorf("%w: %s (%v)", ErrMembershipUnknown, change, err)
	}
	return fmt.Errorf("cluster: %s: %w", change, err)
}

func (n *Node) notLeader() error {
	addr, id := n.raft.LeaderWithID()
	return &NotLeaderError{Leader: string(addr), LeaderID: string(id)}
}

// Leader returns the leader's address and id as this node knows them;
// empty while there is none.
func (n *Node) Leader() (addr, id string) {
	a, i := n.raft.LeaderWithID()
	return string(a), string(i)
}

// LastContact is when this node, not leading, last heard from a leader
// (raft's heartbeats and log entries); zero if it has not since it
// started. It says nothing while the node leads.
func (n *Node) LastContact() time.Time { return n.raft.LastContact() }

// CaughtUpAt is the latest moment at which this node, not leading, had
// applied everything a leader had committed by then (as the leader
// announced it in a replication request; raft sends one every 50 ms while
// the follower keeps up, whether or not there is anything new); zero if
// it has not since it started. It lags LastContact while the leader is
// not replicating to this node — after the node was unreachable, raft
// keeps sending heartbeats but backs off replicating for up to about
// 10 s — and while the node applies slower than the leader commits (it
// counts what the stores hold, not what raft has queued for them; a
// halted node, Err, never catches up): a
// follower judging requests on its own state (credentials, tenants)
// should do so only while CaughtUpAt is recent. It says nothing while the
// node leads.
func (n *Node) CaughtUpAt() time.Time { return n.catchUp.moment() }

// Term is raft's current term on this node.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leading reports whether this node leads and has applied every entry
// committed before its term began: a new leader holds every committed
// entry in its log but applies those of earlier terms only once an entry
// of its own term commits, so until then its stores (keys, revocations,
// tenants) may lag what the previous leader acknowledged. The first call
// in a term starts a barrier and answers false; a call once the barrier
// is applied answers true for the rest of the term. A request to be
// judged on the leader's state waits for it (a few milliseconds after an
// election). A halted node (Err) is never Leading: its stores lack what
// committed after the entry it halted on.
func (n *Node) Leading() bool {
	if n.raft.State() != raft.Leader || n.fsm.err() != nil {
		return false
	}
	term := n.raft.CurrentTerm()
	if n.leadTerm.Load() == term {
		return true
	}
	if n.leadCheck.Swap(term) != term {
		go func() {
			err := n.raft.Barrier(n.timeout).Error()
			if err == nil && n.fsm.err() == nil && n.raft.CurrentTerm() == term && n.raft.State() == raft.Leader {
				n.leadTerm.Store(term)
				return
			}
			n.leadCheck.CompareAndSwap(term, 0) // the next call tries again
		}()
	}
	return false
}

// Append writes items to tenant as independent appends (each its own
// compare-and-set and idempotency decision, in order) carried by one raft
// entry, and returns one Result per item. See AppendBatch for what is
// fixed before proposing and what the acknowledgement means.
//
// Append and AppendBatch do not ask the store's Admission (the policy
// gate of Config.StoreConfig), nor keep reserved entities and system
// kinds out: they are for trusted callers. Writes on behalf of anyone
// else go through the store, Node.Store(tenant).Append, which is admitted
// first.
func (n *Node) Append(ctx context.Context, tenant string, items ...core.BatchItem) ([]Result, error) {
	return n.propose(ctx, tenant, false, items)
}

// AppendBatch writes items to tenant as one atomic batch
// (core.Store.AppendBatch) carried by one raft entry: every Result has a
// receipt, or every Result carries the batch's refusal.
//
// The leader fixes what replicas could not agree on by themselves — each
// item's event id (unless the caller set Options.ID) and timestamp (unless
// set) — then proposes the entry. The results are returned only after the
// entry is committed (on a majority of nodes' raft logs, synced) and
// applied to this node's store. Errors: a *NotLeaderError on a follower
// (nothing proposed; send it to the leader it names); ErrOutcomeUnknown
// when leadership was lost after proposing, or the node was closed while
// it waited; ctx's error when ctx ends first (the write may still be
// applied); ErrHalted when this node stopped applying; ErrClosed after
// Close. Refused before proposing: an invalid tenant id, and
// more than Config.MaxItems items or Config.MaxBytes of payload
// (ErrTooLarge).
func (n *Node) AppendBatch(ctx context.Context, tenant string, items []core.BatchItem) ([]Result, error) {
	return n.propose(ctx, tenant, true, items)
}

func (n *Node) propose(ctx context.Context, tenant string, batch bool, items []core.BatchItem) ([]Result, error) {
	data, err := n.command(tenant, batch, items)
	if err != nil {
		return nil, err
	}
	return n.proposeWrite(ctx, tenant, data)
}

// command checks a write against the node's limits and state, fixes what
// replicas could not agree on (ids, timestamps) and encodes it.
func (n *Node) command(tenant string, batch bool, items []core.BatchItem) ([]byte, error) {
	if err := validStore(tenant); err != nil {
		return nil, err
	}
	if len(items) > n.cfg.MaxItems {
		return nil, fmt.Errorf("%w: %d items, the limit is %d (Config.MaxItems)", ErrTooLarge, len(items), n.cfg.MaxItems)
	}
	total := 0
	for i := range items {
		total += len(items[i].Payload)
	}
	if total > n.cfg.MaxBytes {
		return nil, fmt.Errorf("%w: %d payload bytes, the limit is %d (Config.MaxBytes)", ErrTooLarge, total, n.cfg.MaxBytes)
	}
	if err := n.canPropose(); err != nil {
		return nil, err
	}
	now := time.Now().UnixMicro()
	c := &command{Tenant: tenant, Batch: batch, Items: make([]wireItem, len(items))}
	for i, it := range items {
		if it.Options.ID.IsZero() {
			it.Options.ID = core.NewEventID()
		}
		if it.Options.Timestamp == 0 {
			it.Options.Timestamp = now
		}
		c.Items[i] = toWire(it)
	}
	return encodeCommand(c)
}

// canPropose refuses a proposal on a halted node, a closed one, or a
// follower.
func (n *Node) canPropose() error {
	if err := n.fsm.err(); err != nil {
		return err
	}
	switch n.raft.State() {
	case raft.Leader:
		return nil
	case raft.Shutdown:
		return ErrClosed
	default:
		return n.notLeader()
	}
}

// apply proposes an encoded command and waits for this node's apply.
func (n *Node) apply(ctx context.Context, data []byte) ([]Result, error) {
	timeout := n.timeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	f := n.raft.Apply(data, timeout)
	err := n.wait(ctx, f)
	if errors.Is(err, ctx.Err()) && ctx.Err() != nil {
		return nil, err
	}
	if err != nil {
		return nil, n.applyErr(err)
	}
	switch resp := f.Response().(type) {
	case []Result:
		return resp, nil
	case error:
		return nil, resp
	default:
		return nil, fmt.Errorf("cluster: unexpected apply response %T", resp)
	}
}

// applyErr maps the error of a proposed entry's future: a
// *NotLeaderError when raft refused it (nothing proposed),
// ErrOutcomeUnknown when leadership was lost or raft shut down after it
// was proposed.
func (n *Node) applyErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout) && n.raft.State() != raft.Leader:
		return n.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w (%v)", ErrOutcomeUnknown, err)
	case errors.Is(err, ErrHalted):
		// Proposed before the node halted: it may commit and be
		// applied on the others.
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
	return err
}

// proposeWrite proposes an encoded write command and waits for its
// results: gathered with other writes into one entry (see grouper), or
// in an entry of its own with Config.SingleWriteEntries.
func (n *Node) proposeWrite(ctx context.Context, tenant string, data []byte) ([]Result, error) {
	if n.group != nil {
		return n.group.apply(ctx, tenant, data)
	}
	return n.apply(ctx, data)
}

// WaitApplied blocks until this node's stores hold every log entry up to
// index (a Result's Index): read-your-writes on any node. It returns ctx's
// error (wrapped, naming both indexes) when ctx ends first, or the halt
// error when the node stopped applying.
func (n *Node) WaitApplied(ctx context.Context, index uint64) error {
	return n.fsm.waitApplied(ctx, index)
}

// AppliedIndex is the last log index applied to this node's stores.
func (n *Node) AppliedIndex() uint64 { return n.fsm.appliedIndex() }

// Barrier waits until this node (the leader) has applied every entry
// committed before the call: after it, a local read is linearizable.
// On a follower, and on a leader that loses its leadership while it
// waits, it returns a *NotLeaderError (a barrier writes nothing a reader
// sees: the read can go to the new leader). It returns ctx's error when
// ctx ends first, and ErrClosed when the node is closed while it waits.
func (n *Node) Barrier(ctx context.Context) error {
	timeout := n.timeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	err := n.wait(ctx, n.raft.Barrier(timeout))
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrEnqueueTimeout) && n.raft.State() != raft.Leader:
		return n.notLeader()
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	}
	return err
}

// wait returns f's error, or ctx's when ctx ends first, or
// raft.ErrRaftShutdown when the node closes first: raft never answers a
// future whose entry was committed but not yet applied when it shut down
// — nor, on a halted node, ever (the halt error then).
func (n *Node) wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.fsm.stop:
		return raft.ErrRaftShutdown
	case <-n.fsm.halted:
		// raft answers an entry once this node applied it: never, now.
		select {
		case err := <-done:
			return err
		default:
			return n.fsm.err()
		}
	}
}

// View runs fn with the tenant's store on this node, for reads; the store
// shows what this node has applied (see WaitApplied). The store is held
// while fn runs (opened first if the node had closed it): it is the
// object Node.Store returns meanwhile, a snapshot restore catches it up
// in place, only DropStore or Close closes it. fn must not keep it after
// returning (hold it with Node.Store for that). It returns ErrNoTenant
// when nothing was applied to the tenant here, ErrClosed after Close, an
// error opening the store, or fn's error.
func (n *Node) View(tenant string, fn func(*core.Store) error) error {
	if err := validStore(tenant); err != nil {
		return err
	}
	e, err := n.fsm.acquire(tenant, false)
	if err != nil {
		return err
	}
	defer e.release()
	return fn(e.s)
}

// StoreStats counts this node's open stores (for metrics): see
// Config.MaxOpenStores and Config.StoreIdleTimeout.
func (n *Node) StoreStats() StoreStats { return n.fsm.storeStats() }

// Tenants lists the tenants this node holds stores for.
func (n *Node) Tenants() ([]string, error) {
	n.fsm.mu.RLock()
	defer n.fsm.mu.RUnlock()
	return tenantDirs(n.fsm.root)
}

// Snapshot takes a raft snapshot now (every tenant store copied with
// core.Store.Snapshot) and truncates raft's log to Config.TrailingLogs
// entries behind it. raft also does this on its own every
// SnapshotInterval once SnapshotThreshold entries have accumulated. A
// halted node (Node.Err) takes none: it returns the halt, since its stores
// may lack the entry raft counts as applied.
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Stats returns raft's counters for this node (state, term,
// last_log_index, commit_index, applied_index, last_snapshot_index, …).
// It adds write_entries and writes_proposed (see WriteStats).
func (n *Node) Stats() map[string]string {
	st := n.raft.Stats()
	entries, writes := n.WriteStats()
	st["write_entries"] = strconv.FormatUint(entries, 10)
	st["writes_proposed"] = strconv.FormatUint(writes, 10)
	return st
}

// WriteStats reports how many raft entries of writes this node proposed
// while leading, and how many writes they carried: their ratio is the
// writes per entry (1 with Config.SingleWriteEntries, which counts
// nothing: both are 0 then).
func (n *Node) WriteStats() (entries, writes uint64) {
	if n.group == nil {
		return 0, 0
	}
	return n.group.entries.Load(), n.group.writes.Load()
}

// Err reports why the node stopped applying the log (an entry in an
// unknown command format, a store it cannot write), or nil. A halted node
// acknowledges nothing more (a write it was waiting for returns
// ErrOutcomeUnknown wrapping the halt) and, leading, hands leadership to
// a follower; restarting it (after fixing the cause, e.g. upgrading)
// rebuilds its stores from raft.
func (n *Node) Err() error { return n.fsm.err() }

// Close stops the node: raft shuts down (a leader steps down without
// handing over), the idle janitor stops, then the stores are closed
// (held ones too: their holders get core.ErrClosed). The node's raft state stays
// in Dir for a restart. Calling Close again returns the first call's error.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.close() })
	return n.closeErr
}

func (n *Node) close() error {
	close(n.fsm.stop)
	if n.stream != nil {
		n.stream.stopDialing() // raft's Shutdown waits for its dialling goroutines
	}
	err := n.raft.Shutdown().Error()
	n.watch.halt()
	close(n.pauseStop)
	<-n.pauseDone
	<-n.handOverDone
	closeTransport(n.trans)
	n.stable.close() // a heartbeat answered now records no term into a closed store
	if e := n.bolt.Close(); err == nil {
		err = e
	}
	close(n.janitorStop)
	<-n.janitorDone
	<-n.budgetDone
	n.fsm.mu.Lock()
	n.fsm.closed = true
	if e := n.fsm.closeStores(); err == nil {
		err = e
	}
	n.fsm.mu.Unlock()
	return err
}
