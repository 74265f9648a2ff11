package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/batpak-go/batpak/server/tenantplugin"
)

// fakeMembers is a cluster of which only the members are asked.
type fakeMembers struct {
	Cluster
	members []Member
	client  *http.Client
}

func (f fakeMembers) Members() []Member          { return f.members }
func (f fakeMembers) MemberClient() *http.Client { return f.client }

var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// A member's answer is read only as far as the bounds allow, a redirect
// is not followed (the credential stays where it was sent), a plain-http
// member of a node reached over https is never sent the credential, and
// every refusal says what it was.
func TestAskMemberRefusals(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	defer other.Close()
	var gotAuth atomic.Value
	member := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth.Store(r.Header.Get("Authorization"))
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte(`{"node":"n2"}`))
		case "/redirect":
			http.Redirect(w, r, other.URL+"/steal", http.StatusTemporaryRedirect)
		case "/big":
			w.Write([]byte(strings.Repeat("x", MaxMemberAnswerBytes+1)))
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		default:
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(404)
			w.Write([]byte(`{"code":"NOT_FOUND","detail":"plugin \"trap\""}`))
		}
	}))
	defer member.Close()
	m := Member{ID: "n2", URL: member.URL}
	budget := newBodyBudget(nil)
	ask := func(ctx context.Context, m Member, https bool, path string) ([]byte, string) {
		q := memberQuery{auth: "Bearer tenant-key", https: https, path: path, log: slog.New(slog.DiscardHandler), hold: func(ctx context.Context, n int64) string {
			if _, err := budget.take(ctx, "", n, nil); err != nil { // never given back: the budget runs out below
				return "this node is holding as many large answers as it does at once; retry"
			}
			return ""
		}}
		return q.ask(ctx, noRedirects, m)
	}

	if body, why := ask(context.Background(), m, false, "/ok"); why != "" || string(body) != `{"node":"n2"}` || gotAuth.Load() != "Bearer tenant-key" {
		t.Fatalf("ok: %q %q (credential %v)", body, why, gotAuth.Load())
	}
	if _, why := ask(context.Background(), m, false, "/redirect"); !strings.Contains(why, "sends this tenant's requests to the leader") || elsewhere.Load() != 0 {
		t.Fatalf("redirect: %q, %d requests elsewhere", why, elsewhere.Load())
	}
	if _, why := ask(context.Background(), m, false, "/big"); !strings.Contains(why, "larger than") {
		t.Fatalf("big: %q", why)
	}
	if _, why := ask(context.Background(), m, false, "/missing"); why != `404 NOT_FOUND: plugin "trap"` {
		t.Fatalf("missing: %q", why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, why := ask(ctx, m, false, "/slow"); !strings.Contains(why, "did not answer within") {
		t.Fatalf("slow: %q", why)
	}
	gotAuth.Store("")
	if _, why := ask(context.Background(), m, true, "/ok"); !strings.Contains(why, "plain http") || gotAuth.Load() != "" {
		t.Fatalf("https node, http member: %q (credential sent: %v)", why, gotAuth.Load())
	}
	// Answers held take the node's response memory: once it is all
	// held, a member's answer is not read.
	for n := int64(MaxResponseBytes); n > 0; n /= 2 {
		for budget.sem.TryAcquire(n) {
		}
	}
	if _, why := ask(context.Background(), m, false, "/ok"); !strings.Contains(why, "holding as many large answers") {
		t.Fatalf("with no memory left: %q", why)
	}
	for _, url := range []string{"", "ftp://x/", "http://"} {
		if _, why := ask(context.Background(), Member{ID: "n2", URL: url}, false, "/ok"); why == "" {
			t.Errorf("URL %q: asked", url)
		}
	}
}

// A tenant gathers one cluster-wide answer at a time, and a node
// MaxMemberAsks; past either the request is refused at once with 503
// BUSY, and the slots come back when the answers are in.
func TestMemberAsksAreBounded(t *testing.T) {
	release := make(chan struct{})
	var held atomic.Int32
	member := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held.Add(1)
		<-release
		w.Write([]byte(`{}`))
	}))
	defer member.Close()
	a := &API{opts: Options{Cluster: fakeMembers{members: []Member{{ID: "n1", Self: true}, {ID: "n2", URL: member.URL}}, client: noRedirects}},
		memberAsk: semaphore.NewWeighted(MaxMemberAsks), bodies: newBodyBudget(nil), log: slog.New(slog.DiscardHandler)}
	ask := func(tenant string) error {
		_, g, err := a.askMembers(&call{r: httptest.NewRequest("GET", "/", nil), tenant: tenant}, "/x")
		if err == nil {
			g.release()
		}
		return err
	}
	busy := func(err error, why string) bool {
		var ae *apiError
		return errors.As(err, &ae) && ae.status == 503 && ae.code == "BUSY" && strings.Contains(ae.detail, why)
	}
	done := make(chan error, MaxMemberAsks)
	wait := func(n int32) {
		for held.Load() < n {
			time.Sleep(time.Millisecond)
		}
	}
	go func() { done <- ask("a") }()
	wait(1)
	// Refused at once: a second one that went ahead would wait for the
	// member (released below), so it is given a second.
	second := make(chan error, 1)
	go func() { second <- ask("a") }()
	select {
	case err := <-second:
		if !busy(err, "this tenant's previous") {
			t.Fatalf("the tenant's second: %v, want 503 BUSY", err)
		}
	case <-time.After(time.Second):
		close(release)
		t.Fatal("the tenant's second went ahead while its first was being gathered")
	}
	for i := 1; i < MaxMemberAsks; i++ {
		go func() { done <- ask(string(rune('a' + i))) }()
	}
	wait(MaxMemberAsks)
	if err := ask("z"); !busy(err, "as many cluster-wide answers") {
		t.Fatalf("one past the node's bound: %v, want 503 BUSY", err)
	}
	// A tenant's retries are refused as its own, and take no slot of the
	// node's from the others.
	if err := ask("a"); !busy(err, "this tenant's previous") {
		t.Fatalf("the tenant's retry with the node full: %v", err)
	}
	if _, busy := a.tenantAsks.Load("z"); busy {
		t.Fatal("a tenant refused for the node's bound still holds its own slot")
	}
	close(release)
	for range MaxMemberAsks {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := ask("a"); err != nil {
		t.Fatalf("after the answers came: %v", err)
	}
}

// A member's part names its node; one that names none (a version before
// parts did) is its own, one that names another is refused (two members
// on record with one URL), and an error part has empty lists.
func TestNodePart(t *testing.T) {
	if p := nodePart(memberAnswer{id: "n2", body: []byte(`{"node":"n2","quarantined":true}`)}); p.Node != "n2" || p.Error != "" || !p.Quarantined {
		t.Fatalf("its own: %+v", p)
	}
	if p := nodePart(memberAnswer{id: "n2", body: []byte(`{"loaded":true}`)}); p.Node != "n2" || p.Error != "" || !p.Loaded {
		t.Fatalf("naming no node: %+v", p)
	}
	if p := nodePart(memberAnswer{id: "n2", body: []byte(`{"node":"n3","loaded":true}`)}); p.Error == "" || p.Loaded {
		t.Fatalf("naming another: %+v", p)
	}
	if p := nodePart(memberAnswer{id: "n2", body: []byte(`[`)}); p.Error == "" {
		t.Fatalf("not a status: %+v", p)
	}
}

// bigStatus is a plugin status with lines log lines and as many faults,
// each of 1 KiB of ch.
func bigStatus(node string, lines int, ch string) tenantplugin.Status {
	st := tenantplugin.Status{Node: node, Loaded: true}
	text := strings.Repeat(ch, 1024)
	for range lines {
		st.Logs = append(st.Logs, tenantplugin.LogLine{Time: time.Now(), Level: "INFO", Stream: "log", Version: "1", Text: text})
		st.Faults = append(st.Faults, tenantplugin.Fault{Time: time.Now(), Version: "1", Kind: "trap", Message: text})
	}
	return st
}

// A cluster-wide status of large parts (server.plugin_log_lines at its
// ceiling, text that doubles when escaped) is written on an idle server:
// the parts count once against the response budget and the answer takes
// only what it needs beyond them; parts past MaxMemberAnswerBytes
// together are errors in their place. Afterwards the budget is whole
// again.
func TestClusterWideAnswerFitsTheBudget(t *testing.T) {
	for _, tc := range []struct {
		nodes, lines int
		ch           string
	}{{3, 10000, `"`}, {5, 10000, "a"}, {7, 3000, "a"}} {
		t.Run(fmt.Sprintf("%d-nodes-%d-lines-%q", tc.nodes, tc.lines, tc.ch), func(t *testing.T) {
			bodies := map[string][]byte{}
			members := []Member{{ID: "n1", Self: true}}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(len(bodies[r.URL.Path])))
				w.Write(bodies[r.URL.Path])
			}))
			defer srv.Close()
			for i := 2; i <= tc.nodes; i++ {
				id := "n" + strconv.Itoa(i)
				bodies["/"+id+"/x"], _ = json.Marshal(bigStatus(id, tc.lines, tc.ch))
				members = append(members, Member{ID: id, URL: srv.URL + "/" + id})
			}
			part := len(bodies["/n2/x"])
			a := &API{opts: Options{Cluster: fakeMembers{members: members, client: noRedirects}},
				memberAsk: semaphore.NewWeighted(MaxMemberAsks), bodies: newBodyBudget(nil), log: slog.New(slog.DiscardHandler)}
			answers, g, err := a.askMembers(&call{r: httptest.NewRequest("GET", "/", nil), tenant: "acme"}, "/x")
			if err != nil {
				t.Fatal(err)
			}
			var others []tenantplugin.NodeStatus
			missing := 0
			for _, ans := range answers {
				p := nodePart(ans)
				if p.Error != "" {
					missing++
					if !strings.Contains(p.Error, "larger than") {
						t.Errorf("%s: %s", p.Node, p.Error)
					}
				}
				others = append(others, p)
			}
			if want := max(tc.nodes-1-MaxMemberAnswerBytes/part, 0); missing != want {
				t.Errorf("%d parts of %d bytes missing, want %d", missing, part, want)
			}
			rw := httptest.NewRecorder()
			err = writeJSONHolding(&recorder{ResponseWriter: rw, bodies: a.bodies, ctx: context.Background()}, http.StatusOK,
				tenantplugin.Gather(bigStatus("n1", tc.lines, tc.ch), others), g.Held())
			g.release()
			if err != nil || rw.Code != 200 {
				t.Fatalf("writing the answer: %v (%d)", err, rw.Code)
			}
			if !a.bodies.sem.TryAcquire(MaxResponseBytes) {
				t.Fatal("the response budget is not whole again")
			}
		})
	}
}

// panickyMembers fails the first time it is asked for the members.
type panickyMembers struct {
	fakeMembers
	once *atomic.Bool
}

func (p panickyMembers) Members() []Member {
	if p.once.CompareAndSwap(false, true) {
		panic("members")
	}
	return p.fakeMembers.Members()
}

// A gathering that panics (recovered by the middleware) gives its slots
// back: the tenant's next one is not refused for ever.
func TestAGatheringThatPanicsGivesItsSlotBack(t *testing.T) {
	a := &API{opts: Options{Cluster: panickyMembers{fakeMembers{members: []Member{{ID: "n1", Self: true}}, client: noRedirects}, new(atomic.Bool)}},
		memberAsk: semaphore.NewWeighted(MaxMemberAsks), bodies: newBodyBudget(nil), log: slog.New(slog.DiscardHandler)}
	ask := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		_, g, err := a.askMembers(&call{r: httptest.NewRequest("GET", "/", nil), tenant: "acme"}, "/x")
		if err == nil {
			g.release()
		}
		return err
	}
	if err := ask(); err == nil || !strings.Contains(err.Error(), "panic") {
		t.Fatalf("first: %v, want the panic", err)
	}
	if err := ask(); err != nil {
		t.Fatalf("after the panic: %v", err)
	}
}
