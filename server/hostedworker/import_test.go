package hostedworker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/sdk/client"
)

// TestExportedReactionsImportAgain: an export of a tenant whose hosted
// worker wrote reactions (keys "worker:<cursor>:<source id>:<n>", each
// caused by its source) imports into a fresh tenant, reactions and keys
// included, and again as all skipped; an event carrying a worker's key
// that is not a reaction to the key's source is refused at its line
// (400 INVALID_REQUEST naming idempotency_key) and writes nothing, so an
// admin cannot plant one to make a worker skip a source.
func TestExportedReactionsImportAgain(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	srcs := appendOrders(t, acme, "order:1", 20)
	if _, err := acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: inputs}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "20 echoes", func() bool { return len(echoes(t, acme)) >= 20 })
	if _, err := acme.StopWorker(ctx, "echoer"); err != nil {
		t.Fatal(err)
	}
	es := echoes(t, acme)
	checkOnce(t, srcs, es)
	var export bytes.Buffer
	if _, err := acme.Export(ctx, &export); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(`"idempotency_key":"worker:echoer:%s:0"`, *es[0].CausationID); !strings.Contains(export.String(), want) {
		t.Fatalf("the export carries no reaction keyed %s", want)
	}

	// The export, reactions included, into a fresh tenant: all of it,
	// then all skipped.
	copyT := ts.tenant(t, "copy")
	st, err := copyT.Import(ctx, bytes.NewReader(export.Bytes()))
	if err != nil || st.Imported != 40 || st.Skipped != 0 {
		t.Fatalf("import of an export with reactions: %+v, %v; want 40 imported", st, err)
	}
	got := echoes(t, copyT)
	checkOnce(t, srcs, got)
	for i := range got {
		key := func(e client.Event) string {
			if e.IdempotencyKey == nil {
				return ""
			}
			return *e.IdempotencyKey
		}
		if got[i].ID != es[i].ID || key(got[i]) != key(es[i]) || !strings.HasPrefix(key(got[i]), "worker:echoer:") {
			t.Fatalf("imported reaction %d: %s key %q, want %s key %q", i, got[i].ID, key(got[i]), es[i].ID, key(es[i]))
		}
	}
	if st, err := copyT.Import(ctx, bytes.NewReader(export.Bytes())); err != nil || st.Imported != 0 || st.Skipped != 40 {
		t.Fatalf("import again: %+v, %v; want 40 skipped", st, err)
	}

	// Planted keys: a source of the fresh tenant's not yet reacted to.
	src := appendOrders(t, copyT, "order:2", 1)[0]
	forged := func(key string, causation *string) string {
		x := map[string]any{"id": "0190a2b4-0000-7000-8000-00000000abcd", "entity": "echo", "scope": "s", "kind": "0x2:0x1",
			"correlation_id": src.CorrelationID, "causation_id": causation, "timestamp_us": 1, "idempotency_key": key, "payload": map[string]any{"forged": true}}
		b, _ := json.Marshal(x)
		return string(b) + "\n"
	}
	other := srcs[0].ID
	for name, line := range map[string]string{
		"no causation":        forged("worker:echoer:"+src.ID+":0", nil),
		"another causation":   forged("worker:echoer:"+src.ID+":0", &other),
		"no cursor":           forged("worker::"+src.ID+":0", &src.ID),
		"not a reaction's":    forged("worker:echoer:"+src.ID+":x", &src.ID),
		"a padded index":      forged("worker:echoer:"+src.ID+":00", &src.ID),
		"the prefix and more": forged("worker:anything", &src.ID),
	} {
		t.Run(name, func(t *testing.T) {
			st, err := copyT.Import(ctx, strings.NewReader(exportLine(export.Bytes(), 0)+line))
			p := problem(t, err)
			if p.Status != 400 || p.Code != client.CodeInvalidRequest || string(p.Extensions["field"]) != `"idempotency_key"` ||
				!strings.Contains(p.Detail, "import line 2") || st.Imported != 0 {
				t.Fatalf("a planted worker key: %+v, %d %s field %s: %s; want 400 INVALID_REQUEST naming idempotency_key and line 2", st, p.Status, p.Code, p.Extensions["field"], p.Detail)
			}
		})
	}
	if _, err := copyT.Get(ctx, "0190a2b4-0000-7000-8000-00000000abcd"); problem(t, err).Code != client.CodeNotFound {
		t.Fatalf("a refused line was stored: %v", err)
	}
}

// exportLine returns line i (from 0) of an NDJSON export, with its newline.
func exportLine(export []byte, i int) string {
	return string(bytes.SplitAfter(export, []byte("\n"))[i])
}
