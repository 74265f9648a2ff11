package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// fakeReplicas is a leader with one tenant store and members served by
// httptest servers that answer digests of the same store, each as its
// mode says.
type fakeReplicas struct {
	s       *core.Store
	lead    bool
	term    uint64
	selfURL string
	members []replicaPeer

	mu     sync.Mutex
	mode   map[string]string   // member → "same", "different", "damaged", "busy", "redirect", "lie"
	asked  map[string][]string // member → "from-upto" asked, in order
	tokens map[string]string   // member → Authorization it got
}

func (f *fakeReplicas) leading() (bool, uint64) { return f.lead, f.term }
func (f *fakeReplicas) self() (string, string)  { return "n1", f.selfURL }
func (f *fakeReplicas) peers() []replicaPeer    { return f.members }
func (f *fakeReplicas) tenants() []string       { return []string{"acme"} }
func (f *fakeReplicas) store(string) (*core.Store, func(), error) {
	return f.s, func() {}, nil
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
		if r.URL.Path != "/v1/admin/tenants/acme/digest" {
			http.Error(w, "path "+r.URL.Path, 404)
			return
		}
		d, err := cluster.Digest(r.Context(), f.s, from, upto)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		switch mode {
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
// and every sixth after it), none when nothing was appended; a different or
// damaged copy is an alarm (logged, in the status and the gauge) and is
// compared from the first event until it is the same again; a member
// that is busy, redirects, or answers another range is not compared and
// raises nothing; an alarm for a member removed goes; a node that stops
// leading forgets everything.
func TestReplicaCheckRounds(t *testing.T) {
	s, err := core.Open(core.DefaultConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f := &fakeReplicas{s: s, lead: true, term: 3, selfURL: "http://127.0.0.1:7070",
		mode: map[string]string{}, asked: map[string][]string{}, tokens: map[string]string{}}
	f.member(t, "n2")
	f.member(t, "n3")
	var logs bytes.Buffer
	c := newReplicaChecker(f, slog.New(slog.NewTextHandler(&logs, nil)), DefaultReplicaCheckEvery, "op-token")
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
		if strings.Join(got, ",") != strings.Join(want, ",") || c.diverged.Load() != int64(len(want)) {
			t.Fatalf("%s: diverged %v (gauge %d), want %v", step, got, c.diverged.Load(), want)
		}
	}

	appendN(t, s, 5)
	c.round(ctx)
	expect("first round", "0-5", "0-5")
	diverged("first round")
	if f.tokens["n2"] != "Bearer op-token" {
		t.Fatalf("a member got %q, want the operator credential", f.tokens["n2"])
	}
	if st := c.status(); st.Compared != 2 || st.NotCompared != 0 || st.Copies != 2 || st.Agreeing != 2 || st.LastRound == nil || st.LastFull == nil {
		t.Fatalf("status after the first round: %+v", st)
	}
	c.round(ctx)
	expect("nothing appended", "", "")
	if st := c.status(); st.Compared != 0 || st.Agreeing != 2 {
		t.Fatalf("status of a round with nothing new: %+v, want both still agreeing", st)
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
	c.round(ctx) // the seventh: every event, for everyone
	expect("n2 redirects, n3 lies about the range", "0-11", "0-11")
	diverged("redirect and lie are not comparisons")
	if st := c.status(); st.NotCompared != 2 || st.Compared != 0 {
		t.Fatalf("status: %+v, want both not compared", st)
	}

	// An alarm for a member that leaves the cluster goes with it.
	f.set("n2", "different")
	f.set("n3", "same")
	c.round(ctx)
	diverged("n2 different", "n2:DIFFERENT")
	f.members = f.members[1:]
	c.round(ctx)
	diverged("n2 removed")

	// A https node sends no credential to a plain-http member.
	f.take("n2")
	f.take("n3")
	f.selfURL = "https://node1.example:7070"
	appendN(t, s, 1)
	c.round(ctx)
	expect("https node, http member", "", "")
	if why := strings.Join(c.status().NotComparedWhy, " "); !strings.Contains(why, "plain http") {
		t.Fatalf("not compared because %q, want plain http named", why)
	}
	f.selfURL = "http://127.0.0.1:7070"

	// No longer leading: nothing asked, nothing reported.
	f.set("n3", "different")
	c.round(ctx)
	diverged("n3 different", "n3:DIFFERENT")
	f.set("n3", "same")
	c.round(ctx) // n3 verified through 12
	f.take("n3")
	f.lead = false
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
}
