package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
	"github.com/batpak-go/batpak/server/httpapi"
)

// fakeReplicas is a leader with one tenant store and members served by
// httptest servers that answer digests of the same store, each as its
// mode says.
type fakeReplicas struct {
	s       *core.Store
	lead    bool
	term    uint64
	https   bool
	born    uint64   // the leader's store's birth index
	gone    bool     // the tenant's store is gone
	names   []string // the tenants (default acme), all with the store s
	opened  int      // inspect calls
	members []replicaPeer

	mu     sync.Mutex
	mode   map[string]string   // member → "same", "different", "damaged", "busy", "redirect", "lie", "old" (another incarnation), "hang"
	asked  map[string][]string // member → "from-upto" asked, in order
	tokens map[string]string   // member → Authorization it got
}

func (f *fakeReplicas) leading() (bool, uint64) { return f.lead, f.term }
func (f *fakeReplicas) self() (string, bool)    { return "n1", f.https }
func (f *fakeReplicas) peers() []replicaPeer    { return f.members }
func (f *fakeReplicas) tenants() []string {
	if f.names != nil {
		return slices.Clone(f.names)
	}
	return []string{"acme"}
}
func (f *fakeReplicas) mark(string) cluster.StoreMark {
	return cluster.StoreMark{Born: f.born, Wrote: f.s.Usage().GlobalSequence + 1}
}
func (f *fakeReplicas) inspect(_ string, fn func(*core.Store) error) error {
	f.opened++
	if f.gone {
		return cluster.ErrNoTenant
	}
	return fn(f.s)
}

// member starts a member id answering digests of f.s.
func (f *fakeReplicas) member(t *testing.T, id string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		from, _ := strconv.ParseUint(q.Get("from"), 10, 64)
		upto, _ := strconv.ParseUint(q.Get("upto"), 10, 64)
		f.mu.Lock()
		mode := f.mode[id]
		f.asked[id] = append(f.asked[id], fmt.Sprintf("%d-%d", from, upto))
		f.tokens[id] = r.Header.Get("Authorization")
		f.mu.Unlock()
		if !strings.HasPrefix(r.URL.Path, "/v1/admin/tenants/") || !strings.HasSuffix(r.URL.Path, "/digest") {
			http.Error(w, "path "+r.URL.Path, 404)
			return
		}
		d, err := cluster.Digest(r.Context(), f.s, from, upto)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		d.Born = f.born
		switch mode {
		case "old":
			d.Born, d.Digest = f.born-1, strings.Repeat("1", 64)
		case "hang":
			<-r.Context().Done()
			return
		case "fail-t0":
			if strings.Contains(r.URL.Path, "/t0/") {
				w.WriteHeader(500)
				w.Write([]byte(`{"code":"INTERNAL","detail":"opening tenant t0: permission denied"}`))
				return
			}
		case "different":
			d.Digest = strings.Repeat("0", 64)
		case "damaged":
			d.Digest, d.Damaged = "", "corrupt segment: event frame fails its checksum"
		case "busy":
			w.WriteHeader(503)
			w.Write([]byte(`{"code":"BUSY","detail":"this node computes one digest at a time; retry"}`))
			return
		case "redirect":
			http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", http.StatusTemporaryRedirect)
			return
		case "lie":
			d.From++
		}
		json.NewEncoder(w).Encode(d)
	}))
	t.Cleanup(srv.Close)
	f.members = append(f.members, replicaPeer{id: id, url: srv.URL})
	return srv
}

func (f *fakeReplicas) set(id, mode string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mode[id] = mode
}

// take returns and forgets the ranges member id was asked.
func (f *fakeReplicas) take(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := strings.Join(f.asked[id], ",")
	f.asked[id] = nil
	return a
}

func appendN(t *testing.T, s *core.Store, n int) {
	t.Helper()
	coord, _ := core.NewCoordinate("order:1", "shop")
	for i := range n {
		if _, err := s.Append(context.Background(), coord, core.MustKind(1, 1), []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReplicaCheckRounds: each round asks every member for the events
// appended since its last same comparison (all of them in the first round
// and every sixth after it); a tenant nothing was written to is not
// opened; a different or damaged copy is an alarm (logged, in the status
// and the gauge) and is compared from the first event until a pass from
// it finds the copy the same; a member that is busy, redirects, answers
// another range or holds another incarnation of the tenant is not
// compared and raises nothing (a busy one is not asked again that round);
// an alarm for a member removed goes; an https node sends nothing to a
// plain-http member; a node that stops leading reports nothing and
// forgets everything.
func TestReplicaCheckRounds(t *testing.T) {
	s, err := core.Open(core.DefaultConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f := &fakeReplicas{s: s, lead: true, term: 3, born: 7,
		mode: map[string]string{}, asked: map[string][]string{}, tokens: map[string]string{}}
	f.member(t, "n2")
	f.member(t, "n3")
	var logs bytes.Buffer
	c := newReplicaChecker(f, slog.New(slog.NewTextHandler(&logs, nil)), DefaultReplicaCheckEvery, "op-token", nil)
	ctx := context.Background()
	expect := func(step, n2, n3 string) {
		t.Helper()
		if g2, g3 := f.take("n2"), f.take("n3"); g2 != n2 || g3 != n3 {
			t.Fatalf("%s: asked n2 %q and n3 %q, want %q and %q", step, g2, g3, n2, n3)
		}
	}
	diverged := func(step string, want ...string) {
		t.Helper()
		var got []string
		for _, a := range c.status().Diverged {
			got = append(got, a.Node+":"+a.Result)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") || c.diverged() != len(want) {
			t.Fatalf("%s: diverged %v (gauge %d), want %v", step, got, c.diverged(), want)
		}
	}

	appendN(t, s, 5)
	c.round(ctx)
	expect("first round", "0-5", "0-5")
	if n := c.ownDigests.Load(); n != 1 {
		t.Fatalf("this node read its own copy %d times for two members at the same position, want once", n)
	}
	diverged("first round")
	if f.tokens["n2"] != "Bearer op-token" {
		t.Fatalf("a member got %q, want the operator credential", f.tokens["n2"])
	}
	if st := c.status(); st.Compared != 2 || st.NotCompared != 0 || st.Copies != 2 || st.Agreeing != 2 || st.LastRound == nil || st.LastFull == nil {
		t.Fatalf("status after the first round: %+v", st)
	}
	f.opened = 0
	c.round(ctx)
	expect("nothing appended", "", "")
	if st := c.status(); st.Compared != 0 || st.Agreeing != 2 {
		t.Fatalf("status of a round with nothing new: %+v, want both still agreeing", st)
	}
	if f.opened != 0 {
		t.Fatal("a round opened a tenant's store nothing was written to since the last")
	}

	appendN(t, s, 3)
	f.set("n3", "different")
	c.round(ctx)
	expect("3 appended, n3 different", "5-8", "5-8")
	diverged("n3 different", "n3:DIFFERENT")
	if st := c.status(); st.Copies != 2 || st.Agreeing != 1 {
		t.Fatalf("status with n3 different: %+v, want 1 of 2 agreeing", st)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "node=n3") || !strings.Contains(logs.String(), "tenant=acme") {
		t.Fatalf("no error logged naming the tenant and node:\n%s", logs.String())
	}
	c.round(ctx)
	expect("n3 in alarm", "", "0-8")
	diverged("still different", "n3:DIFFERENT")

	f.set("n3", "damaged")
	appendN(t, s, 1)
	c.round(ctx)
	expect("n3 damaged", "8-9", "0-9")
	diverged("n3 damaged", "n3:DAMAGED")
	if a := c.status().Diverged[0]; a.Detail == "" || a.From != 0 || a.Upto != 9 {
		t.Fatalf("alarm %+v, want the range and why", a)
	}

	f.set("n3", "same")
	f.set("n2", "busy")
	appendN(t, s, 1)
	c.round(ctx)
	expect("n3 same again, n2 busy", "9-10", "0-10")
	diverged("n3 the same again")
	if st := c.status(); st.Compared != 1 || st.NotCompared != 1 || !strings.Contains(strings.Join(st.NotComparedWhy, " "), "BUSY") {
		t.Fatalf("status with n2 busy: %+v", st)
	}
	if !strings.Contains(logs.String(), "is the leader's again") {
		t.Fatalf("the lifted alarm is not logged:\n%s", logs.String())
	}
	appendN(t, s, 1)
	f.set("n2", "redirect")
	f.set("n3", "lie")
	c.round(ctx) // the seventh: every copy from the first event
	expect("n2 redirects, n3 lies about the range", "0-11", "0-11")
	diverged("redirect and lie are not comparisons")
	if st := c.status(); st.NotCompared != 2 || st.Compared != 0 || st.LastFull == nil {
		t.Fatalf("status: %+v, want both not compared", st)
	}
	// Another incarnation of the tenant on a member (deleted and created
	// again, the member behind): not compared, no alarm.
	f.set("n2", "old")
	f.set("n3", "same")
	c.round(ctx)
	expect("n2 holds an older incarnation", "0-11", "0-11")
	diverged("another incarnation is no divergence")
	if why := strings.Join(c.status().NotComparedWhy, " "); !strings.Contains(why, "another incarnation") {
		t.Fatalf("not compared because %q, want the incarnation named", why)
	}

	// An alarm for a member that leaves the cluster goes with it.
	f.set("n2", "different")
	c.round(ctx)
	diverged("n2 different", "n2:DIFFERENT")
	f.members = f.members[1:]
	c.round(ctx)
	diverged("n2 removed")

	// An https node sends no credential to a plain-http member.
	f.take("n2")
	f.take("n3")
	f.https = true
	appendN(t, s, 1)
	c.round(ctx)
	expect("https node, http member", "", "")
	if why := strings.Join(c.status().NotComparedWhy, " "); !strings.Contains(why, "plain http") {
		t.Fatalf("not compared because %q, want plain http named", why)
	}
	f.https = false

	// No longer leading: nothing asked, nothing reported, the gauge 0.
	f.set("n3", "different")
	c.round(ctx)
	diverged("n3 different", "n3:DIFFERENT")
	f.lead = false
	if c.diverged() != 0 {
		t.Fatal("a node that no longer leads still reports its alarms in the gauge")
	}
	f.set("n3", "same")
	f.take("n3")
	appendN(t, s, 1)
	c.round(ctx)
	expect("not leading", "", "")
	if st := c.status(); st.LastRound != nil || len(st.Diverged) != 0 {
		t.Fatalf("a node that does not lead reports %+v", st)
	}
	// Leading again (a new term): the first round covers every event.
	f.lead, f.term = true, 5
	c.round(ctx)
	if got := f.take("n3"); got != "0-13" {
		t.Fatalf("first round of a new term asked n3 %q, want every event (0-13)", got)
	}
	// The tenant's store gone meanwhile: nothing asked, nothing raised.
	f.gone = true
	appendN(t, s, 1)
	c.round(ctx)
	expect("store gone", "", "")
	diverged("store gone")
}

// TestReplicaCheckChunks: a long range is compared a chunk at a time, at
// most so many per round; the next round goes on from where the last
// stopped (a pass from the first event is not given up for the events
// appended since), and the copy counts as compared to its end only then.
// A member that hangs costs one timeout per round, not one per tenant.
func TestReplicaCheckChunks(t *testing.T) {
	s, err := core.Open(core.DefaultConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f := &fakeReplicas{s: s, lead: true, term: 1,
		mode: map[string]string{}, asked: map[string][]string{}, tokens: map[string]string{}}
	f.member(t, "n2")
	c := newReplicaChecker(f, slog.New(slog.DiscardHandler), DefaultReplicaCheckEvery, "op-token", nil)
	c.chunkEvents, c.chunksPerRound = 4, 2
	ctx := context.Background()
	appendN(t, s, 10)
	c.round(ctx)
	if got := f.take("n2"); got != "0-4,4-8" {
		t.Fatalf("first round asked %q, want two chunks of 4", got)
	}
	if st := c.status(); st.Agreeing != 0 || st.LastFull != nil {
		t.Fatalf("a copy compared halfway counts as agreeing, or the pass as whole: %+v", st)
	}
	appendN(t, s, 1)
	c.round(ctx)
	if got := f.take("n2"); got != "8-11" {
		t.Fatalf("second round asked %q, want the rest from 8", got)
	}
	if st := c.status(); st.Agreeing != 1 || st.LastFull == nil {
		t.Fatalf("after the whole pass: %+v", st)
	}

	// A member that hangs: one timeout in the round, whatever the tenants.
	f.names = []string{"t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"}
	f.set("n2", "hang")
	c.client.Timeout = 200 * time.Millisecond
	appendN(t, s, 1)
	f.take("n2")
	start := time.Now()
	c.round(ctx)
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("a round with a hung member took %s", took)
	}
	if got := f.take("n2"); strings.Count(got, ",") != 0 {
		t.Fatalf("the hung member was asked %q in one round, want once", got)
	}
	st := c.status()
	if st.NotCompared != 10 || !strings.Contains(strings.Join(st.NotComparedWhy, " "), "unreachable") || !strings.Contains(strings.Join(st.NotComparedWhy, " "), "not asked again this round") {
		t.Fatalf("status with a hung member: %+v", st)
	}
	// A refusal of one tenant (a 500) costs that tenant only.
	f.set("n2", "fail-t0")
	f.names = []string{"t0", "t1"}
	c.round(ctx)
	if got := f.take("n2"); !strings.Contains(got, ",") {
		t.Fatalf("a member refusing t0 was asked %q, want t1 asked too", got)
	}
	if st := c.status(); st.NotCompared != 1 || st.Compared == 0 {
		t.Fatalf("status with t0 refused: %+v", st)
	}
}

// TestReplicaCheckHostileMember: what a member answers is clipped before
// the status and the log keep it; response headers past the bound are
// refused.
func TestReplicaCheckHostileMember(t *testing.T) {
	s, err := core.Open(core.DefaultConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	appendN(t, s, 3)
	long := strings.Repeat("y", 60<<10)
	dam := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		from, _ := strconv.ParseUint(q.Get("from"), 10, 64)
		upto, _ := strconv.ParseUint(q.Get("upto"), 10, 64)
		json.NewEncoder(w).Encode(cluster.ReplicaDigest{From: from, Upto: upto, Damaged: long})
	}))
	t.Cleanup(dam.Close)
	hdr := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Junk", strings.Repeat("z", 1<<20))
		w.WriteHeader(503)
	}))
	t.Cleanup(hdr.Close)
	f := &fakeReplicas{s: s, lead: true, term: 1, members: []replicaPeer{{"n2", dam.URL}, {"n3", hdr.URL}}}
	c := newReplicaChecker(f, slog.New(slog.DiscardHandler), DefaultReplicaCheckEvery, "op-token", nil)
	c.round(context.Background())
	st := c.status()
	if len(st.Diverged) != 1 || len(st.Diverged[0].Detail) > replicaCheckMaxText+8 {
		t.Fatalf("a member's damage text kept at %d bytes", len(st.Diverged[0].Detail))
	}
	if len(st.NotComparedWhy) != 1 || len(st.NotComparedWhy[0]) > replicaCheckMaxText+64 || !strings.Contains(st.NotComparedWhy[0], "header") {
		t.Fatalf("not compared: %q", st.NotComparedWhy)
	}
}

// TestReplicaCheckDoesNotCreateStores: a tenant deleted after a round
// listed it is not opened (nor given a store again) on the leader when the
// round reaches it; the control plane's store is the node's own.
func TestReplicaCheckDoesNotCreateStores(t *testing.T) {
	root := t.TempDir()
	cfg := DefaultConfig()
	cfg.Root, cfg.Listen, cfg.OperatorToken, cfg.Stderr = root, "127.0.0.1:0", "bpko_abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrst", io.Discard
	cfg.Cluster = &ClusterConfig{NodeID: "n1", Bind: "127.0.0.1:0", Bootstrap: true, ReplicaCheckEvery: -1,
		HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond, LeaderLeaseTimeout: 500 * time.Millisecond}
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	base := "http://" + s.Addr().String()
	do := func(method, path, body string) int {
		for range 100 {
			req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+cfg.OperatorToken)
			req.Header.Set("Content-Type", "application/json")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != 503 {
				return res.StatusCode
			}
			time.Sleep(100 * time.Millisecond)
		}
		return 503
	}
	if code := do("POST", "/v1/admin/tenants", `{"id":"acme"}`); code != 201 {
		t.Fatalf("create: %d", code)
	}
	st, err := s.node.n.Store("acme")
	if err != nil {
		t.Fatal(err)
	}
	s.node.n.ReleaseStore(st)
	src := replicaSource{s}
	listed := src.tenants() // the round's list, taken at its start
	if err := src.inspect("acme", func(*core.Store) error { return nil }); err != nil {
		t.Fatalf("inspect of a live tenant: %v", err)
	}
	if code := do("DELETE", "/v1/admin/tenants/acme?confirm=acme", ""); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	// Once the control plane no longer lists it, the round reaching it
	// does not open (let alone create) its store. (That Inspect never
	// creates one is cluster's TestInspectNeverCreates.)
	waitGone := time.Now().Add(10 * time.Second)
	for {
		if _, ok := s.plane.Tenant("acme"); !ok {
			break
		}
		if time.Now().After(waitGone) {
			t.Fatal("setup: the control plane still lists acme after its deletion")
		}
		time.Sleep(20 * time.Millisecond)
	}
	opened := false
	if err := src.inspect(listed[len(listed)-1], func(*core.Store) error { opened = true; return nil }); !errors.Is(err, cluster.ErrNoTenant) || opened {
		t.Fatalf("inspect of a deleted tenant: %v (opened: %v), want cluster.ErrNoTenant", err, opened)
	}
	// The control plane's store is always there.
	if err := src.inspect(httpapi.ControlStoreLabel, func(st *core.Store) error { opened = st == s.node.sys; return nil }); err != nil || !opened {
		t.Fatalf("inspect of the control plane: %v (its store: %v)", err, opened)
	}
}
