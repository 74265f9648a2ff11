package core_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/segment"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Packed (compressed) sealed segments: every event stays readable, equal
// byte for byte, through every open path, erasure, compaction, snapshot
// and concurrent readers; damage is reported, never hidden.

// ---- realistic order payloads ----

var (
	sampleFirstNames = []string{"Amelia", "Bruno", "Chloé", "Dmitri", "Elena", "Farid", "Grace", "Hiroshi", "Inès", "Jonas", "Kavya", "Lukas", "Maya", "Noah", "Olga", "Priya"}
	sampleLastNames  = []string{"Schneider", "Okafor", "Martínez", "Nakamura", "Kowalski", "Dubois", "Haddad", "Lindqvist", "O'Brien", "Rossi", "Patel", "Novak"}
	sampleStreets    = []string{"Elm Street", "Rue de Rivoli", "Hauptstraße", "Calle Mayor", "King's Road", "Via Roma", "Maple Avenue", "Sakura-dori"}
	sampleCities     = []struct{ City, Zip, Country string }{
		{"Berlin", "10115", "DE"}, {"Paris", "75001", "FR"}, {"Madrid", "28013", "ES"}, {"London", "SW3 4UP", "GB"},
		{"Rome", "00184", "IT"}, {"Springfield", "62701", "US"}, {"Osaka", "530-0001", "JP"},
	}
	sampleProducts = []struct {
		SKU, Name string
		Price     float64
	}{
		{"SKU-1001", "Blue ceramic mug", 12.5}, {"SKU-1002", "Espresso beans 1kg", 24.9}, {"SKU-1003", "French press", 39},
		{"SKU-2001", "Linen tea towel", 8.75}, {"SKU-2002", "Cast iron skillet", 54.2}, {"SKU-2003", "Chef's knife 20cm", 89.99},
		{"SKU-3001", "Bamboo cutting board", 19.95}, {"SKU-3002", "Glass storage jar", 6.4}, {"SKU-3003", "Milk frother", 29.5},
		{"SKU-4001", "Stoneware dinner plate", 14.25}, {"SKU-4002", "Salad bowl, oak", 42}, {"SKU-4003", "Pepper mill", 22.8},
	}
	sampleStatuses = []string{"placed", "paid", "packed", "shipped", "delivered", "returned"}
)

type sampleAddress struct {
	Street  string `json:"street"`
	City    string `json:"city"`
	Zip     string `json:"zip"`
	Country string `json:"country"`
}

type sampleCustomer struct {
	ID      string        `json:"id"`
	Name    string        `json:"name"`
	Email   string        `json:"email"`
	Address sampleAddress `json:"address"`
}

type sampleItem struct {
	SKU       string  `json:"sku"`
	Name      string  `json:"name"`
	Qty       int     `json:"qty"`
	UnitPrice float64 `json:"unit_price"`
}

type sampleOrder struct {
	OrderID  string         `json:"order_id"`
	PlacedAt string         `json:"placed_at"`
	Status   string         `json:"status"`
	Customer sampleCustomer `json:"customer"`
	Items    []sampleItem   `json:"items"`
	Total    float64        `json:"total"`
	Currency string         `json:"currency"`
	Notes    string         `json:"notes,omitempty"`
}

// orderJSON is a realistic order (300-600 bytes), a function of rng only:
// two generators with the same seed give payloads of the same sizes.
func orderJSON(rng *rand.Rand, i int) string {
	f, l := sampleFirstNames[rng.Intn(len(sampleFirstNames))], sampleLastNames[rng.Intn(len(sampleLastNames))]
	c := sampleCities[rng.Intn(len(sampleCities))]
	o := sampleOrder{
		OrderID:  fmt.Sprintf("ORD-2024-%06d", i),
		PlacedAt: time.Date(2024, 3, 1, 8, 0, 0, 0, time.UTC).Add(time.Duration(i)*97*time.Second + time.Duration(rng.Intn(1000))*time.Millisecond).Format("2006-01-02T15:04:05.000Z"),
		Status:   sampleStatuses[rng.Intn(len(sampleStatuses))],
		Customer: sampleCustomer{
			ID:      fmt.Sprintf("cust-%05d", rng.Intn(5000)),
			Name:    f + " " + l,
			Email:   strings.ToLower(strings.ReplaceAll(f+"."+l, "'", "")) + "@example.com",
			Address: sampleAddress{Street: fmt.Sprintf("%d %s", 1+rng.Intn(200), sampleStreets[rng.Intn(len(sampleStreets))]), City: c.City, Zip: c.Zip, Country: c.Country},
		},
		Currency: "EUR",
	}
	for k := 0; k <= rng.Intn(3); k++ {
		p := sampleProducts[rng.Intn(len(sampleProducts))]
		it := sampleItem{SKU: p.SKU, Name: p.Name, Qty: 1 + rng.Intn(4), UnitPrice: p.Price}
		o.Items = append(o.Items, it)
		o.Total += float64(it.Qty) * it.UnitPrice
	}
	o.Total = float64(int(o.Total*100)) / 100
	if rng.Intn(3) == 0 {
		o.Notes = "Please leave the parcel with the neighbour if nobody answers."
	}
	b, err := json.Marshal(o)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// ---- a recorded history ----

// sampleEvent is a visible event as it was written.
type sampleEvent struct {
	r       core.Receipt
	coord   core.Coordinate
	kind    core.Kind
	payload string
	idem    string
}

type sampleHistory struct {
	events []sampleEvent // visible events, in sequence order
	hidden int           // events of the cancelled fence
}

func (h *sampleHistory) byID() map[core.EventID]sampleEvent {
	m := make(map[core.EventID]sampleEvent, len(h.events))
	for _, e := range h.events {
		m[e.r.ID] = e
	}
	return m
}

func (h *sampleHistory) entities() []string {
	seen := map[string]bool{}
	var out []string
	for _, e := range h.events {
		if !seen[e.coord.Entity] {
			seen[e.coord.Entity] = true
			out = append(out, e.coord.Entity)
		}
	}
	sort.Strings(out)
	return out
}

var sampleScopes = []string{"eu", "us", "apac"}

// writeOrders writes about n visible events of realistic orders: singles
// over many entities (every fifth with an idempotency key), three-item
// batches (one item keyed), a committed fence of three events and a
// cancelled fence of four. The layout (frame sizes, segment boundaries)
// depends on seed only.
func writeOrders(t testing.TB, s *core.Store, n int, seed int64) *sampleHistory {
	t.Helper()
	return writeOrdersKeyed(t, s, n, seed, "")
}

// writeOrdersKeyed is writeOrders with idempotency keys starting with
// keyPrefix (a second history in the same store needs other keys).
func writeOrdersKeyed(t testing.TB, s *core.Store, n int, seed int64, keyPrefix string) *sampleHistory {
	t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewSource(seed))
	h := &sampleHistory{}
	fenced, leaked := false, false
	for i := 0; len(h.events) < n; i++ {
		switch {
		case i%40 == 39:
			ent := fmt.Sprintf("order:%05d", i)
			items := []core.BatchItem{
				{Coordinate: mustCoord(t, ent, "eu"), Kind: kindA, Payload: []byte(orderJSON(rng, i))},
				{Coordinate: mustCoord(t, ent, "eu"), Kind: kindB, Payload: []byte(orderJSON(rng, i)), Causation: core.PriorItem(0),
					Options: core.AppendOptions{IdempotencyKey: fmt.Sprintf("%sbatch-%05d", keyPrefix, i)}},
				{Coordinate: mustCoord(t, fmt.Sprintf("cust:%03d", i%120), "eu"), Kind: kindC, Payload: []byte(orderJSON(rng, i)), Causation: core.PriorItem(1)},
			}
			rs, err := s.AppendBatch(ctx, items)
			if err != nil {
				t.Fatalf("AppendBatch: %v", err)
			}
			for k, r := range rs {
				h.events = append(h.events, sampleEvent{r: r, coord: items[k].Coordinate, kind: items[k].Kind, payload: string(items[k].Payload), idem: items[k].Options.IdempotencyKey})
			}
		case !fenced && len(h.events) >= n/3:
			fenced = true
			f, err := s.BeginFence(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var tks []*core.Ticket
			var evs []sampleEvent
			for k := 0; k < 3; k++ {
				c := mustCoord(t, fmt.Sprintf("cust:%03d", k), "us")
				p := orderJSON(rng, i)
				tk, err := f.Submit(ctx, c, kindB, []byte(p))
				if err != nil {
					t.Fatal(err)
				}
				tks = append(tks, tk)
				evs = append(evs, sampleEvent{coord: c, kind: kindB, payload: p})
			}
			if err := f.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			for k, tk := range tks {
				r, err := tk.Wait(ctx)
				if err != nil {
					t.Fatal(err)
				}
				evs[k].r = r
			}
			h.events = append(h.events, evs...)
		case !leaked && len(h.events) >= 2*n/3:
			leaked = true
			writeLeakingFence(t, s, mustCoord(t, "cust:001", "us"), kindC, 4)
			h.hidden += 4
		default:
			c := mustCoord(t, fmt.Sprintf("cust:%03d", (i*7)%120), sampleScopes[i%3])
			k := []core.Kind{kindA, kindB, kindC}[i%3]
			p := orderJSON(rng, i)
			o := core.AppendOptions{}
			if i%5 == 0 {
				o.IdempotencyKey = fmt.Sprintf("%sord-%06d", keyPrefix, i)
			}
			r := mustAppendOpts(t, s, c, k, p, o)
			h.events = append(h.events, sampleEvent{r: r, coord: c, kind: k, payload: p, idem: o.IdempotencyKey})
		}
	}
	return h
}

// sameAsWritten fails unless ev is the event e as it was written.
func sameAsWritten(t testing.TB, what string, ev core.StoredEvent, e sampleEvent) {
	t.Helper()
	if ev.Header.ID != e.r.ID || ev.GlobalSequence != e.r.GlobalSequence || ev.Header.Clock != e.r.Clock ||
		ev.Header.Timestamp != e.r.Timestamp || ev.Coordinate != e.coord || ev.Header.Kind != e.kind ||
		ev.IdempotencyKey != e.idem || ev.Redacted || string(ev.Payload) != e.payload {
		t.Fatalf("%s: event %s (seq %d) reads back as\n %+v\n payload %s\nwant seq %d clock %d %v %v idem %q payload %s",
			what, e.r.ID, e.r.GlobalSequence, ev.Header, ev.Payload, e.r.GlobalSequence, e.r.Clock, e.coord, e.kind, e.idem, e.payload)
	}
}

// checkWritten reads every event of h with Get, in random order, and the
// whole store with Query: both must show exactly what was written.
func checkWritten(t testing.TB, s *core.Store, h *sampleHistory, what string) {
	t.Helper()
	rng := rand.New(rand.NewSource(int64(len(h.events))))
	for _, i := range rng.Perm(len(h.events)) {
		e := h.events[i]
		ev, err := s.Get(e.r.ID)
		if err != nil {
			t.Fatalf("%s: Get(%s) (seq %d): %v", what, e.r.ID, e.r.GlobalSequence, err)
		}
		sameAsWritten(t, what+": Get", ev, e)
	}
	all := mustQuery(t, s, core.All())
	if len(all) != len(h.events) {
		t.Fatalf("%s: Query(All) finds %d events, %d were written", what, len(all), len(h.events))
	}
	for i, ev := range all {
		sameAsWritten(t, what+": Query", ev, h.events[i])
	}
	noLeak(t, what, all)
}

// readViews is what the read API shows: Query over several regions and
// Stream of every entity.
type readViews map[string][]core.StoredEvent

func captureViews(t testing.TB, s *core.Store, entities []string) readViews {
	t.Helper()
	v := readViews{
		"all":             mustQuery(t, s, core.All()),
		"scope eu":        mustQuery(t, s, core.Scope("eu")),
		"cust: kind B":    mustQuery(t, s, core.Entity("cust:").WithKind(kindB)),
		"order: clock 1-": mustQuery(t, s, core.Entity("order:").WithClockRange(1, 2)),
		"category 2":      mustQuery(t, s, core.All().WithCategory(2)),
	}
	for _, e := range entities {
		evs, err := s.Stream(e)
		if err != nil {
			t.Fatalf("Stream(%s): %v", e, err)
		}
		v["stream "+e] = evs
	}
	return v
}

func sameViews(t testing.TB, what string, a, b readViews) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d views vs %d", what, len(a), len(b))
	}
	for k, evs := range a {
		sameEvents(t, what+": "+k, evs, b[k])
	}
}

// ---- packed segment files (format: see core/internal/segment/doc.go) ----

// packedFile is a packed segment file parsed by core/internal/segment.
type packedFile struct {
	path   string
	data   []byte
	codec  segment.Codec
	size   int64
	blocks []segment.PackedBlock
}

// isPackedSegment reports whether the segment file at path is packed
// (a header of version 2).
func isPackedSegment(t testing.TB, path string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := make([]byte, format.SegmentHeaderSize)
	if _, err := f.ReadAt(h, 0); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return segment.IsPackedHeader(h)
}

// readPacked parses a packed segment file's trailer and block table.
func readPacked(t testing.TB, path string) *packedFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	key, ok := segment.ParseName(filepath.Base(path))
	if !ok {
		t.Fatalf("%s is not a segment file name", path)
	}
	pk, err := segment.ParsePacked(data, key)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &packedFile{path: path, data: data, codec: pk.Codec(), size: pk.Size(), blocks: pk.Blocks()}
}

var testZstd, _ = zstd.NewReader(nil)

// block decompresses block i.
func (p *packedFile) block(t testing.TB, i int) []byte {
	t.Helper()
	b := p.blocks[i]
	stored := p.data[b.FileAt : b.FileAt+int64(b.Stored)]
	var out []byte
	var err error
	switch p.codec {
	case 1:
		out, err = testZstd.DecodeAll(stored, nil)
	case 2:
		out, err = s2.Decode(nil, stored)
	default:
		t.Fatalf("%s: codec %d", p.path, p.codec)
	}
	if err != nil {
		t.Fatalf("%s: block %d: %v", p.path, i, err)
	}
	return out
}

// logical returns the plain segment content (header and frames).
func (p *packedFile) logical(t testing.TB) []byte {
	t.Helper()
	out := append([]byte(nil), p.data[:format.SegmentHeaderSize]...)
	for i := range p.blocks {
		out = append(out, p.block(t, i)...)
	}
	return out
}

// blockEvents returns the ids of the events in block i.
func (p *packedFile) blockEvents(t testing.TB, i int) []core.EventID {
	t.Helper()
	logical := p.logical(t)
	b := p.blocks[i]
	var out []core.EventID
	for _, f := range frames(logical) {
		if f.Off >= int(b.Start) && f.Off < int(b.Start+b.Length) && logical[f.recStart()] == 1 {
			out = append(out, recordID(logical, f))
		}
	}
	return out
}

// segmentContent returns a segment's plain content, decompressing a
// packed one.
func segmentContent(t testing.TB, path string) []byte {
	t.Helper()
	if isPackedSegment(t, path) {
		return readPacked(t, path).logical(t)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func footerPath(seg string) string { return strings.TrimSuffix(seg, ".seg") + ".idx" }

func removeGlob(t testing.TB, dir, pattern string) {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range m {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
}

func zstdConfig(dir string) core.Config {
	cfg := testConfig(dir)
	smallSegments(&cfg)
	cfg.Compression = core.CompressionZstd
	return cfg
}

func mustSeal(t testing.TB, s *core.Store) {
	t.Helper()
	if err := s.SealSegments(context.Background()); err != nil {
		t.Fatalf("SealSegments: %v", err)
	}
}

// checkAllPacked fails unless every segment but the last is packed and
// Diagnostics agrees.
func checkAllPacked(t testing.TB, s *core.Store, what string) core.Diagnostics {
	t.Helper()
	segs := segmentFiles(t, s.Dir())
	for i, p := range segs {
		if got, want := isPackedSegment(t, p), i < len(segs)-1; got != want {
			t.Fatalf("%s: %s packed %v, want %v", what, filepath.Base(p), got, want)
		}
	}
	d := s.Diagnostics()
	if d.PackedSegments != len(segs)-1 || d.Segments != len(segs) {
		t.Fatalf("%s: Diagnostics shows %d packed of %d segments, the directory %d of %d", what, d.PackedSegments, d.Segments, len(segs)-1, len(segs))
	}
	var disk int64
	for _, p := range segs[:len(segs)-1] {
		disk += fileSize(t, p)
	}
	if d.PackedBytes != disk {
		t.Fatalf("%s: PackedBytes %d, the packed files take %d", what, d.PackedBytes, disk)
	}
	return d
}

// ---- 1. round trip ----

func TestPackedRoundTrip(t *testing.T) {
	for _, codec := range []core.Compression{core.CompressionZstd, core.CompressionS2} {
		t.Run(codec.String(), func(t *testing.T) { packedRoundTrip(t, codec) })
	}
}

func packedRoundTrip(t *testing.T, codec core.Compression) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := testConfig(dir)
	smallSegments(&cfg)
	cfg.Compression = codec
	s := openWith(t, cfg)
	h := writeOrders(t, s, 2500, 1)
	entities := h.entities()
	checkWritten(t, s, h, "while the sealer runs")
	before := captureViews(t, s, entities)

	mustSeal(t, s)
	nseg := len(segmentFiles(t, dir))
	if nseg < 20 {
		t.Fatalf("only %d segments; the test wants many", nseg)
	}
	d := checkAllPacked(t, s, "after SealSegments")
	ratio := float64(d.PackedRawBytes) / float64(d.PackedBytes)
	t.Logf("%s: %d events, %d segments, %d packed: %d bytes raw, %d on disk (ratio %.2f)", codec, len(h.events), nseg, d.PackedSegments, d.PackedRawBytes, d.PackedBytes, ratio)
	var raw int64
	for _, p := range segmentFiles(t, dir)[:nseg-1] {
		raw += int64(len(segmentContent(t, p)))
	}
	if d.PackedRawBytes != raw {
		t.Fatalf("PackedRawBytes %d, the packed segments hold %d bytes", d.PackedRawBytes, raw)
	}
	switch {
	case codec == core.CompressionZstd && ratio <= 2:
		t.Fatalf("zstd ratio %.2f, want > 2", ratio)
	case ratio <= 1.3:
		t.Fatalf("%s ratio %.2f, want > 1.3", codec, ratio)
	}
	if d.Footers < nseg-1 {
		t.Fatalf("%d footers after SealSegments, want one per sealed segment (%d)", d.Footers, nseg-1)
	}
	checkWritten(t, s, h, "after SealSegments")
	sameViews(t, "before vs after packing", before, captureViews(t, s, entities))
	if rep := mustVerify(t, s); rep.Events != len(h.events)+h.hidden || rep.Hidden != h.hidden {
		t.Fatalf("Verify checked %d events (%d hidden), want %d (%d)", rep.Events, rep.Hidden, len(h.events)+h.hidden, h.hidden)
	}
	// Idempotency keys of packed events still dedupe.
	for _, e := range h.events {
		if e.idem == "" || !strings.HasPrefix(e.idem, "ord-") || e.r.GlobalSequence > uint64(len(h.events))/2 {
			continue
		}
		r := mustAppendOpts(t, s, e.coord, e.kind, e.payload, core.AppendOptions{IdempotencyKey: e.idem})
		if !r.Deduplicated || r.ID != e.r.ID || r.GlobalSequence != e.r.GlobalSequence {
			t.Fatalf("retry of %q after packing: %+v, want the original %+v", e.idem, r, e.r)
		}
	}
	want := captureState(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(segmentFiles(t, dir)); n != nseg {
		t.Fatalf("%d segments after Close, had %d", n, nseg)
	}
	for _, p := range segmentFiles(t, dir) {
		if _, err := os.Stat(footerPath(p)); err != nil {
			t.Fatalf("after Close, segment %s has no footer: %v", filepath.Base(p), err)
		}
	}

	open := func(what string, cfg core.Config, path string, scanned, footers int) *core.Store {
		t.Helper()
		s, rep := openPath(t, cfg)
		if rep.Path != path || (scanned >= 0 && rep.SegmentsScanned != scanned) || (footers >= 0 && rep.Footers != footers) {
			t.Errorf("%s: open report %+v; want path %q, %d segments scanned, %d footers", what, rep, path, scanned, footers)
		}
		sameState(t, what, captureState(t, s), want)
		checkWritten(t, s, h, what)
		sameViews(t, what, before, captureViews(t, s, entities))
		return s
	}
	// Right after the session that wrote everything: the footers of the
	// sealed segments and the one Close wrote for the active segment
	// cover every frame.
	fresh := cfg
	fresh.Dir = filepath.Join(t.TempDir(), "fresh")
	copyTree(t, dir, fresh.Dir, func(n string) bool { return n == checkpointFile })
	s = open("footers path after the writing session", fresh, "footers", 0, nseg)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open("checkpoint path", cfg, "checkpoint", -1, -1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	removeGlob(t, dir, checkpointFile)
	s = open("footers path", cfg, "footers", 0, nseg)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	removeGlob(t, dir, checkpointFile)
	removeGlob(t, dir, "*.idx")
	s = open("scan path", cfg, "scan", nseg, 0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	ro, err := core.OpenReadOnly(cfg)
	if err != nil {
		t.Fatalf("OpenReadOnly: %v", err)
	}
	sameState(t, "read-only", captureState(t, ro), want)
	checkWritten(t, ro, h, "read-only")
	if err := ro.SealSegments(ctx); !errors.Is(err, core.ErrReadOnly) {
		t.Fatalf("SealSegments on a read-only store: %v, want ErrReadOnly", err)
	}
	ro.Close()
	bare := filepath.Join(t.TempDir(), "bare")
	copyTree(t, dir, bare, noCheckpoint)
	rocfg := cfg
	rocfg.Dir = bare
	ro, err = core.OpenReadOnly(rocfg)
	if err != nil {
		t.Fatalf("OpenReadOnly without checkpoint or footers: %v", err)
	}
	if p := ro.Diagnostics().Open.Path; p != "scan" {
		t.Errorf("read-only open without checkpoint or footers: path %q", p)
	}
	sameState(t, "read-only scan", captureState(t, ro), want)
	ro.Close()

	// Writes continue the sequence and every entity's clock.
	s = openWith(t, cfg)
	next := s.Stats().GlobalSequence
	if next != uint64(len(h.events)+h.hidden) {
		t.Fatalf("next sequence %d, want %d", next, len(h.events)+h.hidden)
	}
	for k, e := range []string{"cust:001", "cust:017", entities[len(entities)-1], "new:1"} {
		evs, err := s.Stream(e)
		if err != nil {
			t.Fatal(err)
		}
		r := mustAppend(t, s, mustCoord(t, e, "eu"), kindA, `{"after":"reopen"}`)
		wantClock := uint64(0)
		if len(evs) > 0 {
			wantClock = evs[len(evs)-1].Header.Clock + 1
		}
		if r.GlobalSequence != next+uint64(k) || r.Clock != wantClock {
			t.Fatalf("write to %s after reopen: seq %d clock %d, want seq %d clock %d", e, r.GlobalSequence, r.Clock, next+uint64(k), wantClock)
		}
	}
	mustVerify(t, s)
}

// The sealer packs and footers a segment once the writer moves past it,
// without waiting for the next rotation.
func TestSealerPacksAfterEachRotation(t *testing.T) {
	cfg := zstdConfig(t.TempDir())
	s := openWith(t, cfg)
	writeOrders(t, s, 100, 6)
	for r := 0; r < 8; r++ {
		rotate(t, s)
		deadline := time.Now().Add(2 * time.Second)
		for {
			d := s.Diagnostics()
			if d.Segments >= 2 && d.PackedSegments == d.Segments-1 && d.Footers >= d.Segments-1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("rotation %d: 2 s later, %d of %d segments packed, %d footers (the segment just sealed waits for the next rotation)",
					r, d.PackedSegments, d.Segments, d.Footers)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
}

// OpenReadOnly runs beside a live writer whose sealer packs segments (a
// new file generation, then the old file deleted): it must open.
func TestPackedReadOnlyOpenBesideSealer(t *testing.T) {
	ctx := context.Background()
	cfg := zstdConfig(t.TempDir())
	s := openWith(t, cfg)
	var acked atomic.Int64
	var done atomic.Bool
	werr := make(chan error, 1)
	go func() {
		defer done.Store(true)
		rng := rand.New(rand.NewSource(9))
		for i := 0; i < 5000; i++ {
			c, _ := core.NewCoordinate(fmt.Sprintf("ro:%d", i%7), "eu")
			if _, err := s.Append(ctx, c, kindA, []byte(orderJSON(rng, i))); err != nil {
				werr <- err
				return
			}
			acked.Add(1)
		}
	}()
	opens := 0
	failed := map[string]int{}
	for !done.Load() {
		before := acked.Load()
		ro, err := core.OpenReadOnly(cfg)
		opens++
		if err != nil {
			msg := segNameRE.ReplaceAllString(strings.ReplaceAll(err.Error(), cfg.Dir+"/", ""), "<segment>")
			var ce *core.CorruptionError
			if errors.As(err, &ce) {
				msg = "*CorruptionError: " + segNameRE.ReplaceAllString(ce.Reason, "<segment>")
			}
			failed[msg]++
			continue
		}
		if n := ro.Stats().Events; n < uint64(before) {
			t.Errorf("a read-only open shows %d events, %d were acknowledged before it began", n, before)
		}
		ro.Close()
	}
	select {
	case err := <-werr:
		t.Fatal(err)
	default:
	}
	d := s.Diagnostics()
	if d.PackedSegments < 5 {
		t.Fatalf("only %d segments packed meanwhile", d.PackedSegments)
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d read-only opens beside the live writer failed (%d segments packed meanwhile): %v", sum(failed), opens, d.PackedSegments, failed)
	}
}

var segNameRE = regexp.MustCompile(`[0-9]{20}(\.[0-9]+)?\.seg`)

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// ---- 3. damage ----

// packedBase builds a closed zstd store with every sealed segment packed
// and footered; it returns the config and the history.
func packedBase(t *testing.T, n int, segmentMax int64) (core.Config, *sampleHistory) {
	t.Helper()
	cfg := zstdConfig(t.TempDir())
	cfg.SegmentMaxBytes = segmentMax
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := writeOrders(t, s, n, 2)
	mustSeal(t, s)
	checkAllPacked(t, s, "base")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return cfg, h
}

// wantCorruption fails unless err is a *CorruptionError (and ErrCorrupt)
// naming file.
func wantCorruption(t testing.TB, what string, err error, file string) {
	t.Helper()
	var ce *core.CorruptionError
	if !errors.As(err, &ce) || !errors.Is(err, core.ErrCorrupt) {
		t.Fatalf("%s: got %v (%T), want a *CorruptionError", what, err, err)
	}
	if filepath.Base(ce.File) != filepath.Base(file) || !strings.Contains(err.Error(), filepath.Base(file)) {
		t.Fatalf("%s: %v names %q, want %s", what, err, ce.File, filepath.Base(file))
	}
}

func TestPackedDamagedBlock(t *testing.T) {
	base, h := packedBase(t, 2000, 256<<10) // several blocks per segment
	segs := segmentFiles(t, base.Dir)
	victim := segs[len(segs)/2]
	pf := readPacked(t, victim)
	if len(pf.blocks) < 3 {
		t.Fatalf("%s has %d blocks; want several", filepath.Base(victim), len(pf.blocks))
	}
	bi := len(pf.blocks) / 2 // not the last: the footer check reads that one
	byID := h.byID()
	var hit, spared []core.EventID
	for i := range pf.blocks {
		for _, id := range pf.blockEvents(t, i) {
			switch _, visible := byID[id]; {
			case !visible:
			case i == bi:
				hit = append(hit, id)
			default:
				spared = append(spared, id)
			}
		}
	}
	if len(hit) == 0 || len(spared) == 0 {
		t.Fatalf("blocks hold %d and %d events", len(hit), len(spared))
	}
	damage := func(dir string) {
		p := filepath.Join(dir, filepath.Base(victim))
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		blk := pf.blocks[bi]
		b[blk.FileAt+int64(blk.Stored)/2] ^= 0x10
		writeFile(t, p, b)
	}

	t.Run("with footers", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "s")
		copyTree(t, base.Dir, dir, func(n string) bool { return n == checkpointFile })
		damage(dir)
		cfg := base
		cfg.Dir = dir
		// The footer stands in for the frames: Open succeeds, the damage
		// shows on read and in Verify.
		s, rep := openPath(t, cfg)
		if rep.Path != "footers" {
			t.Fatalf("path %q", rep.Path)
		}
		for _, id := range hit {
			_, err := s.Get(id)
			wantCorruption(t, "Get of an event in the damaged block", err, victim)
		}
		for _, id := range spared {
			ev, err := s.Get(id)
			if err != nil {
				t.Fatalf("Get of an event in a sound block of the damaged segment: %v", err)
			}
			sameAsWritten(t, "sound block", ev, byID[id])
		}
		if _, err := s.Query(core.All()); !errors.Is(err, core.ErrCorrupt) {
			t.Fatalf("Query over the damaged block: %v, want ErrCorrupt", err)
		}
		_, err := s.Verify()
		wantCorruption(t, "Verify", err, victim)
		// Writes go on; sealing leaves the damaged segment alone.
		mustAppend(t, s, mustCoord(t, "after", "eu"), kindA, `{}`)
	})

	t.Run("without its footer", func(t *testing.T) {
		for _, ck := range []bool{false, true} {
			dir := filepath.Join(t.TempDir(), fmt.Sprint(ck))
			copyTree(t, base.Dir, dir, func(n string) bool {
				return n == filepath.Base(footerPath(victim)) || (!ck && n == checkpointFile)
			})
			damage(dir)
			cfg := base
			cfg.Dir = dir
			s, err := core.Open(cfg)
			if err == nil {
				rep := s.Diagnostics().Open
				s.Close()
				t.Fatalf("checkpoint %v: Open of a store with a damaged packed block and no footer succeeded (%+v)", ck, rep)
			}
			wantCorruption(t, fmt.Sprintf("Open (checkpoint %v)", ck), err, victim)
			_, err = core.OpenReadOnly(cfg)
			wantCorruption(t, fmt.Sprintf("OpenReadOnly (checkpoint %v)", ck), err, victim)
		}
	})
}

func TestPackedTruncated(t *testing.T) {
	base, _ := packedBase(t, 800, 64<<10)
	segs := segmentFiles(t, base.Dir)
	victim := segs[1]
	size := fileSize(t, victim)
	cuts := map[string]int64{
		"trailer missing":        size - segment.PackedTrailerSize,
		"trailer cut":            size - 5,
		"block table cut":        size - segment.PackedTrailerSize - 3,
		"half the file":          size / 2,
		"header and a few bytes": format.SegmentHeaderSize + 10,
	}
	for name, cut := range cuts {
		for _, keep := range []string{"checkpoint and footers", "footers", "nothing"} {
			t.Run(name+", "+keep, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "s")
				copyTree(t, base.Dir, dir, func(n string) bool {
					switch keep {
					case "footers":
						return n == checkpointFile
					case "nothing":
						return noCheckpoint(n)
					}
					return false
				})
				if err := os.Truncate(filepath.Join(dir, filepath.Base(victim)), cut); err != nil {
					t.Fatal(err)
				}
				cfg := base
				cfg.Dir = dir
				s, err := core.Open(cfg)
				if err == nil {
					n := s.Stats().Events
					s.Close()
					t.Fatalf("Open of a store whose packed segment lost its end succeeded (%d events)", n)
				}
				wantCorruption(t, "Open", err, victim)
				_, err = core.OpenReadOnly(cfg)
				wantCorruption(t, "OpenReadOnly", err, victim)
			})
		}
	}
	// A flipped byte in the structure: header, block table, trailer.
	pf := readPacked(t, victim)
	tableAt := int64(le.Uint64(pf.data[len(pf.data)-segment.PackedTrailerSize+8:]))
	flips := map[string]int64{
		"header: segment id":     12,
		"header: checksum":       21,
		"block table: offset":    tableAt + 5,
		"block table: length":    tableAt + 17,
		"trailer: magic":         size - segment.PackedTrailerSize + 2,
		"trailer: logical size":  size - segment.PackedTrailerSize + 21,
		"trailer: checksum":      size - 1,
		"last block's last byte": int64(pf.blocks[len(pf.blocks)-1].FileAt) + int64(pf.blocks[len(pf.blocks)-1].Stored) - 1,
	}
	for name, at := range flips {
		t.Run("flipped "+name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "s")
			copyTree(t, base.Dir, dir, nil)
			p := filepath.Join(dir, filepath.Base(victim))
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[at] ^= 0x04
			writeFile(t, p, b)
			cfg := base
			cfg.Dir = dir
			s, err := core.Open(cfg)
			if err != nil {
				wantCorruption(t, "Open", err, victim)
				return
			}
			// Opened (from the checkpoint or footer): the damage must show
			// on reading.
			defer s.Close()
			if _, err := s.Query(core.All()); err == nil {
				if _, err := s.Verify(); err == nil {
					t.Fatalf("a flipped byte at %d of %s: Open, Query and Verify all succeed", at, filepath.Base(victim))
				}
			} else if !errors.Is(err, core.ErrCorrupt) {
				t.Fatalf("Query: %v, want ErrCorrupt", err)
			}
		})
	}
}

// ---- 4. redaction ----

func TestPackedRedact(t *testing.T) {
	ctx := context.Background()
	cfg := zstdConfig(t.TempDir())
	s := openWith(t, cfg)
	h := writeOrders(t, s, 1500, 3)
	mustSeal(t, s)
	checkAllPacked(t, s, "before redaction")
	segs := segmentFiles(t, cfg.Dir)
	lastSeg := segs[len(segs)-1]
	// Where each event is: in a packed segment or in the active one.
	inActive := map[core.EventID]bool{}
	{
		data, fs := readFrames(t, lastSeg)
		for _, f := range fs {
			if data[f.recStart()] == 1 {
				inActive[recordID(data, f)] = true
			}
		}
	}
	// Redact: two keyed singles in packed segments, one in the active one.
	var red []sampleEvent
	for _, e := range h.events {
		if e.idem != "" && strings.HasPrefix(e.idem, "ord-") && !inActive[e.r.ID] && (len(red) == 0 || e.r.GlobalSequence > red[0].r.GlobalSequence+400) {
			red = append(red, e)
			if len(red) == 2 {
				break
			}
		}
	}
	for i := len(h.events) - 1; i >= 0; i-- {
		if e := h.events[i]; inActive[e.r.ID] && e.coord.Entity != "cust:042" {
			red = append(red, e)
			break
		}
	}
	if len(red) != 3 {
		t.Fatalf("found %d events to redact", len(red))
	}
	// EraseEntity: an entity with events in several packed segments.
	const erased = "cust:042"
	var erasedEvs []sampleEvent
	for _, e := range h.events {
		if e.coord.Entity == erased {
			erasedEvs = append(erasedEvs, e)
		}
	}
	if len(erasedEvs) < 5 {
		t.Fatalf("%s has %d events", erased, len(erasedEvs))
	}
	for _, e := range red {
		if err := s.Redact(ctx, e.r.ID); err != nil {
			t.Fatalf("Redact(%s): %v", e.r.ID, err)
		}
	}
	if err := s.Redact(ctx, red[0].r.ID); err != nil {
		t.Fatalf("Redact of a redacted event: %v", err)
	}
	n, err := s.EraseEntity(ctx, erased)
	if err != nil || n != len(erasedEvs) {
		t.Fatalf("EraseEntity(%s) = %d, %v; want %d", erased, n, err, len(erasedEvs))
	}
	if n, err := s.EraseEntity(ctx, erased); err != nil || n != 0 {
		t.Fatalf("EraseEntity again = %d, %v; want 0", n, err)
	}

	gone := map[core.EventID]bool{}
	for _, e := range append(append([]sampleEvent(nil), red...), erasedEvs...) {
		gone[e.r.ID] = true
	}
	check := func(s *core.Store, what string) {
		t.Helper()
		all := withoutSystem(mustQuery(t, s, core.All())) // the audit records of the redactions aside
		if len(all) != len(h.events) {
			t.Fatalf("%s: %d events, want %d", what, len(all), len(h.events))
		}
		for i, ev := range all {
			e := h.events[i]
			if !gone[e.r.ID] {
				sameAsWritten(t, what, ev, e)
				continue
			}
			if !ev.Redacted || ev.Payload != nil || ev.Header.ID != e.r.ID || ev.GlobalSequence != e.r.GlobalSequence ||
				ev.Coordinate != e.coord || ev.IdempotencyKey != e.idem || ev.Header.PayloadHash != payloadDigest([]byte(e.payload)) {
				t.Fatalf("%s: redacted event %s reads %+v", what, e.r.ID, ev)
			}
			got, err := s.Get(e.r.ID)
			if err != nil || !got.Redacted || got.Payload != nil {
				t.Fatalf("%s: Get of redacted %s: %+v, %v", what, e.r.ID, got, err)
			}
		}
		mustVerify(t, s)
		// The erased payloads are gone from every file, compressed or not.
		for _, p := range segmentFiles(t, s.Dir()) {
			content := segmentContent(t, p)
			for _, e := range red {
				if bytes.Contains(content, []byte(e.payload)) {
					t.Fatalf("%s: %s still holds the payload of redacted %s", what, filepath.Base(p), e.r.ID)
				}
			}
		}
		// A redacted event's idempotency key still dedupes.
		r := mustAppendOpts(t, s, red[0].coord, red[0].kind, red[0].payload, core.AppendOptions{IdempotencyKey: red[0].idem})
		if !r.Deduplicated || r.ID != red[0].r.ID {
			t.Fatalf("%s: retry of the redacted event's key %q: %+v", what, red[0].idem, r)
		}
	}
	check(s, "after redaction")
	checkAllPacked(t, s, "after redaction")
	want := captureState(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, rep := openPath(t, cfg)
	if rep.Path != "checkpoint" {
		t.Errorf("reopen after redaction: path %q", rep.Path)
	}
	sameState(t, "checkpoint path after redaction", captureState(t, s), want)
	check(s, "checkpoint path")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	removeGlob(t, cfg.Dir, checkpointFile)
	s, rep = openPath(t, cfg)
	if rep.Path != "footers" {
		t.Errorf("reopen after redaction without the checkpoint: path %q", rep.Path)
	}
	sameState(t, "footers path after redaction", captureState(t, s), want)
	check(s, "footers path")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	removeGlob(t, cfg.Dir, checkpointFile)
	removeGlob(t, cfg.Dir, "*.idx")
	s, _ = openPath(t, cfg)
	sameState(t, "scan path after redaction", captureState(t, s), want)
	check(s, "scan path")
}

// ---- 5. compaction ----

// compactPair returns two copies of one closed plain store: the first
// opened as it is, the second with zstd and every sealed segment packed.
func compactPair(t *testing.T) (plain, packed *core.Store, h *sampleHistory) {
	t.Helper()
	cfg := testConfig(t.TempDir())
	smallSegments(&cfg)
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h = writeOrders(t, s, 1500, 4)
	rotate(t, s) // the tail of the history sealed too
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	dir2 := filepath.Join(t.TempDir(), "packed")
	copyTree(t, cfg.Dir, dir2, nil)
	plain = openWith(t, cfg)
	cfg2 := cfg
	cfg2.Dir = dir2
	cfg2.Compression = core.CompressionZstd
	packed = openWith(t, cfg2)
	mustSeal(t, packed)
	checkAllPacked(t, packed, "packed copy")
	sameState(t, "plain vs packed copy", captureState(t, packed), captureState(t, plain))
	return plain, packed, h
}

func TestPackedCompact(t *testing.T) {
	ctx := context.Background()
	plain, packed, h := compactPair(t)
	entities := h.entities()
	tomb := func(ev core.StoredEvent) bool { return strings.Contains(string(ev.Payload), `"status":"returned"`) }
	keep := func(ev core.StoredEvent) bool { return !strings.Contains(string(ev.Payload), `"country":"JP"`) }
	steps := []struct {
		name string
		cc   core.CompactConfig
	}{
		{"tombstone", core.TombstoneWhere(tomb)},
		{"retention", core.Retention(keep)},
		{"max per entity", core.CompactConfig{MaxPerEntity: 6}},
		{"merge", core.Merge()},
		{"all at once", core.CompactConfig{Merge: true, Keep: func(ev core.StoredEvent) bool { return !strings.Contains(string(ev.Payload), `"Osaka"`) },
			Tombstone: func(ev core.StoredEvent) bool { return strings.Contains(string(ev.Payload), "Hauptstraße") }}},
	}
	for _, st := range steps {
		rp, err := plain.Compact(ctx, st.cc)
		if err != nil {
			t.Fatalf("%s on plain segments: %v", st.name, err)
		}
		rk, err := packed.Compact(ctx, st.cc)
		if err != nil {
			t.Fatalf("%s on packed segments: %v", st.name, err)
		}
		t.Logf("%s: plain %+v; packed %+v", st.name, rp, rk)
		if rp.EventsRemoved != rk.EventsRemoved || rp.EventsTombstoned != rk.EventsTombstoned || rp.SegmentsRewritten != rk.SegmentsRewritten ||
			rp.SegmentsRemoved != rk.SegmentsRemoved || rp.BytesReclaimed != rk.BytesReclaimed {
			t.Fatalf("%s: plain and packed reports differ:\n %+v\n %+v", st.name, rp, rk)
		}
		if rk.DiskBytesReclaimed <= 0 && rk.EventsRemoved+rk.EventsTombstoned > 0 {
			t.Errorf("%s: DiskBytesReclaimed %d on packed segments", st.name, rk.DiskBytesReclaimed)
		}
		// Each store recorded its own compactions (records of the same size,
		// with their own ids and times): compare the rest.
		ps, ks := captureState(t, packed), captureState(t, plain)
		if ps.stats != ks.stats {
			t.Fatalf("%s: stats differ:\n %+v\n %+v", st.name, ps.stats, ks.stats)
		}
		sameEvents(t, st.name+": packed vs plain", withoutNewAudit(ps.events, nil), withoutNewAudit(ks.events, nil))
		views := func(s *core.Store) readViews {
			v := captureViews(t, s, entities)
			v["all"] = withoutNewAudit(v["all"], nil)
			return v
		}
		sameViews(t, st.name+": packed vs plain", views(plain), views(packed))
		allGettable(t, packed, withoutNewAudit(mustQuery(t, plain, core.All()), nil))
		checkAllPacked(t, packed, st.name)
		for _, p := range segmentFiles(t, plain.Dir()) {
			if isPackedSegment(t, p) {
				t.Fatalf("%s: plain store has packed %s", st.name, filepath.Base(p))
			}
		}
		mustVerify(t, plain)
		mustVerify(t, packed)
		if l := leftovers(t, packed.Dir()); len(l) > 0 {
			t.Fatalf("%s: left behind %v", st.name, l)
		}
	}
	// Both reopen, through their footers, to the store they were.
	for _, s := range []*core.Store{plain, packed} {
		want := captureState(t, s)
		cfg := s.Config()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		removeGlob(t, cfg.Dir, checkpointFile)
		s2, rep := openPath(t, cfg)
		if rep.Path != "footers" {
			t.Errorf("%s: reopen after compaction: %+v", cfg.Compression, rep)
		}
		sameState(t, fmt.Sprintf("%s reopened after compaction", cfg.Compression), captureState(t, s2), want)
		mustVerify(t, s2)
	}
}

// ---- 6. snapshot under writes ----

func TestPackedSnapshotWhileWriting(t *testing.T) {
	ctx := context.Background()
	cfg := zstdConfig(t.TempDir())
	s := openWith(t, cfg)
	writeOrders(t, s, 600, 5)
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	var payloadsMu sync.Mutex
	written := map[core.EventID]string{}
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for i := 0; !stop.Load() && i < 4000; i++ {
				c, _ := core.NewCoordinate(fmt.Sprintf("w%d:%d", w, i%17), "eu")
				p := orderJSON(rng, i)
				r, err := s.Append(ctx, c, kindA, []byte(p))
				if err != nil {
					errs <- err
					return
				}
				payloadsMu.Lock()
				written[r.ID] = p
				payloadsMu.Unlock()
			}
		}(w)
	}
	// Let the writers rotate (and the sealer pack) a few segments, then
	// snapshot twice while they go on.
	for len(segmentFiles(t, cfg.Dir)) < 15 {
		time.Sleep(5 * time.Millisecond)
	}
	var snaps []string
	var reps []core.SnapshotReport
	for k := 0; k < 2; k++ {
		dest := filepath.Join(t.TempDir(), fmt.Sprintf("snap%d", k))
		rep, err := s.Snapshot(ctx, dest)
		if err != nil {
			t.Fatalf("Snapshot: %v", err)
		}
		snaps, reps = append(snaps, dest), append(reps, rep)
		time.Sleep(20 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("writer: %v", err)
	}
	for k, dest := range snaps {
		rep := reps[k]
		// Before it is opened: an open store's sealer writes temporary
		// files of its own.
		if l := leftovers(t, dest); len(l) > 0 {
			t.Fatalf("snapshot %d holds %v", k, l)
		}
		c := cfg
		c.Dir = dest
		cp, orep := openPath(t, c)
		t.Logf("snapshot %d: %d segments, sequence %d; the copy opened by %q (%d footers, %d segments scanned)", k, rep.Segments, rep.GlobalSequence, orep.Path, orep.Footers, orep.SegmentsScanned)
		st := cp.Stats()
		all := mustQuery(t, cp, core.All())
		// The history's cancelled fence hides 4 sequences.
		if st.GlobalSequence != rep.GlobalSequence || st.Events != rep.GlobalSequence-4 || uint64(len(all)) != st.Events {
			t.Fatalf("snapshot %d (sequence %d): the copy holds %d events, next sequence %d", k, rep.GlobalSequence, len(all), st.GlobalSequence)
		}
		if orep.Footers == 0 {
			t.Errorf("snapshot %d: no footer was copied and used (%+v)", k, orep)
		}
		for _, ev := range all {
			src, err := s.Get(ev.Header.ID)
			if err != nil {
				t.Fatalf("snapshot %d: event %s is not in the source: %v", k, ev.Header.ID, err)
			}
			sameEvents(t, "snapshot vs source", []core.StoredEvent{ev}, []core.StoredEvent{src})
			payloadsMu.Lock()
			p, ok := written[ev.Header.ID]
			payloadsMu.Unlock()
			if ok && p != string(ev.Payload) {
				t.Fatalf("snapshot %d: %s reads %s, was written %s", k, ev.Header.ID, ev.Payload, p)
			}
		}
		mustVerify(t, cp)
	}
}

// ---- 7. readers beside the sealer ----

func TestPackedReadsDuringSealing(t *testing.T) {
	ctx := context.Background()
	cfg := zstdConfig(t.TempDir())
	s := openWith(t, cfg)
	type rec struct {
		id      core.EventID
		payload string
	}
	var mu sync.Mutex
	var known []rec
	var wg sync.WaitGroup
	var writing atomic.Int32
	errs := make(chan error, 16)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	const writers, perWriter = 2, 1200
	for w := 0; w < writers; w++ {
		wg.Add(1)
		writing.Add(1)
		go func(w int) {
			defer wg.Done()
			defer writing.Add(-1)
			rng := rand.New(rand.NewSource(int64(100 + w)))
			for i := 0; i < perWriter; i++ {
				c, _ := core.NewCoordinate(fmt.Sprintf("rw%d:%d", w, i%9), sampleScopes[i%3])
				p := orderJSON(rng, i)
				r, err := s.Append(ctx, c, kindB, []byte(p))
				if err != nil {
					fail(fmt.Errorf("append: %w", err))
					return
				}
				mu.Lock()
				known = append(known, rec{r.ID, p})
				mu.Unlock()
			}
		}(w)
	}
	var gets, queries atomic.Int64
	for rd := 0; rd < 3; rd++ {
		wg.Add(1)
		go func(rd int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(rd)))
			for writing.Load() > 0 {
				mu.Lock()
				snap := known
				mu.Unlock()
				if len(snap) == 0 {
					time.Sleep(time.Millisecond)
					continue
				}
				if rd == 0 {
					// Whole-store and per-entity queries.
					all, err := s.Query(core.All())
					if err != nil {
						fail(fmt.Errorf("Query(All): %w", err))
						return
					}
					if len(all) < len(snap) {
						fail(fmt.Errorf("Query(All) returned %d events after %d were acknowledged", len(all), len(snap)))
						return
					}
					// The lazy iterator, reading each event as the loop reaches it.
					n := 0
					for ev, err := range s.Events(core.Scope("eu")) {
						if err != nil {
							fail(fmt.Errorf("Events(eu) after %d events: %w", n, err))
							return
						}
						if ev.Coordinate.Scope != "eu" {
							fail(fmt.Errorf("Events(eu) yields %v", ev.Coordinate))
							return
						}
						n++
					}
					ent := fmt.Sprintf("rw%d:%d", rng.Intn(writers), rng.Intn(9))
					evs, err := s.Stream(ent)
					if err != nil {
						fail(fmt.Errorf("Stream(%s): %w", ent, err))
						return
					}
					for i, ev := range evs {
						if ev.Header.Clock != uint64(i) {
							fail(fmt.Errorf("Stream(%s): clock %d at %d", ent, ev.Header.Clock, i))
							return
						}
					}
					queries.Add(1)
					continue
				}
				for k := 0; k < 50; k++ {
					r := snap[rng.Intn(len(snap))]
					ev, err := s.Get(r.id)
					if err != nil {
						fail(fmt.Errorf("Get(%s): %w", r.id, err))
						return
					}
					if string(ev.Payload) != r.payload {
						fail(fmt.Errorf("Get(%s) reads %s, was written %s", r.id, ev.Payload, r.payload))
						return
					}
					gets.Add(1)
				}
			}
		}(rd)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	d := s.Diagnostics()
	t.Logf("%d gets and %d queries beside the sealer; %d of %d segments packed", gets.Load(), queries.Load(), d.PackedSegments, d.Segments)
	if d.PackedSegments < 5 {
		t.Fatalf("the sealer packed only %d segments while the readers ran", d.PackedSegments)
	}
	mustSeal(t, s)
	all := mustQuery(t, s, core.All())
	if len(all) != writers*perWriter {
		t.Fatalf("%d events, want %d", len(all), writers*perWriter)
	}
	mu.Lock()
	for _, r := range known {
		ev, err := s.Get(r.id)
		if err != nil || string(ev.Payload) != r.payload {
			t.Fatalf("Get(%s) after sealing: %v", r.id, err)
		}
	}
	mu.Unlock()
	mustVerify(t, s)
}

// ---- 9. configuration ----

func TestCompressionConfig(t *testing.T) {
	for _, c := range []core.Compression{3, 4, 255} {
		cfg := testConfig(t.TempDir())
		cfg.Compression = c
		err := cfg.Validate()
		var ce *core.ConfigError
		if !errors.As(err, &ce) || ce.Field != "Compression" || !errors.Is(err, core.ErrInvalidConfig) || !strings.Contains(err.Error(), "Compression") {
			t.Fatalf("Validate with Compression %d: %v, want a *ConfigError naming Compression", c, err)
		}
		s, err := core.Open(cfg)
		if err == nil {
			s.Close()
			t.Fatalf("Open with Compression %d succeeded", c)
		}
		if !errors.As(err, &ce) || ce.Field != "Compression" {
			t.Fatalf("Open with Compression %d: %v", c, err)
		}
		if ents, _ := os.ReadDir(cfg.Dir); len(ents) != 0 {
			t.Fatalf("a refused Open left %d files", len(ents))
		}
	}
	for _, c := range []core.Compression{core.CompressionNone, core.CompressionZstd, core.CompressionS2} {
		cfg := testConfig(t.TempDir())
		cfg.Compression = c
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Validate with %s: %v", c, err)
		}
	}
	good := map[string]core.Compression{
		"none": core.CompressionNone, "NONE": core.CompressionNone, "None": core.CompressionNone,
		"zstd": core.CompressionZstd, "ZSTD": core.CompressionZstd, "Zstd": core.CompressionZstd,
		"s2": core.CompressionS2, "S2": core.CompressionS2,
	}
	for in, want := range good {
		got, err := core.ParseCompression(in)
		if err != nil || got != want {
			t.Fatalf("ParseCompression(%q) = %v, %v; want %v", in, got, err, want)
		}
		if back, err := core.ParseCompression(got.String()); err != nil || back != got {
			t.Fatalf("ParseCompression(%q.String()) = %v, %v", got, back, err)
		}
	}
	for _, in := range []string{"gzip", "lz4", "zstd2", "snappy", "s3", "zst", "no", "zstd s2", "1"} {
		got, err := core.ParseCompression(in)
		if err == nil {
			t.Fatalf("ParseCompression(%q) = %v, want an error", in, got)
		}
		if !strings.Contains(err.Error(), in) {
			t.Fatalf("ParseCompression(%q): %q does not name the value", in, err)
		}
	}
}
