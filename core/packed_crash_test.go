package core_test

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/format"
)

// The background sealer is crash-safe: a SIGKILL while it packs or
// footers a segment (writes going on) loses no acknowledged event,
// changes none, and leaves nothing Open does not clean up.

func init() { helperModes["packcrash"] = helperPackCrash }

// pcPayload is the payload of event i of round round (a function of both).
func pcPayload(round, i int) string {
	return orderJSON(rand.New(rand.NewSource(int64(round)<<32|int64(i))), i)
}

func pcConfig(dir string) core.Config {
	cfg := zstdConfig(dir)
	cfg.Sync.EveryNEvents, cfg.Sync.Interval = 0, 0 // written is enough for a SIGKILL
	return cfg
}

// helperPackCrash appends (keyed singles and batches) to a zstd store with
// 64 KiB segments, so the sealer packs one every hundred events or so,
// until killed. It prints "ACK id seq i" for each acknowledged event.
func helperPackCrash(dir string) error {
	round, _ := strconv.Atoi(os.Getenv("BATPAK_ROUND"))
	s, err := core.Open(pcConfig(dir))
	if err != nil {
		return err
	}
	ctx := context.Background()
	var mu sync.Mutex
	say := func(r core.Receipt, i int) error {
		mu.Lock()
		defer mu.Unlock()
		_, err := fmt.Printf("ACK %s %d %d\n", r.ID, r.GlobalSequence, i)
		return err
	}
	for i := 0; ; {
		c, _ := core.NewCoordinate(fmt.Sprintf("pc:%d", i%11), sampleScopes[i%3])
		if i%25 == 0 {
			items := []core.BatchItem{
				{Coordinate: c, Kind: kindA, Payload: []byte(pcPayload(round, i))},
				{Coordinate: c, Kind: kindB, Payload: []byte(pcPayload(round, i+1)), Causation: core.PriorItem(0)},
				{Coordinate: c, Kind: kindC, Payload: []byte(pcPayload(round, i+2))},
			}
			rs, err := s.AppendBatch(ctx, items)
			if err != nil {
				return err
			}
			for k, r := range rs {
				if err := say(r, i+k); err != nil {
					return err
				}
			}
			i += 3
			continue
		}
		r, err := s.AppendWithOptions(ctx, c, kindA, []byte(pcPayload(round, i)), core.AppendOptions{IdempotencyKey: fmt.Sprintf("pc-%d-%d", round, i)})
		if err != nil {
			return err
		}
		if err := say(r, i); err != nil {
			return err
		}
		i++
	}
}

// packingFiles reports whether dir holds a compaction's temporary
// segment or journal (the sealer packing a segment).
func packingFiles(dir string) bool {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, ".seg.tmp") || strings.HasPrefix(n, "compact.journal") {
			return true
		}
	}
	return false
}

type pcAck struct {
	id       core.EventID
	seq      uint64
	round, i int
}

func TestPackedSealerSurvivesKill(t *testing.T) {
	rng := crashRNG(t)
	dir := t.TempDir()
	var acks []pcAck
	start := time.Now()
	midway, rounds := 0, 0
	// Up to 16 rounds in about 7 s, and more until pcMinMidway kills
	// landed with packing work in flight (temporary files or a journal on
	// disk), up to pcMaxRounds.
	const pcMinMidway, pcMaxRounds = 2, 40
	for round := 0; (round < 16 && time.Since(start) < 7*time.Second) || midway < pcMinMidway; round++ {
		if round == pcMaxRounds {
			t.Fatalf("only %d of %d kills landed with packing work in flight; want %d", midway, round, pcMinMidway)
		}
		rounds++
		c := startHelper(t, "packcrash", dir, "BATPAK_ROUND="+strconv.Itoa(round))
		target := 150 + rng.Intn(1200)
		n := 0
		var lines []string
		if round%2 == 0 {
			// A random moment.
			lines = c.killWhen(t, func(ln string) bool {
				n++
				return n >= target
			}, time.Duration(rng.Intn(30000))*time.Microsecond)
		} else {
			// Soon after packing files appear, once target events were
			// acknowledged.
			var counted atomic.Int64
			var packing atomic.Bool
			stop := make(chan struct{})
			go func() {
				giveUp := time.Now().Add(15 * time.Second) // then kill anyway
				for {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Microsecond):
					}
					if counted.Load() >= int64(target) && packingFiles(dir) || time.Now().After(giveUp) {
						packing.Store(true)
						return
					}
				}
			}()
			lines = c.killWhen(t, func(ln string) bool {
				counted.Store(int64(n))
				n++
				return packing.Load()
			}, time.Duration(rng.Intn(2000))*time.Microsecond)
			close(stop)
		}
		nAcks := 0
		for _, ln := range lines {
			f := strings.Fields(ln)
			if len(f) != 4 || f[0] != "ACK" {
				t.Fatalf("helper said %q", ln)
			}
			id, err := core.ParseEventID(f[1])
			if err != nil {
				t.Fatal(err)
			}
			a := pcAck{id: id, round: round}
			a.seq, _ = strconv.ParseUint(f[2], 10, 64)
			a.i, _ = strconv.Atoi(f[3])
			acks = append(acks, a)
			nAcks++
		}
		left := leftovers(t, dir)
		if len(left) > 0 {
			midway++
		}
		packed := 0
		for _, p := range segmentFiles(t, dir) {
			// (A segment whose creation the kill cut short may be shorter
			// than a header: Open recreates it.)
			if b, err := os.ReadFile(p); err == nil && len(b) >= format.SegmentHeaderSize && le.Uint16(b[8:]) == 2 {
				packed++
			}
		}
		t.Logf("round %d: killed after %d acknowledgements; %d segments, %d packed; left %v", round, nAcks, len(segmentFiles(t, dir)), packed, left)
		checkAfterPackCrash(t, dir, acks)
	}
	// The store packs on: everything sealed is packed, nothing changed.
	s := openWith(t, pcConfig(dir))
	mustSeal(t, s)
	d := checkAllPacked(t, s, "after the kills")
	mustVerify(t, s)
	for _, a := range acks {
		ev, err := s.Get(a.id)
		if err != nil || ev.GlobalSequence != a.seq || string(ev.Payload) != pcPayload(a.round, a.i) {
			t.Fatalf("acknowledged event %s after packing: %v", a.id, err)
		}
	}
	t.Logf("%d rounds (%d killed with packing work in flight), %d acknowledged events, %d segments packed, in %v",
		rounds, midway, len(acks), d.PackedSegments, time.Since(start).Round(time.Millisecond))
	if d.PackedSegments < 5 {
		t.Fatalf("only %d segments packed", d.PackedSegments)
	}
}

// checkAfterPackCrash opens the store after a kill (without compression,
// so no packing starts while the directory is checked) and checks every
// acknowledged event.
func checkAfterPackCrash(t *testing.T, dir string, acks []pcAck) {
	t.Helper()
	cfg := pcConfig(dir)
	cfg.Compression = core.CompressionNone
	// The reference: every frame read, no checkpoint, no footer.
	ref := cfg
	ref.Dir = filepath.Join(t.TempDir(), "ref")
	copyTree(t, dir, ref.Dir, noCheckpoint)
	rs, err := core.Open(ref) // finishes an interrupted packing, as Open does
	if err != nil {
		t.Fatalf("Open of a copy: %v", err)
	}
	rs.Close()
	removeGlob(t, ref.Dir, checkpointFile)
	removeGlob(t, ref.Dir, "*.idx")
	rs, err = core.OpenReadOnly(ref)
	if err != nil {
		t.Fatalf("Open of a copy without checkpoint and footers: %v", err)
	}
	if p := rs.Diagnostics().Open.Path; p != "scan" {
		t.Fatalf("reference path %q", p)
	}
	want := mustQuery(t, rs, core.All())
	rs.Close()
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatalf("Open after a SIGKILL during sealing: %v", err)
	}
	defer s.Close()
	if l := leftovers(t, dir); len(l) > 0 {
		t.Fatalf("Open left %v behind", l)
	}
	rep := s.Diagnostics().Open
	t.Logf("reopened by %q: %d footers, %d segments scanned", rep.Path, rep.Footers, rep.SegmentsScanned)
	mustVerify(t, s)
	all := mustQuery(t, s, core.All())
	sameEvents(t, "after the kill: "+rep.Path+" path vs a scan", all, want)
	seen := map[core.EventID]bool{}
	for i, ev := range all {
		if seen[ev.Header.ID] {
			t.Fatalf("event %s twice", ev.Header.ID)
		}
		seen[ev.Header.ID] = true
		if i > 0 && ev.GlobalSequence <= all[i-1].GlobalSequence {
			t.Fatalf("global order broken at %d", i)
		}
	}
	if st := s.Stats(); st.Events != uint64(len(all)) || len(all) < len(acks) {
		t.Fatalf("Stats counts %d events, Query finds %d, %d were acknowledged", st.Events, len(all), len(acks))
	}
	for _, a := range acks {
		ev, err := s.Get(a.id)
		if err != nil {
			t.Fatalf("acknowledged event %s (round %d, i %d) lost: %v", a.id, a.round, a.i, err)
		}
		if want := pcPayload(a.round, a.i); ev.GlobalSequence != a.seq || string(ev.Payload) != want || ev.Redacted {
			t.Fatalf("acknowledged event %s reads seq %d (want %d): %s, want %s", a.id, ev.GlobalSequence, a.seq, ev.Payload, want)
		}
	}
	// A keyed event of the last round still dedupes.
	for k := len(acks) - 1; k >= 0; k-- {
		a := acks[k]
		if a.i%25 < 3 {
			continue // a batch item, unkeyed
		}
		c := mustCoord(t, fmt.Sprintf("pc:%d", a.i%11), sampleScopes[a.i%3])
		r := mustAppendOpts(t, s, c, kindA, pcPayload(a.round, a.i), core.AppendOptions{IdempotencyKey: fmt.Sprintf("pc-%d-%d", a.round, a.i)})
		if !r.Deduplicated || r.ID != a.id {
			t.Fatalf("retry of acknowledged %s: %+v", a.id, r)
		}
		break
	}
}
