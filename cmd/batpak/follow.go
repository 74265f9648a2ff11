package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/sdk/client"
)

// eventFilter holds query's filters that a region cannot express (or a
// server does not apply): --after, --since and, remotely, the clock range.
type eventFilter struct {
	after              bool
	afterSeq           uint64
	since              bool
	sinceUS            int64
	clocks             bool
	clockMin, clockMax uint64
}

// queryShows is the summary line's account of a query: the region, then
// the filters a region cannot express (--since as the instant it
// resolved to, --after as given), so a filtered table never reads as all.
func queryShows(r core.Region, f eventFilter, after string) string {
	s := "region: " + r.String()
	if f.since {
		s += "; since " + time.UnixMicro(f.sinceUS).UTC().Format(time.RFC3339)
	}
	if after != "" {
		s += "; after " + after
	}
	return s
}

func (f eventFilter) keep(ev core.StoredEvent) bool {
	switch {
	case f.after && ev.GlobalSequence <= f.afterSeq:
		return false
	case f.since && ev.Header.Timestamp < f.sinceUS:
		return false
	case f.clocks && (ev.Header.Clock < f.clockMin || ev.Header.Clock > f.clockMax):
		return false
	}
	return true
}

func (f eventFilter) apply(events iter.Seq2[core.StoredEvent, error]) iter.Seq2[core.StoredEvent, error] {
	return func(yield func(core.StoredEvent, error) bool) {
		for ev, err := range events {
			if err != nil {
				yield(ev, err)
				return
			}
			if f.keep(ev) && !yield(ev, nil) {
				return
			}
		}
	}
}

// sinceMicros reads query --since: an RFC 3339 time, or a duration before now.
// It returns Unix microseconds.
func sinceMicros(s string, now time.Time) (int64, error) {
	s = strings.TrimSpace(s)
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return 0, fmt.Errorf("%q is negative: want a duration back from now (15m, 24h)", s)
		}
		return now.Add(-d).UnixMicro(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UnixMicro(), nil
	}
	return 0, fmt.Errorf("%q is neither a duration (90s, 15m, 24h) nor an RFC 3339 time (2026-01-02T15:04:05Z)", s)
}

// parseAfter reads --after: an event id or a global sequence.
func parseAfter(s string) (id core.EventID, seq uint64, ok bool, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return id, 0, false, nil
	}
	if n, perr := strconv.ParseUint(s, 10, 64); perr == nil {
		return id, n, true, nil
	}
	id, err = core.ParseEventID(s)
	if err != nil {
		return id, 0, false, fmt.Errorf("%q is neither an event id nor a global sequence", s)
	}
	return id, 0, true, nil
}

// queryPrinter writes query's output: a table (flushed after every batch
// when following), JSON lines or YAML documents.
type queryPrinter struct {
	w      io.Writer
	format string
	shows  string // what the summary line says was asked for
	limit  int
	follow bool
	rec    *records
	tw     *tabwriter.Writer
	n      int
	more   bool
}

// newQueryPrinter prints to w; shows is what the table's summary line
// names as asked for (queryShows).
func newQueryPrinter(w io.Writer, format string, shows string, limit int, follow bool) *queryPrinter {
	p := &queryPrinter{w: w, format: format, shows: shows, limit: limit, follow: follow}
	if format == formatTable {
		p.tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	} else {
		p.rec = newRecords(w, format)
	}
	return p
}

func (p *queryPrinter) row(ev core.StoredEvent) error {
	p.n++
	if p.rec != nil {
		return p.rec.write(toEventJSON(ev))
	}
	if p.n == 1 {
		fmt.Fprintln(p.tw, "SEQ\tID\tENTITY\tSCOPE\tKIND\tCLOCK\tTIMESTAMP\tPAYLOAD")
	}
	h := ev.Header
	_, err := fmt.Fprintf(p.tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n",
		ev.GlobalSequence, h.ID, oneLine(ev.Coordinate.Entity), oneLine(ev.Coordinate.Scope), h.Kind, h.Clock,
		formatMicros(h.Timestamp), compactPayload(ev.Payload, 60))
	return err
}

func (p *queryPrinter) flush() error {
	if p.tw != nil {
		return p.tw.Flush()
	}
	return nil
}

// print writes events (read lazily: --limit and Ctrl-C stop the reading
// too) and, for a table, the summary line.
func (p *queryPrinter) print(ctx context.Context, events iter.Seq2[core.StoredEvent, error]) error {
	for ev, err := range events {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p.limit > 0 && p.n == p.limit {
			p.more = true
			break
		}
		if err := p.row(ev); err != nil {
			return err
		}
	}
	if p.follow || p.tw == nil {
		return p.flush()
	}
	if p.n == 0 {
		_, err := fmt.Fprintf(p.w, "no events; %s\n", p.shows)
		return err
	}
	if err := p.tw.Flush(); err != nil {
		return err
	}
	shown := plural(p.n, "event", "events")
	if p.more {
		shown = fmt.Sprintf("first %s shown (--limit %d; more match)", plural(p.n, "event", "events"), p.limit)
	}
	_, err := fmt.Fprintf(p.w, "%s; %s\n", shown, p.shows)
	return err
}

// followRemote prints the matching events, then new ones as the server
// streams them (Server-Sent Events, resumed after a dropped connection by
// sdk/client), until ctx ends: that ends it cleanly. The events already
// stored are read page by page first and printed in runs of up to 512
// rows, so that a table's columns line up as they do locally; the stream
// then starts after the last of them.
func followRemote(ctx context.Context, t *client.Tenant, q client.Query, flt eventFilter, p *queryPrinter) error {
	from := client.FromStart()
	if flt.after {
		from = client.After(flt.afterSeq)
	}
	// each prints one event the server sent, if flt keeps it.
	each := func(wev client.Event, err error) (core.StoredEvent, error) {
		if err != nil {
			if ctx.Err() != nil {
				return core.StoredEvent{}, errFollowEnded
			}
			return core.StoredEvent{}, remoteError(err)
		}
		ev, err := fromWire(wev)
		if err == nil && flt.keep(ev) {
			err = p.row(ev)
		}
		return ev, err
	}
	ended := func(err error) error {
		if errors.Is(err, errFollowEnded) {
			return p.flush()
		}
		return err
	}
	n := 0
	for wev, err := range t.Query(ctx, q) {
		ev, err := each(wev, err)
		if err != nil {
			return ended(err)
		}
		from = client.After(ev.GlobalSequence)
		if n++; n%followRun == 0 {
			if err := p.flush(); err != nil {
				return err
			}
		}
	}
	if err := p.flush(); err != nil {
		return err
	}
	sub := t.Subscribe(ctx, q, from)
	defer sub.Close()
	for wev, err := range sub.Events() {
		if _, err := each(wev, err); err != nil {
			return ended(err)
		}
		if err := p.flush(); err != nil {
			return err
		}
	}
	return p.flush()
}

// errFollowEnded: the follow's context ended (Ctrl-C), which ends it
// cleanly.
var errFollowEnded = errors.New("follow ended")

// followRun is how many rows of stored events a remote follow prints at
// a time (a table's columns line up within a run).
const followRun = 512

// followLocal prints the matching events of the local store, then new
// ones, until ctx ends. The store is opened read-only (beside a writer in
// another process, whose appends a read-only store does not see once
// open), so it is opened again whenever its files changed; between
// looks it waits poll.
func followLocal(ctx context.Context, a *app, res *resolved, r core.Region, flt eventFilter, p *queryPrinter, poll time.Duration) error {
	next := uint64(0) // the global sequence to read from
	if flt.after {
		next = flt.afterSeq + 1
	}
	if err := checkStoreDir(res.cfg.Dir); err != nil {
		return err
	}
	removed := func() bool { // the directory, or its store files, are gone
		err := checkStoreDir(res.cfg.Dir)
		return err != nil && exitCodeOf(err) == exitNotFound
	}
	errRemoved := withExitCode(exitNotFound, fmt.Errorf("the store at %s was removed while following it", filepath.Clean(res.cfg.Dir)))
	var last string
	var opened time.Time
	for {
		sig, err := storeSignature(res.cfg.Dir)
		if err != nil && removed() {
			return errRemoved
		}
		if err != nil {
			return err
		}
		// Writes through a memory mapping may reach a file's size and
		// time only when it is synced: look anyway every few seconds.
		if sig != last || time.Since(opened) > followReopen {
			last, opened = sig, time.Now()
			err := a.withReadStore(func(s *core.Store, _ *resolved) error {
				c := s.Cursor(r)
				c.Seek(next)
				for {
					evs, err := c.Poll(512)
					if err != nil {
						return err
					}
					if len(evs) == 0 {
						return nil
					}
					for _, ev := range evs {
						next = ev.GlobalSequence + 1
						if flt.keep(ev) {
							if err := p.row(ev); err != nil {
								return err
							}
						}
					}
					if err := p.flush(); err != nil {
						return err
					}
					if ctx.Err() != nil {
						return nil
					}
				}
			})
			if err != nil && removed() {
				return errRemoved
			}
			if err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return p.flush()
		case <-time.After(poll):
		}
	}
}

// followReopen is how long local --follow goes at most without opening
// the store again, whether or not its files look changed.
const followReopen = 3 * time.Second

// storeSignature names the state of a store directory's files (names,
// sizes, modification times): it changes when a writer appends.
func storeSignature(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("store directory: %w", err)
	}
	var b strings.Builder
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue // removed since listed (a compaction)
		}
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s:%d:%d;", filepath.Base(e.Name()), fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}
