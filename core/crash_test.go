package core_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// Crash safety with a real SIGKILL. A child process appends from several
// goroutines and prints every receipt the moment Append returns; the parent
// kills it at a random point and checks that every acknowledged event
// survived. Killing the process never loses an acknowledged event whatever
// the sync setting, because the event is written to the operating system
// before the receipt is returned.

const crashWriters = 4

func crashPayload(round, g, i int) string {
	return fmt.Sprintf(`{"round":%d,"g":%d,"i":%d,"pad":"%s"}`, round, g, i, strings.Repeat("x", (g*31+i)%97))
}

func crashKey(round, g, i int) string { return fmt.Sprintf("r%d-g%d-i%d", round, g, i) }

// helperCrash appends forever (until killed) from crashWriters goroutines,
// printing "ACK id seq round g i" after each acknowledged write.
func helperCrash(dir string) error {
	cfg := testConfig(dir)
	cfg.SegmentMaxBytes = 64 << 10 // rotate while being killed
	n, err := strconv.Atoi(os.Getenv("BATPAK_EVERYN"))
	if err != nil {
		return err
	}
	cfg.Sync.EveryNEvents = n
	round, _ := strconv.Atoi(os.Getenv("BATPAK_ROUND"))
	s, err := core.Open(cfg)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	errs := make(chan error, crashWriters)
	for g := 0; g < crashWriters; g++ {
		go func(g int) {
			c, err := core.NewCoordinate(fmt.Sprintf("crash:%d", g), "s")
			if err != nil {
				errs <- err
				return
			}
			for i := 0; ; i++ {
				var o core.AppendOptions
				if i%5 == 0 {
					o.IdempotencyKey = crashKey(round, g, i)
				}
				r, err := s.AppendWithOptions(context.Background(), c, kindA, []byte(crashPayload(round, g, i)), o)
				if err != nil {
					errs <- err
					return
				}
				line := fmt.Sprintf("ACK %s %d %d %d %d\n", r.ID, r.GlobalSequence, round, g, i)
				mu.Lock()
				_, err = os.Stdout.Write([]byte(line)) // one write: the line is whole or absent
				mu.Unlock()
				if err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	return <-errs
}

type ack struct {
	id            core.EventID
	seq           uint64
	round, g, i   int
	idempotentKey string
}

func parseAck(t *testing.T, ln string) ack {
	t.Helper()
	f := strings.Fields(ln)
	if len(f) != 6 || f[0] != "ACK" {
		t.Fatalf("unexpected helper output %q", ln)
	}
	id, err := core.ParseEventID(f[1])
	if err != nil {
		t.Fatalf("bad id in %q: %v", ln, err)
	}
	var a ack
	a.id = id
	a.seq, _ = strconv.ParseUint(f[2], 10, 64)
	a.round, _ = strconv.Atoi(f[3])
	a.g, _ = strconv.Atoi(f[4])
	a.i, _ = strconv.Atoi(f[5])
	if a.i%5 == 0 {
		a.idempotentKey = crashKey(a.round, a.g, a.i)
	}
	return a
}

// crashRound runs one child, kills it after target acknowledgements and
// returns every acknowledgement it printed.
func crashRound(t *testing.T, dir string, everyN, round, target int) []ack {
	t.Helper()
	c := startHelper(t, "crash", dir, "BATPAK_EVERYN="+strconv.Itoa(everyN), "BATPAK_ROUND="+strconv.Itoa(round))
	var acks []ack
	killed := false
	for {
		ln, ok := c.line()
		if !ok {
			break
		}
		if !strings.HasPrefix(ln, "ACK ") {
			if killed {
				continue
			}
			t.Fatalf("helper said %q; stderr:\n%s", ln, c.stderr)
		}
		acks = append(acks, parseAck(t, ln))
		if !killed && len(acks) >= target {
			if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
			// Keep reading: lines already in the pipe were acknowledged too.
		}
	}
	err := c.cmd.Wait()
	if !killed {
		t.Fatalf("helper stopped after %d acknowledgements (%v); stderr:\n%s", len(acks), err, c.stderr)
	}
	if ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper was not killed by SIGKILL: %v; stderr:\n%s", c.cmd.ProcessState, c.stderr)
	}
	return acks
}

// checkAfterCrash reopens dir and checks every acknowledged event.
func checkAfterCrash(t *testing.T, dir string, acks []ack) {
	t.Helper()
	cfg := testConfig(dir)
	cfg.SegmentMaxBytes = 64 << 10
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatalf("Open after SIGKILL: %v", err)
	}
	defer s.Close()
	for _, a := range acks {
		ev, err := s.Get(a.id)
		if err != nil {
			t.Fatalf("acknowledged event %s (round %d g %d i %d, seq %d) lost: %v", a.id, a.round, a.g, a.i, a.seq, err)
		}
		if ev.GlobalSequence != a.seq || string(ev.Payload) != crashPayload(a.round, a.g, a.i) ||
			ev.Coordinate.Entity != fmt.Sprintf("crash:%d", a.g) || ev.IdempotencyKey != a.idempotentKey {
			t.Fatalf("acknowledged event %s read back wrong: seq %d (want %d) entity %s payload %s",
				a.id, ev.GlobalSequence, a.seq, ev.Coordinate.Entity, ev.Payload)
		}
	}
	rep, err := s.Verify()
	if err != nil {
		t.Fatalf("Verify after SIGKILL: %v", err)
	}
	if rep.Events < len(acks) {
		t.Fatalf("Verify counted %d events, %d were acknowledged", rep.Events, len(acks))
	}
	// Idempotency keys of acknowledged writes survived the crash.
	ctx := context.Background()
	for _, a := range acks {
		if a.idempotentKey == "" {
			continue
		}
		c := mustCoord(t, fmt.Sprintf("crash:%d", a.g), "s")
		r, err := s.AppendWithOptions(ctx, c, kindA, []byte(crashPayload(a.round, a.g, a.i)), core.AppendOptions{IdempotencyKey: a.idempotentKey})
		if err != nil || !r.Deduplicated || r.ID != a.id || r.GlobalSequence != a.seq {
			t.Fatalf("retry of acknowledged idempotent write %s: %+v, %v", a.idempotentKey, r, err)
		}
		break // one per round is enough; the loop above checked the keys are stored
	}
	// Writable, with every entity's chain continuing.
	for g := 0; g < crashWriters; g++ {
		c := mustCoord(t, fmt.Sprintf("crash:%d", g), "s")
		evs, err := s.Stream(c.Entity)
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.Append(ctx, c, kindB, []byte(`{"after":"crash"}`))
		if err != nil {
			t.Fatalf("append after crash: %v", err)
		}
		if r.Clock != uint64(len(evs)) {
			t.Fatalf("crash:%d: clock after crash %d, want %d", g, r.Clock, len(evs))
		}
	}
	if _, err := s.Verify(); err != nil {
		t.Fatalf("Verify after writing on the recovered store: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func testKill9(t *testing.T, everyN, rounds int) {
	rng := crashRNG(t)
	dir := t.TempDir() // one store through every round: recovery after recovery
	var all []ack
	for round := 0; round < rounds; round++ {
		target := 200 + rng.Intn(1800)
		start := time.Now()
		acks := crashRound(t, dir, everyN, round, target)
		all = append(all, acks...)
		checkAfterCrash(t, dir, all)
		t.Logf("round %d: killed after %d acknowledgements (%d read), %v", round, target, len(acks), time.Since(start).Round(time.Millisecond))
	}
}

func TestKill9EveryEventSynced(t *testing.T) { testKill9(t, 1, 5) }

func TestKill9BatchedSync(t *testing.T) { testKill9(t, 1000, 3) }
