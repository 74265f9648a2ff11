package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/batpak-go/batpak/internal/servertest"
	"github.com/batpak-go/batpak/sdk/client"
)

// smallBodyServer runs a server on loopback whose max_body_bytes is 1 MiB
// and returns its operator client and URL.
func smallBodyServer(t *testing.T) (*client.Client, string) {
	t.Helper()
	cfg := servertest.Config(t)
	cfg.MaxBodyBytes = 1 << 20
	srv := servertest.Start(t, cfg)
	url := srv.URL
	op, err := client.New(url, srv.Token)
	if err != nil {
		t.Fatal(err)
	}
	return op, url
}

// adminOf creates tenant id and returns it through an admin key.
func adminOf(t *testing.T, op *client.Client, url, id string) *client.Tenant {
	t.Helper()
	ctx := context.Background()
	if _, err := op.Admin().CreateTenant(ctx, id, nil, nil); err != nil {
		t.Fatal(err)
	}
	k, err := op.Admin().IssueKey(ctx, id, "admin", "admin")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(url, k.Key)
	if err != nil {
		t.Fatal(err)
	}
	return c.Tenant(id)
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestImportLargerThanMaxBody: an export of several MiB imports into a
// server taking bodies of at most 1 MiB, in requests cut at line ends —
// the default chunk (8 MiB) learnt down from the server's 413, and a
// chosen smaller chunk with a line longer than it, sent alone; every
// event is there, the tenant verifies, and importing again skips all.
// The client reads ahead of what the server acknowledged by about a
// chunk, not the stream, and the progress reaches the stream's size.
func TestImportLargerThanMaxBody(t *testing.T) {
	ctx := context.Background()
	op, url := smallBodyServer(t)
	src := adminOf(t, op, url, "src")
	pad := strings.Repeat("x", 1500)
	const events = 4000
	for b := 0; b < events/400; b++ {
		items := make([]client.AppendRequest, 400)
		for i := range items {
			items[i] = client.AppendRequest{Entity: fmt.Sprintf("order:%d", b*400+i), Scope: "shop", Kind: "1:1",
				Payload: json.RawMessage(fmt.Sprintf(`{"n":%d,"pad":%q}`, b*400+i, pad))}
		}
		if _, err := src.AppendBatch(ctx, items); err != nil {
			t.Fatal(err)
		}
	}
	// One line longer than the smaller chunk below (and within the
	// tenant's max_payload_bytes and the server's max_body_bytes).
	long := strings.Repeat("y", 300<<10)
	if _, err := src.Append(ctx, client.AppendRequest{Entity: "big:1", Scope: "shop", Kind: "1:1",
		Payload: json.RawMessage(fmt.Sprintf(`{"long":%q}`, long))}); err != nil {
		t.Fatal(err)
	}
	var export bytes.Buffer
	if _, err := src.Export(ctx, &export); err != nil {
		t.Fatal(err)
	}
	if export.Len() < 6<<20 {
		t.Fatalf("the export is %d bytes, want several MiB", export.Len())
	}

	for _, tc := range []struct {
		name  string
		chunk int // 0: the default
		ahead int64
	}{
		{"default chunk", 0, client.DefaultImportChunkBytes + 64<<10 + 2<<20},
		{"64 KiB chunk", 64 << 10, 64<<10 + 64<<10 + 2<<20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := adminOf(t, op, url, "dst-"+strings.ToLower(strings.ReplaceAll(tc.name, " ", "-")))
			in := &countingReader{r: bytes.NewReader(export.Bytes())}
			var acks []int64
			st, err := dst.ImportWithOptions(ctx, in, client.ImportOptions{ChunkBytes: tc.chunk, Progress: func(acked int64, st client.ImportStats) {
				if d := in.n - acked; d > tc.ahead {
					t.Errorf("read %d bytes of the stream with %d acknowledged: %d ahead, want at most %d", in.n, acked, d, tc.ahead)
				}
				acks = append(acks, acked)
			}})
			if err != nil || st.Imported != events+1 || st.Skipped != 0 {
				t.Fatalf("import of %d bytes through max_body_bytes 1 MiB: %+v, %v; want %d imported", export.Len(), st, err, events+1)
			}
			if len(acks) < 6 || acks[len(acks)-1] != int64(export.Len()) {
				t.Fatalf("progress %v: want several requests, ending at the stream's %d bytes", acks, export.Len())
			}
			if rep, err := dst.Verify(ctx); err != nil || rep["ok"] != true || rep["events"] != float64(events+1) {
				t.Fatalf("verify after the import: %v %v", rep, err)
			}
			ev, err := dst.Get(ctx, lastID(t, export.Bytes()))
			if err != nil || !strings.Contains(string(ev.Payload), long) {
				t.Fatalf("the long line's event: %v (payload %d bytes)", err, len(ev.Payload))
			}
			st, err = dst.ImportWithOptions(ctx, bytes.NewReader(export.Bytes()), client.ImportOptions{ChunkBytes: tc.chunk})
			if err != nil || st.Imported != 0 || st.Skipped != events+1 {
				t.Fatalf("import again: %+v, %v; want all %d skipped", st, err, events+1)
			}
		})
	}
}

// lastID returns the id of an export's last line.
func lastID(t *testing.T, export []byte) string {
	t.Helper()
	lines := bytes.Split(bytes.TrimSuffix(export, []byte("\n")), []byte("\n"))
	var x struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(lines[len(lines)-1], &x); err != nil {
		t.Fatal(err)
	}
	return x.ID
}

// TestImportFailureSaysHowToResume: an import refused part way returns
// the stats of the requests acknowledged before, and an *ImportError
// naming the stream's line the server refused, how many events were
// imported and that running the import again resumes; run again with the
// line mended, it writes the rest.
func TestImportFailureSaysHowToResume(t *testing.T) {
	ctx := context.Background()
	op, url := smallBodyServer(t)
	dst := adminOf(t, op, url, "dst")
	var in strings.Builder
	const lines, bad = 3000, 2500
	for i := 1; i <= lines; i++ {
		fmt.Fprintf(&in, `{"id":"0190a2b4-0000-7000-8000-%012x","entity":"x:%d","scope":"s","kind":"0x1:0x1","correlation_id":"0190a2b4-0000-7000-8000-%012x","timestamp_us":1,"payload":{"p":%q}}`+"\n",
			i, i, i, strings.Repeat("z", 200))
	}
	good := in.String()
	broken := strings.Replace(good, fmt.Sprintf(`"entity":"x:%d"`, bad), `"entity":""`, 1)
	st, err := dst.ImportWithOptions(ctx, strings.NewReader(broken), client.ImportOptions{ChunkBytes: 64 << 10})
	var ie *client.ImportError
	var pe *client.Error
	if !errors.As(err, &ie) || !errors.As(err, &pe) || pe.Status != 400 {
		t.Fatalf("an import with a bad line %d: %+v, %v; want an *ImportError over a 400", bad, st, err)
	}
	if ie.Line != bad || ie.FirstLine > bad || ie.LastLine < bad || st != ie.Stats || st.Imported == 0 || st.Imported >= bad || st.Skipped != 0 {
		t.Fatalf("ImportError %+v, stats %+v: want line %d, the events before its request imported", ie, st, bad)
	}
	for _, w := range []string{fmt.Sprintf("line %d of the stream", bad), fmt.Sprintf("%d events were imported", st.Imported), "run the import again to resume"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	st2, err := dst.ImportWithOptions(ctx, strings.NewReader(good), client.ImportOptions{ChunkBytes: 64 << 10})
	if err != nil || st2.Skipped != st.Imported || st2.Imported != lines-st.Imported {
		t.Fatalf("run again: %+v, %v; want %d skipped and the rest imported", st2, err, st.Imported)
	}
}

// TestImportHalvesPastAProxysBound: a 413 that names no limit (here a
// proxy's, with no problem document) halves the request, down to a line
// alone, and the smaller size is kept: every line arrives once, in
// bodies within the bound, cut at line ends; a line alone past the bound
// fails the import naming it.
func TestImportHalvesPastAProxysBound(t *testing.T) {
	const bound = 100 << 10
	var (
		taken             bytes.Buffer // the bodies taken, in order
		lock              sync.Mutex
		refused, tooLarge atomic.Int32
	)
	got := func() string { lock.Lock(); defer lock.Unlock(); return taken.String() }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > bound {
			tooLarge.Add(1)
			if r.ContentLength > 1<<20 {
				refused.Add(1)
			}
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			io.WriteString(w, "<html>413 Request Entity Too Large</html>")
			return
		}
		b, _ := io.ReadAll(r.Body)
		if len(b) > 0 && b[len(b)-1] != '\n' {
			t.Errorf("a body not cut at a line's end: …%q", b[max(0, len(b)-20):])
		}
		lock.Lock()
		taken.Write(b)
		lock.Unlock()
		fmt.Fprintf(w, `{"imported":%d,"skipped":0}`, bytes.Count(b, []byte("\n")))
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, "bpk_test")
	if err != nil {
		t.Fatal(err)
	}
	var in strings.Builder
	for i := range 20000 {
		fmt.Fprintf(&in, `{"n":%d,"p":%q}`+"\n", i, strings.Repeat("p", i%200))
	}
	st, err := c.Tenant("acme").ImportWithOptions(context.Background(), strings.NewReader(in.String()), client.ImportOptions{ChunkBytes: 2 << 20})
	if err != nil || st.Imported != 20000 || got() != in.String() {
		t.Fatalf("import past a 100 KiB bound: %+v, %v; %d of %d bytes arrived as sent", st, err, len(got()), in.Len())
	}
	if tooLarge.Load() > 6 || refused.Load() != 1 {
		t.Fatalf("%d requests refused as too large (%d of them over 1 MiB): the smaller size is not kept", tooLarge.Load(), refused.Load())
	}

	// A line alone past the bound.
	big := `{"big":"` + strings.Repeat("b", bound) + `"}` + "\n"
	st, err = c.Tenant("acme").ImportWithOptions(context.Background(), strings.NewReader("{}\n"+big+"{}\n"), client.ImportOptions{})
	var ie *client.ImportError
	if !errors.As(err, &ie) || ie.FirstLine != 2 || ie.LastLine != 2 || st.Imported != 1 {
		t.Fatalf("a line past the bound: %+v, %v; want an *ImportError for line 2 after 1 imported", st, err)
	}
}

// endless is a line that never ends.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

// TestImportLineBound: a line of the stream past ImportOptions.MaxLineBytes
// fails the import naming it, the client having read about the bound of
// it, not the line; a line of exactly the bound is sent.
func TestImportLineBound(t *testing.T) {
	var bodies atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		bodies.Add(n)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"imported":1}`))
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, "bpk_x")
	if err != nil {
		t.Fatal(err)
	}
	acme := c.Tenant("acme")
	const bound = 1 << 20
	in := &countingReader{r: io.MultiReader(strings.NewReader("{}\n{}\n{}\n"), endless{})}
	_, err = acme.ImportWithOptions(context.Background(), in, client.ImportOptions{MaxLineBytes: bound})
	var ie *client.ImportError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "line 4 of the stream is longer than 1048576 bytes") {
		t.Fatalf("an endless fourth line: %v", err)
	}
	if in.n > bound+256<<10 {
		t.Errorf("read %d bytes of the stream for a bound of %d", in.n, bound)
	}
	exact := strings.Repeat("b", bound)
	for _, tail := range []string{"\n", ""} {
		before := bodies.Load()
		if _, err := acme.ImportWithOptions(context.Background(), strings.NewReader("{}\n"+exact+tail), client.ImportOptions{MaxLineBytes: bound}); err != nil {
			t.Errorf("a line of exactly the bound (ending %q): %v", tail, err)
		}
		if got := bodies.Load() - before; got != int64(3+bound+len(tail)) {
			t.Errorf("sent %d bytes, want %d", got, 3+bound+len(tail))
		}
	}
	if _, err := acme.ImportWithOptions(context.Background(), strings.NewReader(exact+"b"), client.ImportOptions{MaxLineBytes: bound}); err == nil || !strings.Contains(err.Error(), "line 1 of the stream") {
		t.Errorf("a last line one past the bound: %v", err)
	}
}
