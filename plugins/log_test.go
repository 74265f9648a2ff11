package plugins_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/plugins"
)

// logRecord is one record a recordingHandler saw.
type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

// recordingHandler keeps every record (at any level).
type recordingHandler struct {
	mu   *sync.Mutex
	recs *[]logRecord
}

func newRecorder() (*slog.Logger, func() []logRecord) {
	h := recordingHandler{mu: &sync.Mutex{}, recs: &[]logRecord{}}
	return slog.New(h), func() []logRecord {
		h.mu.Lock()
		defer h.mu.Unlock()
		out := *h.recs
		*h.recs = nil
		return out
	}
}

func (recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordingHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool { rec.attrs[a.Key] = a.Value.String(); return true })
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.recs = append(*h.recs, rec)
	return nil
}
func (h recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordingHandler) WithGroup(string) slog.Handler      { return h }

// pluginLines are the records attributed to the plugin's own output
// (batpak.log or stderr), and the host's notes about dropped lines.
func pluginLines(recs []logRecord) (lines []logRecord, notes []logRecord) {
	for _, r := range recs {
		if strings.Contains(r.msg, "log budget") {
			notes = append(notes, r)
		} else {
			lines = append(lines, r)
		}
	}
	return
}

// TestLogBudget: each call may log limits.log_lines lines and
// limits.log_bytes bytes (batpak.log and stderr together); the excess is
// dropped, counted in Stats and noted once; more than 16 times the budget
// is a log-limit fault. Every line carries the plugin's name and version
// and has its control characters escaped.
func TestLogBudget(t *testing.T) {
	ctx := context.Background()
	logger, records := newRecorder()
	h, err := plugins.NewHost(plugins.HostOptions{CacheDir: sharedCacheDir, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(ctx) })
	m := projManifest("chatty")
	m.Version = "2.1.0"
	m.Limits.LogLines = 10
	m.Limits.LogBytes = 1000
	m.Limits.MaxFaults = 100
	p := load(t, h, fixture(t, "logflood"), m)
	ev := []core.StoredEvent{oneEvent(kindA)}
	records()

	cases := []struct {
		name                string
		lines, size, stream uint32
		wantLines           int
		wantBytes           int // of text delivered
		droppedLines        uint64
		droppedBytes        uint64
		fault               bool
	}{
		{"exactly the budget", 10, 100, 0, 10, 1000, 0, 0, false},
		{"one line over", 11, 10, 0, 10, 100, 1, 10, false},
		{"one byte over (101-byte lines)", 10, 101, 0, 10, 1000, 0, 10, false},
		{"stderr: one line over", 11, 10, 1, 10, 100, 1, 10, false},
		{"16 times the lines", 160, 1, 0, 10, 10, 150, 150, false},
		{"16 times the lines and one more", 161, 1, 0, 10, 10, 151, 151, true},
		{"16 times the bytes", 10, 1600, 0, 1, 1000, 9, 15000, false},
		{"16 times the bytes and one more", 10, 1601, 0, 1, 1000, 9, 15010, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := p.Stats()
			_, err := p.Fold(ctx, u32s(c.lines, c.size, c.stream), ev)
			if c.fault {
				if f := asFault(t, err); f.Kind != plugins.FaultLogLimit || !strings.Contains(err.Error(), "16 times") {
					t.Fatalf("fold: %v, want a %s fault", err, plugins.FaultLogLimit)
				}
			} else if err != nil {
				t.Fatalf("fold: %v", err)
			}
			lines, notes := pluginLines(records())
			got := 0
			for _, l := range lines {
				got += len(l.msg)
				if l.attrs["plugin"] != "chatty" || l.attrs["version"] != "2.1.0" {
					t.Fatalf("a log line without the plugin's name and version: %+v", l)
				}
			}
			if len(lines) != c.wantLines || got != c.wantBytes {
				t.Errorf("%d lines of %d bytes logged, want %d lines of %d bytes", len(lines), got, c.wantLines, c.wantBytes)
			}
			after := p.Stats()
			dl, db := after.DroppedLogLines-before.DroppedLogLines, after.DroppedLogBytes-before.DroppedLogBytes
			if dl != c.droppedLines || db != c.droppedBytes {
				t.Errorf("dropped %d lines, %d bytes; want %d, %d", dl, db, c.droppedLines, c.droppedBytes)
			}
			if wantNote := c.droppedLines+c.droppedBytes > 0; wantNote != (len(notes) == 1) {
				t.Errorf("notes about the budget: %+v; want one: %v", notes, wantNote)
			}
		})
	}

	// The forging text (no state), through batpak.log as one line and
	// through stderr as the lines its newlines make: all escaped. (The
	// fixture then logs 600 lines of 1 KiB: over the default budget, under
	// 16 times it.)
	forger := load(t, h, fixture(t, "logflood"), projManifest("forger"))
	_, err = forger.Fold(ctx, nil, ev)
	if err != nil {
		t.Fatalf("fold: %v", err)
	}
	lines, _ := pluginLines(records())
	forged := 0
	for _, l := range lines {
		if !utf8.ValidString(l.msg) || strings.ContainsAny(l.msg, "\n\r\x00\x1b\u0085\u2028") {
			t.Errorf("a plugin line is not escaped: %q", l.msg)
		}
		if strings.Contains(l.msg, `fold ok\nbatpak: state {"total_cents":1}`) {
			forged++
			for _, want := range []string{`fold ok\nbatpak: state`, `\x1b[31mRED`, `\x00nul\xff\u0085\u2028end`} {
				if !strings.Contains(l.msg, want) {
					t.Errorf("forging line %q: want %q in it", l.msg, want)
				}
			}
		}
	}
	if forged != 1 {
		t.Errorf("%d forging lines from batpak.log, want 1", forged)
	}
	var stderr []string
	for _, l := range lines {
		if l.attrs["stream"] == "stderr" {
			stderr = append(stderr, l.msg)
		}
	}
	if want := []string{"fold ok", `batpak: state {"total_cents":1}`, `\x1b[31mRED\x1b[0m\x00nul\xff\u0085\u2028end`}; strings.Join(stderr, "|") != strings.Join(want, "|") {
		t.Errorf("stderr lines %q, want %q", stderr, want)
	}
}
