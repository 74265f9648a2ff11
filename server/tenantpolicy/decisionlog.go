package tenantpolicy

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The decision log on disk
//
// Each tenant's decisions are kept under <Options.DecisionDir>/<tenant>/
// as segment files named by a 16-digit sequence number, "<seq>.jsonl",
// one Decision as JSON per line, oldest first. A segment takes at most a
// quarter of the tenant's limits (Options.DecisionLogSize decisions,
// Options.DecisionLogBytes bytes, and at most 4 MiB; at least one
// decision); when the current one is full a new one is started. The
// oldest segment is removed as soon as the newer ones hold the limits'
// worth (DecisionLogSize decisions or DecisionLogBytes bytes). So a
// tenant's log takes at most 5/4 of DecisionLogBytes on disk (plus one
// decision), a query reads at most one segment at a time, and it sees
// exactly the newest decisions within both limits.
//
//	decisions/acme/0000000000000007.jsonl   {"decision_id":…,"result":"denied",…}\n…
//	decisions/acme/0000000000000008.jsonl   (current: appended to)
//
// Lines are appended by one writer goroutine, in the order the decisions
// were queued, with one write(2) per tenant per batch and no fsync: a
// process crash loses nothing already written, a power loss may lose the
// last seconds. A torn last line (a crash mid-write) is skipped when
// read, and the next decision written starts a new segment (it is not
// appended to the torn line).

// maxSegmentBytes bounds one segment (what a query reads at once).
const maxSegmentBytes = 4 << 20

// maxSegmentFileBytes is the largest segment file the log reads: a segment
// holds up to maxSegmentBytes, or one decision alone when that is larger
// (at most 8 × the largest DecisionMaxBytes of its input, plus a reason).
// A larger file was not written by the log (replaced or damaged on disk):
// it is skipped with a warning, never read.
const maxSegmentFileBytes = maxSegmentBytes + 16<<20

// readSegment reads one segment file within maxSegmentFileBytes: a
// regular file larger than that gives errOversized (wrapped) without being
// read, and so does anything that is not a regular file (a directory, a
// symbolic link, a named pipe, whose open would wait for a writer and
// hold up every tenant's decisions, or a device). The size is returned
// all the same.
func readSegment(path string) ([]byte, int64, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%w: %s is not a regular file (%v)", errOversized, path, fi.Mode().Type())
	}
	if fi.Size() > maxSegmentFileBytes {
		return nil, fi.Size(), fmt.Errorf("%w: %s (%d bytes; a segment holds at most %d)", errOversized, path, fi.Size(), maxSegmentFileBytes)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		// Replaced since the Lstat.
		return nil, 0, fmt.Errorf("%w: %s is not a regular file", errOversized, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSegmentFileBytes+1))
	if err == nil && len(b) > maxSegmentFileBytes {
		return nil, int64(len(b)), fmt.Errorf("%w: %s (more than the %d bytes a segment holds)", errOversized, path, maxSegmentFileBytes)
	}
	return b, int64(len(b)), err
}

// errOversized marks a segment file the log does not read.
var errOversized = errors.New("decision log: not a segment the log wrote")

// queued is one decision waiting for the writer.
type queued struct {
	tenant string
	seq    uint64 // its number in the queue (decisionStore.enqueued)
	line   []byte // the decision as JSON, with its newline
}

// tenantLog is the writer's and readers' view of one tenant's segments.
type tenantLog struct {
	mu       sync.Mutex
	loaded   bool
	segs     []segment // oldest first; the last is appended to
	curBytes int64     // of the last segment
	curCount int
	// torn: the last segment ends in a partial line (a crash or a failed
	// write mid-line); the next decision starts a new segment rather than
	// being glued to it.
	torn bool
}

// segment is one file of a tenant's log.
type segment struct {
	seq   uint64
	bytes int64
	count int
}

// decisionStore keeps every tenant's decision log on disk, fed through a
// bounded queue by the write path and written by one goroutine.
type decisionStore struct {
	dir      string
	maxCount int
	maxBytes int64
	segCount int
	segBytes int64
	log      *slog.Logger
	// exists says whether a tenant still exists: the decisions of one
	// deleted meanwhile are not written (its log is gone).
	exists func(string) bool

	q chan queued

	mu       sync.Mutex
	enqueued uint64 // decisions accepted into q
	qbytes   int64  // their JSON not yet written
	// pending counts each tenant's decisions in q: one tenant holds at
	// most share of them, so its flood of denials cannot crowd out the
	// other tenants' decisions.
	pending  map[string]int
	share    int
	written  uint64        // decisions the writer has handled (written or failed)
	progress chan struct{} // closed and replaced when written grows
	tenants  map[string]*tenantLog
	// removed holds, per tenant whose log was removed, the number of
	// the last decision queued before: those still queued are not
	// written (not even into a new tenant of the same id). An entry goes
	// once the writer is past it.
	removed map[string]uint64

	dropped   atomic.Uint64 // decisions refused because q was full
	writeErrs atomic.Uint64

	stop chan struct{}
	done chan struct{}

	// hold, when set (by tests), is called with each batch before it is
	// written: it may wait, holding the writer up.
	hold func(batch []queued)
}

func newDecisionStore(dir string, maxCount int, maxBytes int64, queue int, log *slog.Logger, exists func(string) bool) (*decisionStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := &decisionStore{
		dir: dir, maxCount: maxCount, maxBytes: maxBytes,
		segCount: max(1, (maxCount+3)/4), segBytes: max(1, min((maxBytes+3)/4, maxSegmentBytes)),
		log: log, exists: exists, q: make(chan queued, queue), progress: make(chan struct{}),
		pending: map[string]int{}, share: tenantQueueShare(queue),
		tenants: map[string]*tenantLog{}, removed: map[string]uint64{}, stop: make(chan struct{}), done: make(chan struct{}),
	}
	go s.run()
	return s, nil
}

// tenantQueueShare is how many of a queue's decisions one tenant may
// hold: a quarter of it, at least 1 (all of a queue under 4).
func tenantQueueShare(queue int) int {
	if queue < 4 {
		return queue
	}
	return queue / 4
}

// enqueue hands a decision to the writer without waiting: false when the
// queue is full, or holds the tenant's share already (the decision is
// dropped and counted).
func (s *decisionStore) enqueue(tenant string, line []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.qbytes+int64(len(line)) > DecisionQueueMaxBytes || s.pending[tenant] >= s.share {
		s.dropped.Add(1)
		return false
	}
	select {
	case s.q <- queued{tenant: tenant, seq: s.enqueued + 1, line: line}:
		s.enqueued++
		s.qbytes += int64(len(line))
		s.pending[tenant]++
		return true
	default:
		s.dropped.Add(1)
		return false
	}
}

// flush waits until every decision queued before the call is written.
func (s *decisionStore) flush(ctx context.Context) error {
	s.mu.Lock()
	target := s.enqueued
	s.mu.Unlock()
	for {
		s.mu.Lock()
		ok, ch := s.written >= target, s.progress
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-s.done:
			return errors.New("tenantpolicy: the decision log is closed")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// close writes what is queued and stops the writer.
func (s *decisionStore) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

func (s *decisionStore) run() {
	defer close(s.done)
	batch := make([]queued, 0, 256)
	for {
		select {
		case it := <-s.q:
			batch = append(batch[:0], it)
		case <-s.stop:
			for {
				select {
				case it := <-s.q:
					s.write(append(batch[:0], it))
				default:
					return
				}
			}
		}
	more:
		for len(batch) < cap(batch) {
			select {
			case it := <-s.q:
				batch = append(batch, it)
			default:
				break more
			}
		}
		s.write(batch)
	}
}

// write appends a batch, grouped by tenant in queue order, and reports
// progress to flush.
func (s *decisionStore) write(batch []queued) {
	if s.hold != nil {
		s.hold(batch)
	}
	var order []string
	var n int64
	items := map[string][]queued{}
	for _, it := range batch {
		n += int64(len(it.line))
		if _, ok := items[it.tenant]; !ok {
			order = append(order, it.tenant)
		}
		items[it.tenant] = append(items[it.tenant], it)
	}
	for _, t := range order {
		if err := s.appendTenant(t, items[t]); err != nil {
			s.writeErrs.Add(uint64(len(items[t])))
			s.log.Warn("policy decisions could not be written to the decision log", "tenant", t, "decisions", len(items[t]), "error", err)
		}
	}
	s.mu.Lock()
	s.written += uint64(len(batch))
	for t, its := range items {
		if s.pending[t] -= len(its); s.pending[t] <= 0 {
			delete(s.pending, t)
		}
	}
	for t, last := range s.removed {
		if last <= s.written {
			delete(s.removed, t)
		}
	}
	s.qbytes -= n
	close(s.progress)
	s.progress = make(chan struct{})
	s.mu.Unlock()
}

func (s *decisionStore) tenant(t string) *tenantLog {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.tenants[t]
	if l == nil {
		l = &tenantLog{}
		s.tenants[t] = l
	}
	return l
}

func (s *decisionStore) segPath(t string, seq uint64) string {
	return filepath.Join(s.dir, t, fmt.Sprintf("%016d.jsonl", seq))
}

// load lists a tenant's segments once (l.mu held).
func (s *decisionStore) load(t string, l *tenantLog) error {
	if l.loaded {
		return nil
	}
	ents, err := os.ReadDir(filepath.Join(s.dir, t))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	l.segs = l.segs[:0]
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".jsonl")
		if !ok || e.IsDir() {
			continue
		}
		// Only the log's own spelling (16 digits): a stray "7.jsonl" is
		// not segment 7, whose file segPath names 0000000000000007.jsonl.
		if seq, err := strconv.ParseUint(name, 10, 64); err == nil && name == fmt.Sprintf("%016d", seq) {
			l.segs = append(l.segs, segment{seq: seq})
		}
	}
	slices.SortFunc(l.segs, func(a, b segment) int { return cmp.Compare(a.seq, b.seq) })
	for i := range l.segs {
		b, size, err := readSegment(s.segPath(t, l.segs[i].seq))
		if errors.Is(err, errOversized) {
			// It holds no decision the log counts: retention keeps the
			// real ones and removes it once it is the oldest. Never
			// appended to: the next decision starts a new segment.
			s.log.Warn("policy decision log: a segment file is skipped", "tenant", t, "bytes", size, "error", err)
			l.segs[i].bytes, l.segs[i].count = 0, 0
			l.torn = true
			continue
		}
		if err != nil {
			return err
		}
		l.segs[i].bytes, l.segs[i].count = int64(len(b)), bytes.Count(b, []byte{'\n'})
		l.torn = len(b) > 0 && b[len(b)-1] != '\n'
	}
	l.curBytes, l.curCount = 0, 0
	if n := len(l.segs); n > 0 {
		l.curBytes, l.curCount = l.segs[n-1].bytes, l.segs[n-1].count
	} else {
		l.torn = false
	}
	l.loaded = true
	return nil
}

// retain removes the oldest segments while the newer ones hold the
// limits' worth (l.mu held).
func (s *decisionStore) retain(t string, l *tenantLog) error {
	for len(l.segs) > 1 {
		var n int
		var b int64
		for _, sg := range l.segs[1:] {
			n, b = n+sg.count, b+sg.bytes
		}
		if n < s.maxCount && b < s.maxBytes {
			return nil
		}
		if err := os.Remove(s.segPath(t, l.segs[0].seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		l.segs = l.segs[1:]
	}
	return nil
}

// appendTenant appends the decisions to the tenant's current segment,
// starting new ones as they fill and removing those past the retention.
// Decisions queued before the tenant's log was removed, and those of a
// tenant that no longer exists, are not written (checked under l.mu, so
// that a concurrent remove cannot leave a log behind).
func (s *decisionStore) appendTenant(t string, items []queued) error {
	l := s.tenant(t)
	l.mu.Lock()
	defer l.mu.Unlock()
	s.mu.Lock()
	cut := s.removed[t]
	s.mu.Unlock()
	var lines [][]byte
	for _, it := range items {
		if it.seq > cut {
			lines = append(lines, it.line)
		}
	}
	if len(lines) == 0 || !s.exists(t) {
		return nil
	}
	if err := s.load(t, l); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(s.dir, t), 0o700); err != nil {
		return err
	}
	for len(lines) > 0 {
		if len(l.segs) == 0 || l.torn || l.curCount >= s.segCount || (l.curCount > 0 && l.curBytes+int64(len(lines[0])) > s.segBytes) {
			next := uint64(1)
			if n := len(l.segs); n > 0 {
				next = l.segs[n-1].seq + 1
			}
			l.segs = append(l.segs, segment{seq: next})
			l.curBytes, l.curCount, l.torn = 0, 0, false
		}
		// As many lines as the current segment takes, in one write.
		var buf []byte
		n := 0
		for n < len(lines) && l.curCount < s.segCount && (l.curCount == 0 || l.curBytes+int64(len(lines[n])) <= s.segBytes) {
			buf = append(buf, lines[n]...)
			l.curBytes += int64(len(lines[n]))
			l.curCount++
			n++
		}
		lines = lines[n:]
		last := &l.segs[len(l.segs)-1]
		last.bytes, last.count = l.curBytes, l.curCount
		// O_NONBLOCK: a named pipe put in the segment's place since the
		// log was listed fails the open rather than hold the writer (of
		// every tenant's decisions) until something reads it.
		f, err := os.OpenFile(s.segPath(t, last.seq), os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NONBLOCK, 0o600)
		if err != nil {
			l.loaded = false
			return err
		}
		if st, serr := f.Stat(); serr != nil || !st.Mode().IsRegular() {
			f.Close()
			l.loaded = false
			return fmt.Errorf("%w: %s is not a regular file", errOversized, s.segPath(t, last.seq))
		}
		_, err = f.Write(buf)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			// The segment's size is unknown now: list it again next time.
			l.loaded = false
			return err
		}
		if err := s.retain(t, l); err != nil {
			return err
		}
	}
	return nil
}

// remove deletes a tenant's log; the tenant's decisions still queued are
// dropped.
func (s *decisionStore) remove(t string) error {
	l := s.tenant(t)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.loaded, l.segs = false, nil
	s.mu.Lock()
	delete(s.tenants, t)
	if s.enqueued > s.written {
		s.removed[t] = s.enqueued
	}
	s.mu.Unlock()
	return os.RemoveAll(filepath.Join(s.dir, t))
}

// DecisionQuery selects decisions of a tenant's log (Manager.QueryDecisions).
// Zero fields select everything.
type DecisionQuery struct {
	Since    time.Time // only decisions at or after this time
	ID       string    // only the decision with this id
	Result   string    // "denied" or "allowed"; "" both
	Revision string    // only decisions of this bundle revision
	// Limit is the most decisions returned (0: 100); Cursor continues a
	// previous page (its DecisionPage.Next).
	Limit  int
	Cursor string
}

// DecisionPage is one page of a query, newest first. Next is the cursor
// of the following (older) page, "" when there is none.
type DecisionPage struct {
	Decisions []Decision `json:"decisions"`
	Next      string     `json:"next,omitempty"`
}

// ErrBadCursor refuses a DecisionQuery.Cursor this log did not hand out.
var ErrBadCursor = errors.New("not a decision log cursor (want the next of a previous page)")

// position orders decisions: segment, then byte offset in it.
type position struct {
	seg uint64
	off int
}

func (p position) String() string { return fmt.Sprintf("%d.%d", p.seg, p.off) }

func parsePosition(s string) (position, error) {
	a, b, ok := strings.Cut(s, ".")
	seg, err1 := strconv.ParseUint(a, 10, 64)
	off, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || off < 0 {
		return position{}, ErrBadCursor
	}
	return position{seg, off}, nil
}

func (p position) less(q position) bool {
	return p.seg < q.seg || (p.seg == q.seg && p.off < q.off)
}

// query reads a tenant's log newest first: the newest s.maxCount
// decisions within s.maxBytes are visible; of them, those q selects.
func (s *decisionStore) query(t string, q DecisionQuery) (DecisionPage, error) {
	var before *position
	if q.Cursor != "" {
		p, err := parsePosition(q.Cursor)
		if err != nil {
			return DecisionPage{}, err
		}
		before = &p
	}
	l := s.tenant(t)
	l.mu.Lock()
	err := s.load(t, l)
	segs := make([]uint64, len(l.segs))
	for i, sg := range l.segs {
		segs[i] = sg.seq
	}
	l.mu.Unlock()
	if err != nil {
		return DecisionPage{}, err
	}
	page := DecisionPage{Decisions: []Decision{}}
	seen, bytesSeen := 0, int64(0)
	var last position
	for i := len(segs) - 1; i >= 0; i-- {
		b, _, err := readSegment(s.segPath(t, segs[i]))
		if errors.Is(err, os.ErrNotExist) {
			break // removed by retention meanwhile: older ones are gone too
		}
		if errors.Is(err, errOversized) {
			continue // warned about when the log was loaded
		}
		if err != nil {
			return DecisionPage{}, err
		}
		// A torn last line (no newline) is not a decision.
		end := bytes.LastIndexByte(b, '\n') + 1
		for end > 0 {
			start := bytes.LastIndexByte(b[:end-1], '\n') + 1
			line := b[start:end]
			pos := position{segs[i], start}
			end = start
			seen++
			bytesSeen += int64(len(line))
			if seen > s.maxCount || bytesSeen > s.maxBytes {
				return page, nil
			}
			if before != nil && !pos.less(*before) {
				continue
			}
			// A line that does not decode is damage (a torn write, a
			// file changed by hand): every line this log writes decodes,
			// numbers of any size included (decodeDecision).
			d, err := decodeDecision(line)
			if err != nil || !q.matches(d) {
				continue
			}
			if len(page.Decisions) == q.Limit {
				page.Next = last.String()
				return page, nil
			}
			page.Decisions = append(page.Decisions, d)
			last = pos
		}
	}
	return page, nil
}

func (q DecisionQuery) matches(d Decision) bool {
	return (q.ID == "" || d.ID == q.ID) && (q.Result == "" || d.Result == q.Result) &&
		(q.Revision == "" || d.Revision == q.Revision) && (q.Since.IsZero() || !d.Time.Before(q.Since))
}

// decodeDecision reads one line of the log. Numbers in the input fields
// and the reasons' contexts stay json.Number, so a number past float64's
// range (a policy may name one, or read one from a payload) reads back
// exactly instead of failing the line.
func decodeDecision(line []byte) (Decision, error) {
	var d Decision
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	err := dec.Decode(&d)
	return d, err
}
