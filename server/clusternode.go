package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/certroots"
	"github.com/batpak-go/batpak/server/cluster"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/httpapi"
	"github.com/batpak-go/batpak/server/tenancy"
)

// ClusterConfig makes the server one node of a replicated cluster
// (server/cluster): raft replicates every tenant's writes and the control
// plane, and each node's stores are the state machine. Every node needs
// the same operator credential (server.operator_token).
type ClusterConfig struct {
	// NodeID is this node's raft id (cluster.node_id), unique and stable
	// for the cluster's life. Required.
	NodeID string
	// Bind is the node-to-node TCP address (cluster.bind). Default
	// 127.0.0.1:7071. A non-loopback address needs node-to-node TLS
	// (TLSCert, TLSKey, TLSCA) or Config.AllowInsecureRemote.
	Bind string
	// Advertise is the address other nodes dial (cluster.advertise);
	// default Bind's.
	Advertise string
	// URL is this node's API base URL as clients and other nodes reach it
	// (cluster.url), e.g. https://node1.example:7070: the Location of the
	// redirects other nodes send to it while it leads. Default
	// http(s)://<server.listen>; required when server.listen binds every
	// interface (0.0.0.0, [::]): Listen refuses to start without it.
	URL string
	// Bootstrap forms a new cluster of this one node on its first start
	// (cluster.bootstrap); other nodes then join it. Ignored on a node
	// with raft state. Refused together with Join. A node that restarts
	// with no raft state (a wiped disk) must not keep Bootstrap: it would
	// form a second cluster of its own; restart it with Join instead.
	Bootstrap bool
	// Join is the API URL of a member (cluster.join): on a first start (no
	// raft log yet) the node asks it to add this node (the request is
	// redirected to the leader: only a member's 307 NOT_LEADER redirect
	// is followed with the operator credential), retrying until it is a
	// member; once a
	// member, it never asks again, so an operator's removal sticks.
	Join string
	// TLSCert, TLSKey, TLSCA are PEM files for node-to-node mutual TLS
	// (cluster.tls_cert, cluster.tls_key, cluster.tls_ca): all three or
	// none. Peers must present a certificate the CA signed.
	TLSCert, TLSKey, TLSCA string
	// APICA is a PEM file of the CA certificates that members' https
	// certificates (server.tls_cert) chain to (cluster.api_ca), trusted
	// with the system's roots when one member calls another's API: a
	// node asking to join, a follower's console forwarding a change to
	// the leader, the leader's replica check. Default: TLSCA, when set;
	// with neither, the system's roots alone.
	APICA string
	// HeartbeatTimeout, ElectionTimeout and LeaderLeaseTimeout are raft's
	// timings (cluster.heartbeat_timeout, …); defaults 1s, 1s, 500ms.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout time.Duration
	// ReadWait bounds how long a read with min_seq waits for this node to
	// apply that sequence (cluster.read_wait). Default 5s; range up to 1m.
	ReadWait time.Duration
	// SnapshotThreshold and TrailingLogs: see cluster.Config (0: its
	// defaults).
	SnapshotThreshold, TrailingLogs uint64
	// BlobGrace is how old an unreferenced blob (a policy bundle or
	// plugin module in cluster/blobs/ that no live tenant's kept policy
	// revision or plugin version names: a deleted version's, a deleted
	// tenant's) must be before this node removes it
	// (cluster.blob_grace): the age of its last put here, which every
	// upload of the same bytes renews. It covers the time between an
	// upload storing the bytes and the control plane recording the
	// change that references them, so keep it well above the longest
	// upload. Default DefaultBlobGrace (10m); at least 1s.
	BlobGrace time.Duration
	// BlobCollectEvery is how often this node collects unreferenced
	// blobs besides right after a tenant's policy or plugins change or
	// it is deleted (cluster.blob_collect_every). Default
	// DefaultBlobCollectEvery (5m); at least 100ms.
	BlobCollectEvery time.Duration
	// SingleWriteEntries: see cluster.Config (cluster.single_write_entries;
	// default false: the leader gathers writes into shared raft entries).
	// It is the setting for a rolling upgrade from an older version: it
	// also makes a plugin's reset lift the quarantine on the node asked
	// only, instead of recording a plugin.reset change older nodes cannot
	// read (tenantplugin.Options.LocalResets).
	SingleWriteEntries bool
	// PlainRaft turns off the peer-key handshake of a node without TLS
	// (cluster.plain_raft; see cluster.Config.PeerKey): raft then trusts
	// whoever reaches the port. It is the setting for a rolling upgrade
	// from a version without the handshake.
	PlainRaft bool
	// ReplicaCheckEvery is how often the leader compares every member's
	// copy of each tenant's events with its own (cluster.replica_check_every;
	// see the cluster status's replica_check and
	// batpak_cluster_replicas_diverged): each round covers the events
	// appended since the last (in bounded chunks), every sixth round all
	// of them again. Default
	// DefaultReplicaCheckEvery (10m); at least 100ms; negative: off.
	ReplicaCheckEvery time.Duration
	// HealthCheckEvery is how often the leader judges every member's
	// health (cluster.health_check_every; see clusterHealthWatch): a
	// member turning unhealthy is logged, and the judgement is in
	// /metrics. Default DefaultHealthCheckEvery (10s); at least 100ms;
	// negative: off.
	HealthCheckEvery time.Duration
	// LogMaxBytes bounds, roughly, the bytes of raft's log on this node
	// (cluster.log_max_bytes): see cluster.Config.LogMaxBytes. Default
	// cluster.DefaultLogMaxBytes (1 GiB); at least 1 MiB.
	LogMaxBytes int64
}

// membersEntity prefixes the system store's entity of each node's
// records (memberKind): its API URL, so every node can name the leader's
// to clients.
const membersEntity = "node:"

// memberRecord is a node's entry in the members store.
type memberRecord struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	URL     string `json:"url"`
}

// memberKind is a member record's kind: a system kind (category 0x0),
// which the control plane, reading the same store, passes over; a kind of
// an application category would be read as one of its changes (0x1:0x1 is
// tenant.created).
var memberKind = func() core.Kind {
	k, err := core.SystemKind(0xC1)
	if err != nil {
		panic(err)
	}
	return k
}()

// clusterNode is the server's side of its cluster node: the API's
// Cluster, the tenancy Provider.
type clusterNode struct {
	n        *cluster.Node
	cfg      ClusterConfig
	url      string
	sys      *core.Store
	stop     chan struct{}
	done     chan struct{}
	readWait time.Duration
	token    string // the operator credential: join requests carry it
	// memberTLS verifies members' https certificates (cluster.api_ca);
	// nil: the system's roots.
	memberTLS *tls.Config
	// members sends the API's requests to other members (MemberClient).
	members *http.Client
	// https: this node's API is served over https (server.tls_cert, or
	// an https cluster.url): no member is sent the operator credential
	// over plain http (httpapi.MemberURLProblem).
	https bool
	// joining: cluster.join is set and this node has not been a member
	// yet (it started with no raft log); cleared once it is one, so a
	// node the operator removed stays removed.
	joining bool
	// joinRefused receives the refusal of a join that retrying cannot
	// change (this node's operator credential is not the cluster's):
	// Serve ends with it.
	joinRefused chan error
	// orphan: started with no raft log and neither cluster.bootstrap nor
	// cluster.join; run warns about it (every minute) until the node
	// holds raft state or members.
	orphan  bool
	running atomic.Bool

	// plane is the control plane following sys, once the server opened
	// it: Current waits for it to apply what sys holds.
	plane atomic.Pointer[control.Plane]

	// onLead is what a new leader does before it takes requests (set by
	// the server: restore the tenants' budgets from the record); leadPrep
	// is the term it runs for, ledTerm the term it finished for (see
	// IsLeader).
	onLead            atomic.Pointer[func(context.Context) error]
	leadPrep, ledTerm atomic.Uint64

	// replicas is the server's replica checker, once it made one: its
	// report is part of the leader's Status.
	replicas atomic.Pointer[replicaChecker]

	bmu       sync.Mutex
	binflight bool          // a shared barrier is running
	bnext     *barrierRound // the round reads arriving now wait for
}

var (
	_ httpapi.Cluster  = (*clusterNode)(nil)
	_ tenancy.Provider = (*clusterNode)(nil)
)

// openClusterNode opens the raft node under root/cluster.
func (s *Server) openClusterNode(cfg ClusterConfig) (*clusterNode, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("cluster.node_id is required")
	}
	if s.cfg.OperatorToken == "" {
		return nil, errors.New("a cluster node needs the operator credential (server.operator_token, BATPAK_OPERATOR_TOKEN or server.operator_token_file), the same on every node")
	}
	if cfg.Bootstrap && cfg.Join != "" {
		// Bootstrapping wins on a first start, so such a node would form
		// a cluster of its own and never join: two leaders, each
		// acknowledging writes the other never sees.
		return nil, errors.New("cluster.bootstrap and cluster.join exclude each other: bootstrap the first node only, and let the others join it")
	}
	if s.cfg.MaxJSONDepth > core.DefaultMaxJSONDepth {
		// Every replica checks an entry's payloads with the same store
		// settings (a node's own would let replicas refuse what the
		// leader wrote): deeper payloads are refused whatever this says.
		return nil, fmt.Errorf("server.max_json_depth = %d: a cluster node's stores check payloads to depth %d on every node alike; set at most %d", s.cfg.MaxJSONDepth, core.DefaultMaxJSONDepth, core.DefaultMaxJSONDepth)
	}
	if cfg.Bind == "" {
		cfg.Bind = "127.0.0.1:7071"
	}
	if cfg.ReadWait <= 0 {
		cfg.ReadWait = 5 * time.Second
	}
	if cfg.ReadWait > time.Minute {
		return nil, fmt.Errorf("cluster.read_wait is %s, the limit is 1m", cfg.ReadWait)
	}
	if cfg.BlobGrace == 0 {
		cfg.BlobGrace = DefaultBlobGrace
	}
	if cfg.BlobGrace < time.Second {
		return nil, fmt.Errorf("cluster.blob_grace is %s, the least is 1s (an unreferenced blob younger than it is kept; an upload needs the time between storing its bytes and recording them)", cfg.BlobGrace)
	}
	if cfg.BlobCollectEvery == 0 {
		cfg.BlobCollectEvery = DefaultBlobCollectEvery
	}
	if cfg.BlobCollectEvery < 100*time.Millisecond {
		return nil, fmt.Errorf("cluster.blob_collect_every is %s, the least is 100ms", cfg.BlobCollectEvery)
	}
	if cfg.ReplicaCheckEvery == 0 {
		cfg.ReplicaCheckEvery = DefaultReplicaCheckEvery
	}
	if cfg.ReplicaCheckEvery > 0 && cfg.ReplicaCheckEvery < 100*time.Millisecond {
		return nil, fmt.Errorf("cluster.replica_check_every is %s, the least is 100ms (a negative duration turns the check off)", cfg.ReplicaCheckEvery)
	}
	if cfg.HealthCheckEvery == 0 {
		cfg.HealthCheckEvery = DefaultHealthCheckEvery
	}
	if cfg.HealthCheckEvery > 0 && cfg.HealthCheckEvery < 100*time.Millisecond {
		return nil, fmt.Errorf("cluster.health_check_every is %s, the least is 100ms (a negative duration turns the watch off)", cfg.HealthCheckEvery)
	}
	memberTLS, err := loadMemberTLS(cfg)
	if err != nil {
		return nil, err
	}
	cc := cluster.Config{ID: cfg.NodeID, Dir: filepath.Join(s.cfg.Root, "cluster"), Bind: cfg.Bind, Advertise: cfg.Advertise,
		HeartbeatTimeout: cfg.HeartbeatTimeout, ElectionTimeout: cfg.ElectionTimeout, LeaderLeaseTimeout: cfg.LeaderLeaseTimeout,
		SnapshotThreshold: cfg.SnapshotThreshold, TrailingLogs: cfg.TrailingLogs, SingleWriteEntries: cfg.SingleWriteEntries,
		LogMaxBytes: cfg.LogMaxBytes,
		// The single server's bounds on open tenant stores apply to the
		// node's stores too: followers open stores when applying, with no
		// request (and no registry lease) asking for them.
		MaxOpenStores: s.cfg.MaxOpenTenants, StoreIdleTimeout: s.cfg.TenantIdleTimeout,
		StoreConfig: s.clusterStoreConfig, Logger: s.cfg.Logger}
	switch n := btoi(cfg.TLSCert != "") + btoi(cfg.TLSKey != "") + btoi(cfg.TLSCA != ""); n {
	case 0:
	case 3:
		t, err := cluster.LoadTLS(cfg.TLSCert, cfg.TLSKey, cfg.TLSCA, true)
		if err != nil {
			return nil, fmt.Errorf("cluster.tls_*: %w", err)
		}
		cc.TLS = t
	default:
		return nil, errors.New("cluster.tls_cert, cluster.tls_key and cluster.tls_ca go together: set all three or none")
	}
	if cc.TLS == nil && !cfg.PlainRaft {
		// Without TLS every raft connection proves both ends hold the
		// operator credential every node is configured with (a key
		// derived from it): a process that reaches the port without it —
		// another user's on a shared host — cannot speak raft.
		cc.PeerKey = peerKey(s.cfg.OperatorToken)
	}
	if cc.TLS == nil && !s.cfg.AllowInsecureRemote && !isLoopback(cfg.Bind) {
		// Plain raft trusts every peer that reaches the port: it could
		// append to the log, win an election or change the membership.
		return nil, fmt.Errorf("cluster.bind = %s is not a loopback address and node-to-node TLS is not configured (anyone reaching the port could write to every tenant): set cluster.tls_cert, cluster.tls_key and cluster.tls_ca, or server.allow_insecure_remote: true on a private network", cfg.Bind)
	}
	n, err := cluster.Open(cc)
	if err != nil {
		return nil, err
	}
	c := &clusterNode{n: n, cfg: cfg, token: s.cfg.OperatorToken, url: strings.TrimRight(cfg.URL, "/"), stop: make(chan struct{}), done: make(chan struct{}), readWait: cfg.ReadWait, joinRefused: make(chan error, 1),
		memberTLS: memberTLS, members: newMemberClient(memberTLS),
		https: s.cfg.TLSCert != "" || strings.HasPrefix(strings.ToLower(cfg.URL), "https:")}
	c.joining = cfg.Join != "" && n.Status().LastLogIndex == 0
	c.orphan = !cfg.Bootstrap && cfg.Join == "" && n.Status().LastLogIndex == 0
	if cfg.Bootstrap && n.Status().LastLogIndex == 0 {
		if err := n.Bootstrap(cluster.Server{ID: cfg.NodeID, Address: n.Addr()}); err != nil {
			n.Close()
			return nil, fmt.Errorf("cluster.bootstrap: %w", err)
		}
	}
	if c.sys, err = n.Store(cluster.SystemStore); err != nil {
		n.Close()
		return nil, err
	}
	return c, nil
}

// peerKey is the raft peer key of a cluster whose nodes share the
// operator credential token (HMAC-SHA256 under the token of a fixed
// label: the key reveals nothing of the token).
func peerKey(token string) []byte {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("batpak cluster raft peer key v1"))
	return m.Sum(nil)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// clusterStoreConfig is the config of a store the node holds: the
// control plane's and the members' like the single server's system
// store, a tenant's like its own (admitted by the tenant's policies, when
// this node takes a write). Stores are not synced: raft's log is.
func (s *Server) clusterStoreConfig(name, dir string) core.Config {
	var c core.Config
	if strings.HasPrefix(name, "_") {
		c = core.DefaultConfig(dir)
		c.SegmentMaxBytes = 16 << 20
		c.FDBudget = 8
	} else {
		c = tenancy.StoreConfig(dir, false)
		c.Admission = &lazyAdmission{s: s, tenant: name}
		c.ProjectionCache = s.states.Tenant(name)
	}
	c.Logger = s.cfg.Logger
	c.Sync.EveryNEvents, c.Sync.Interval = 0, 0
	return c
}

// lazyAdmission asks the tenant's policies once the server has them (raft
// may open a store while the server starts; applies never ask).
type lazyAdmission struct {
	s      *Server
	tenant string
	a      atomic.Pointer[core.Admission]
}

func (l *lazyAdmission) get() core.Admission {
	if a := l.a.Load(); a != nil {
		return *a
	}
	p := l.s.policiesReady.Load()
	if p == nil {
		return nil
	}
	a := p.Admission(l.tenant, l.s.gate)
	l.a.Store(&a)
	return a
}

// Judging implements core.SwitchedAdmission.
func (l *lazyAdmission) Judging() bool {
	a := l.get()
	if a == nil {
		return true
	}
	if sw, ok := a.(core.SwitchedAdmission); ok {
		return sw.Judging()
	}
	return true
}

// Admit implements core.Admission.
func (l *lazyAdmission) Admit(ctx context.Context, p *core.Proposal) error {
	a := l.get()
	if a == nil {
		return errors.New("server: starting: policies are not loaded yet; retry")
	}
	return a.Admit(ctx, p)
}

// AdmitItems implements core.ItemsAdmission: the items in one call when
// the admission takes them so, else one Admit each.
func (l *lazyAdmission) AdmitItems(ctx context.Context, ps []*core.Proposal) error {
	a := l.get()
	if a == nil {
		return errors.New("server: starting: policies are not loaded yet; retry")
	}
	if ia, ok := a.(core.ItemsAdmission); ok {
		return ia.AdmitItems(ctx, ps)
	}
	for i, p := range ps {
		if err := a.Admit(ctx, p); err != nil {
			return &core.BatchItemError{Index: i, Err: err}
		}
	}
	return nil
}

// run keeps this node's member record current while it leads, and, on a
// first start, asks cluster.join to add it until it is a member (only
// then: a node removed later is not added back by itself).
func (c *clusterNode) run(logf func(string, ...any)) {
	defer close(c.done)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	lastJoin, lastOrphan := time.Time{}, time.Time{}
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		st := c.n.Status()
		if c.orphan && st.LastLogIndex == 0 && len(st.Servers) == 0 {
			if time.Since(lastOrphan) > time.Minute {
				lastOrphan = time.Now()
				logf("cluster: this node has no raft state and was started with neither cluster.bootstrap nor cluster.join, so it belongs to no cluster and serves nothing until a member adds it: restart it with --cluster-join <a member's API URL> (or --cluster-bootstrap for the first node of a new cluster), or run `batpak cluster join "+c.cfg.NodeID+" "+st.Address+" --url <this node's API URL>` against a member", "node", c.cfg.NodeID)
			}
		} else {
			c.orphan = false
		}
		if st.State == "leader" {
			if rec, ok := c.member(c.cfg.NodeID); !ok || rec.URL != c.url || rec.Address != st.Address {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if err := c.recordMember(ctx, memberRecord{ID: c.cfg.NodeID, Address: st.Address, URL: c.url}); err != nil {
					logf("cluster: recording this node's URL", "err", err)
				}
				cancel()
			}
		}
		member := false
		for _, m := range st.Servers {
			member = member || m.ID == c.cfg.NodeID
		}
		if member {
			c.joining = false
		}
		if c.joining && time.Since(lastJoin) > 2*time.Second {
			lastJoin = time.Now()
			if err := c.askToJoin(st.Address); errors.Is(err, errJoinRefused) {
				c.joining = false
				select {
				case c.joinRefused <- err:
				default:
				}
			} else if err != nil {
				logf("cluster: joining through "+c.cfg.Join, "err", err)
			} else {
				c.joining = false // the leader added it: a member now
			}
		}
	}
}

// errJoinRefused: cluster.join refused this node's credential; asking
// again cannot help.
var errJoinRefused = errors.New("cluster: the join was refused")

// askToJoin asks cluster.join to add this node: errJoinRefused when its
// operator credential is refused (401, 403), another error (retried)
// otherwise.
func (c *clusterNode) askToJoin(addr string) error {
	body, _ := json.Marshal(map[string]string{"id": c.cfg.NodeID, "address": addr, "url": c.url})
	req, err := http.NewRequest("POST", strings.TrimRight(c.cfg.Join, "/")+"/v1/cluster/nodes", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	cl := &http.Client{Timeout: 10 * time.Second, CheckRedirect: joinRedirect}
	if c.memberTLS != nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = c.memberTLS.Clone()
		cl.Transport = t
		defer t.CloseIdleConnections()
	}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return fmt.Errorf("%w: %s answered %s: every node of a cluster takes the same operator credential (server.operator_token, BATPAK_OPERATOR_TOKEN or server.operator_token_file): start this node with the cluster's", errJoinRefused, c.cfg.Join, resp.Status)
	}
	if resp.StatusCode/100 != 2 {
		var p struct{ Code, Detail string }
		if json.Unmarshal(msg, &p) == nil && p.Code != "" {
			return fmt.Errorf("%s: %s: %s (retrying)", resp.Status, p.Code, p.Detail)
		}
		return fmt.Errorf("%s: %s (retrying)", resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// joinRedirect follows a member's redirect of a join request to its
// leader with the operator credential — a 307 or 308 whose body is a
// NOT_LEADER problem, nothing else (a cluster.join that redirects
// elsewhere gets no credential to hand on) —, at most 3 hops, and never
// from https to plain http (the credential would cross the network in
// clear).
func joinRedirect(r *http.Request, via []*http.Request) error {
	if len(via) > 3 {
		return errors.New("too many redirects")
	}
	if !leaderRedirect(r.Response) {
		return fmt.Errorf("refusing the redirect from %s to %s: not a cluster member's redirect to its leader (a 307 NOT_LEADER problem), and the request carries the operator credential", via[len(via)-1].URL.Redacted(), r.URL.Redacted())
	}
	for _, v := range via {
		if v.URL.Scheme == "https" && r.URL.Scheme != "https" {
			return fmt.Errorf("refusing the redirect from %s to %s: it leaves https, and the request carries the operator credential", v.URL.Redacted(), r.URL.Redacted())
		}
	}
	r.Header.Set("Authorization", via[0].Header.Get("Authorization"))
	return nil
}

// leaderRedirect reports whether res is a member's redirect to its
// leader: 307 or 308 with a NOT_LEADER problem (it reads at most 4 KiB of
// the body, which the client then discards).
func leaderRedirect(res *http.Response) bool {
	if res == nil || (res.StatusCode != http.StatusTemporaryRedirect && res.StatusCode != http.StatusPermanentRedirect) {
		return false
	}
	var p struct{ Code string }
	b, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	return json.Unmarshal(b, &p) == nil && p.Code == "NOT_LEADER"
}

// member is a node's latest record.
func (c *clusterNode) member(id string) (memberRecord, bool) {
	evs, err := c.sys.Stream(membersEntity + id)
	if err != nil || len(evs) == 0 {
		return memberRecord{}, false
	}
	var rec memberRecord
	if json.Unmarshal(evs[len(evs)-1].Payload, &rec) != nil {
		return memberRecord{}, false
	}
	return rec, true
}

// memberURL is the API URL of member id, and whether id is a member of
// the cluster now (its raft configuration) with a URL on record (the
// console relays a session's requests to the node it lives on).
func (c *clusterNode) memberURL(id string) (string, bool) {
	if !c.n.HasMember(id) {
		return "", false
	}
	rec, ok := c.member(id)
	return rec.URL, ok && rec.URL != ""
}

// recordMember appends a node's record (leader only).
func (c *clusterNode) recordMember(ctx context.Context, rec memberRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = c.sys.AppendSystem(ctx, core.Coordinate{Entity: membersEntity + rec.ID, Scope: "cluster"}, memberKind, b, core.AppendOptions{})
	return err
}

// IsLeader implements httpapi.Cluster: this node leads, has applied
// everything committed before its term (cluster.Node.Leading), so that
// it judges requests on the state the previous leader acknowledged, and
// has done what a new leader does first (onLead: its control plane
// caught up and the tenants' budgets charged with what they spent under
// earlier leaders). The first call in a term that finds it Leading starts
// onLead and answers false (the API answers 503 NOT_LEADER: retry); once
// onLead succeeded it answers true for the rest of the term.
func (c *clusterNode) IsLeader() bool {
	if !c.n.Leading() {
		return false
	}
	term := c.n.Term()
	if c.ledTerm.Load() == term {
		return true
	}
	if c.leadPrep.Swap(term) != term {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := errors.New("the server is still starting")
			if f := c.onLead.Load(); f != nil {
				err = (*f)(ctx)
			}
			if err == nil && c.n.Term() == term && c.n.Leading() {
				c.ledTerm.Store(term)
				return
			}
			c.leadPrep.CompareAndSwap(term, 0) // the next call tries again
		}()
	}
	return false
}

// currentFor is how many heartbeat timeouts a follower may go without
// catching up with a leader before its control plane no longer counts as
// current (see Current): raft's followers stand for election after one,
// so a node still without a leader after several is cut off, not in an
// ordinary failover.
const currentFor = 5

// Current implements httpapi.Cluster: this node leads (Leading: it has
// applied everything earlier terms committed), or it held
// everything a leader had committed at some moment within the last
// currentFor heartbeat timeouts (cluster.Node.CaughtUpAt; 5s with raft's
// default 1s). Hearing from a leader is not enough: a node restarted
// after an outage hears the leader's heartbeats for seconds before the
// leader resumes replicating to it. A node behind for longer may have
// missed a key's revocation or a tenant's deletion: the API then sends
// tenant requests to the leader.
//
// Its control plane must also have applied what its system store holds:
// the plane follows the store a moment behind (milliseconds), and a
// revocation the store holds must not be honoured meanwhile. Current
// waits up to planeWait for that, then answers false.
func (c *clusterNode) Current() bool {
	if c.n.IsLeader() {
		// Only once it applied what earlier terms committed: elected
		// right after a restart, its stores hold its last snapshot's
		// state until then (it answers 503 NOT_LEADER meanwhile, see
		// Leader).
		return c.n.Leading() && c.planeCurrent()
	}
	hb := c.cfg.HeartbeatTimeout
	if hb <= 0 {
		hb = time.Second
	}
	at := c.n.CaughtUpAt()
	return !at.IsZero() && time.Since(at) <= currentFor*hb && c.planeCurrent()
}

// planeWait bounds how long Current waits for the control plane to apply
// what the system store holds.
const planeWait = 200 * time.Millisecond

// planeCurrent reports whether the control plane has applied every event
// the system store held when it was called, waiting up to planeWait.
func (c *clusterNode) planeCurrent() bool {
	p := c.plane.Load()
	if p == nil {
		return false // the server has not opened it yet
	}
	held := c.sys.Usage().GlobalSequence
	if p.Applied() >= held {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), planeWait)
	defer cancel()
	return p.WaitApplied(ctx, held) == nil
}

// Leader implements httpapi.Cluster. A leader that has not yet applied
// what earlier terms committed (see IsLeader) names no URL, so the API
// answers 503 NOT_LEADER (retry) instead of redirecting to itself.
func (c *clusterNode) Leader() (string, string) {
	_, id := c.n.Leader()
	if id == "" {
		return "", ""
	}
	if id == c.cfg.NodeID && !c.IsLeader() {
		return "", id
	}
	rec, ok := c.member(id)
	if !ok {
		return "", id
	}
	return rec.URL, id
}

// Barrier implements httpapi.Cluster. Concurrent linearizable reads
// share barriers: one raft barrier is in flight at a time, and a read
// arriving meanwhile waits for the next one (which starts after it
// arrived, so it still sees everything committed before it). A flood of
// linearizable reads thus costs the cluster at most one barrier entry per
// quorum round, not one each.
func (c *clusterNode) Barrier(ctx context.Context) error {
	c.bmu.Lock()
	if c.bnext == nil {
		c.bnext = &barrierRound{done: make(chan struct{})}
	}
	r := c.bnext
	if !c.binflight {
		c.startBarrierLocked()
	}
	c.bmu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// barrierRound is one shared raft barrier and the reads waiting for it.
type barrierRound struct {
	done chan struct{}
	err  error
}

// startBarrierLocked runs the pending round; the caller holds bmu.
func (c *clusterNode) startBarrierLocked() {
	r := c.bnext
	c.bnext, c.binflight = nil, true
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r.err = c.n.Barrier(ctx)
		cancel()
		close(r.done)
		c.bmu.Lock()
		c.binflight = false
		if c.bnext != nil {
			c.startBarrierLocked()
		}
		c.bmu.Unlock()
	}()
}

// WaitSequence implements httpapi.Cluster: the store holds seq once its
// log end passed it.
func (c *clusterNode) WaitSequence(ctx context.Context, _ string, s *core.Store, seq uint64) error {
	for delay := 500 * time.Microsecond; s.Usage().GlobalSequence <= seq; delay = min(2*delay, 20*time.Millisecond) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
	return nil
}

// ReadWait implements httpapi.Cluster.
func (c *clusterNode) ReadWait() time.Duration { return c.readWait }

// Removed implements httpapi.Cluster.
func (c *clusterNode) Removed() bool { return c.n.Removed() }

// Status implements httpapi.Cluster.
func (c *clusterNode) Status(health *cluster.Health) any {
	st := c.n.Status()
	type member struct {
		cluster.Member
		URL string `json:"url,omitempty"`
	}
	ms := make([]member, 0, len(st.Servers))
	for _, m := range st.Servers {
		rec, _ := c.member(m.ID)
		ms = append(ms, member{Member: m, URL: rec.URL})
	}
	var check *replicaCheckReport
	if rc := c.replicas.Load(); rc != nil && st.State == "leader" {
		rep := rc.status()
		check = &rep
	}
	return struct {
		cluster.Status
		URL     string   `json:"url"`
		Members []member `json:"members"`
		// ReplicaCheck is the leader's automatic replica check
		// (replicaChecker); absent on other nodes.
		ReplicaCheck *replicaCheckReport `json:"replica_check,omitempty"`
		// Health is every member's health, from its own view (?nodes=all).
		Health *cluster.Health `json:"health,omitempty"`
	}{st, c.url, ms, check, health}
}

// NodeStatus implements httpapi.Cluster.
func (c *clusterNode) NodeStatus() cluster.Status { return c.n.Status() }

// Members implements httpapi.Cluster: the raft configuration's members,
// each with the API URL of its latest record.
func (c *clusterNode) Members() []httpapi.Member {
	st := c.n.Status()
	ms := make([]httpapi.Member, 0, len(st.Servers))
	for _, m := range st.Servers {
		rec, _ := c.member(m.ID)
		ms = append(ms, httpapi.Member{ID: m.ID, URL: rec.URL, Self: m.ID == c.cfg.NodeID, Voter: m.Suffrage == "voter"})
	}
	return ms
}

// MemberClient implements httpapi.Cluster.
func (c *clusterNode) MemberClient() *http.Client { return c.members }

// newMemberClient is the client of the requests the API sends other
// members on a caller's behalf: their certificates verified with tlsc
// (nil: the system's roots), no redirect followed (a redirect is not a
// member's answer, and the caller's credential stays where it was sent),
// a few idle connections kept per member.
func newMemberClient(tlsc *tls.Config) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSHandshakeTimeout:    5 * time.Second,
			TLSClientConfig:        tlsc.Clone(),
			ResponseHeaderTimeout:  httpapi.MemberAskTimeout,
			MaxResponseHeaderBytes: 64 << 10,
			MaxIdleConnsPerHost:    2,
			IdleConnTimeout:        time.Minute,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// AddNode implements httpapi.Cluster: raft membership, then the record.
// A join that would replace a member — its id at another address, or its
// address under another id — removes that member first; unless replace
// is set it is refused (control.ErrExists), so a mistyped join or a node
// started with a copied node id cannot take a healthy member out. A join
// after which the voters would have no majority able to store new
// entries, the new node not counted, is refused unless force is set
// (cluster.Node.Join, ForceJoin).
func (c *clusterNode) AddNode(ctx context.Context, id, addr, url string, replace, force bool) error {
	if !replace {
		for _, m := range c.n.Status().Servers {
			if (m.ID == id) != (m.Address == addr) {
				return fmt.Errorf("%w: member %s at %s would be replaced by node %s at %s; join with replace to do it (remove the old member first when it is alive)",
					control.ErrExists, m.ID, m.Address, id, addr)
			}
		}
	}
	join := c.n.Join
	if force {
		join = c.n.ForceJoin
	}
	if err := join(id, addr); err != nil {
		return err
	}
	return c.recordMember(ctx, memberRecord{ID: id, Address: addr, URL: strings.TrimRight(url, "/")})
}

// RemoveNode implements httpapi.Cluster: an id that is not a member
// is control.ErrNotFound (404), not a silent success — a mistyped removal
// in the disk replacement steps would let the wiped node rejoin as the
// member it was. Removing the last voter is refused (409), force or not;
// a removal leaving the cluster without a majority of reachable voters is
// refused unless force is set (cluster.Node.Leave, ForceLeave).
func (c *clusterNode) RemoveNode(_ context.Context, id string, force bool) error {
	if c.n.IsLeader() {
		member, voters := false, 0
		for _, m := range c.n.Status().Servers {
			member = member || m.ID == id
			if m.Suffrage == "voter" && m.ID != id {
				voters++
			}
		}
		if !member {
			return fmt.Errorf("%w: node %q is not a member of the cluster (GET /v1/cluster lists them)", control.ErrNotFound, id)
		}
		if voters == 0 {
			return fmt.Errorf("%w: node %q is the cluster's last voting member: a cluster needs one (join another node first)", control.ErrExists, id)
		}
	}
	if force {
		return c.n.ForceLeave(id)
	}
	return c.n.Leave(id)
}

// ControlStore implements httpapi.Cluster.
func (c *clusterNode) ControlStore() *core.Store { return c.sys }

// StoreBorn implements httpapi.Cluster.
func (c *clusterNode) StoreBorn(tenant string) uint64 { return c.n.Mark(tenant).Born }

// Open implements tenancy.Provider: the node's store, held until the
// registry's matching Release.
func (c *clusterNode) Open(id string, _ core.Config) (*core.Store, error) { return c.n.Store(id) }

// Release implements tenancy.Provider: it gives the node's store back
// (cluster.Node.ReleaseStore); the node closes it once nothing else holds
// it and it has been idle for server.tenant_idle_timeout, or when it needs
// the room under server.max_open_tenants. A store the node dropped or
// closed meanwhile has nothing to give back.
func (c *clusterNode) Release(_ string, s *core.Store) error {
	c.n.ReleaseStore(s)
	return nil
}

// Drop implements tenancy.Provider: every node removes the tenant's store
// (cluster.Node.DropStore; the leader proposes it).
func (c *clusterNode) Drop(ctx context.Context, id string) error { return c.n.DropStore(ctx, id) }

// close stops the member loop (if it runs) and the node, its stores
// with it.
func (c *clusterNode) close() error {
	close(c.stop)
	if c.running.Load() {
		<-c.done
	}
	c.members.CloseIdleConnections()
	return c.n.Close()
}

// clusterStoreMetrics exports the node's open-store counters
// (cluster.Node.StoreStats) and its write-group counters
// (cluster.Node.WriteStats) beside the registry's batpak_open_tenants: on
// a cluster node the node's stores are what holds memory and file
// descriptors (followers open stores when applying, with no request).
type clusterStoreMetrics struct{ n *cluster.Node }

var (
	clusterOpenStoresDesc = prometheus.NewDesc("batpak_cluster_open_stores",
		"Stores (tenants' and the control plane's) this cluster node has open now, opening and closing included.", nil, nil)
	clusterStoresInUseDesc = prometheus.NewDesc("batpak_cluster_stores_in_use",
		"Open stores held now (leased by the server, read, or being written by raft's apply): never closed while held.", nil, nil)
	clusterStoreOpensDesc = prometheus.NewDesc("batpak_cluster_store_opens_total",
		"Stores this cluster node opened (reopens after an idle close or an eviction included).", nil, nil)
	clusterStoreIdleClosesDesc = prometheus.NewDesc("batpak_cluster_store_idle_closes_total",
		"Stores this cluster node closed after server.tenant_idle_timeout unused.", nil, nil)
	clusterStoreEvictionsDesc = prometheus.NewDesc("batpak_cluster_store_evictions_total",
		"Unused stores this cluster node closed to stay within server.max_open_tenants.", nil, nil)
	clusterStoreOverBoundDesc = prometheus.NewDesc("batpak_cluster_store_opens_over_bound_total",
		"Stores opened beyond server.max_open_tenants because every open store was in use.", nil, nil)
	clusterWriteEntriesDesc = prometheus.NewDesc("batpak_cluster_write_entries_total",
		"Raft entries of writes this node proposed while leading (writes proposed together share one; 0 with cluster.single_write_entries).", nil, nil)
	clusterWritesProposedDesc = prometheus.NewDesc("batpak_cluster_writes_proposed_total",
		"Writes (appends, batches) those entries carried: divided by batpak_cluster_write_entries_total, the writes per raft entry.", nil, nil)
)

// Describe implements prometheus.Collector.
func (clusterStoreMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{clusterOpenStoresDesc, clusterStoresInUseDesc, clusterStoreOpensDesc,
		clusterStoreIdleClosesDesc, clusterStoreEvictionsDesc, clusterStoreOverBoundDesc, clusterWriteEntriesDesc, clusterWritesProposedDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one StoreStats per scrape, so
// the series agree with each other.
func (m clusterStoreMetrics) Collect(ch chan<- prometheus.Metric) {
	st := m.n.StoreStats()
	ch <- prometheus.MustNewConstMetric(clusterOpenStoresDesc, prometheus.GaugeValue, float64(st.Open))
	ch <- prometheus.MustNewConstMetric(clusterStoresInUseDesc, prometheus.GaugeValue, float64(st.InUse))
	ch <- prometheus.MustNewConstMetric(clusterStoreOpensDesc, prometheus.CounterValue, float64(st.Opens))
	ch <- prometheus.MustNewConstMetric(clusterStoreIdleClosesDesc, prometheus.CounterValue, float64(st.IdleCloses))
	ch <- prometheus.MustNewConstMetric(clusterStoreEvictionsDesc, prometheus.CounterValue, float64(st.Evictions))
	ch <- prometheus.MustNewConstMetric(clusterStoreOverBoundDesc, prometheus.CounterValue, float64(st.OverBound))
	entries, writes := m.n.WriteStats()
	ch <- prometheus.MustNewConstMetric(clusterWriteEntriesDesc, prometheus.CounterValue, float64(entries))
	ch <- prometheus.MustNewConstMetric(clusterWritesProposedDesc, prometheus.CounterValue, float64(writes))
}

// loadMemberTLS is the client configuration a member calls other members'
// https APIs with: the system's roots plus cluster.api_ca's (or
// cluster.tls_ca's) CA certificates; nil when neither is set.
func loadMemberTLS(cfg ClusterConfig) (*tls.Config, error) {
	file, key := cfg.APICA, "cluster.api_ca"
	if file == "" {
		file, key = cfg.TLSCA, "cluster.tls_ca"
	}
	if file == "" {
		return nil, nil
	}
	roots, err := certroots.Load(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, nil
}
