package tenantplugin

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// LogLine is one line a plugin logged (batpak.log or stderr), as its
// status shows it. The text is escaped by the plugin host (no control
// characters) and cut to MaxLogLineBytes.
type LogLine struct {
	Time    time.Time `json:"time"`
	Level   string    `json:"level"`
	Stream  string    `json:"stream"` // "log" or "stderr"
	Version string    `json:"version"`
	Text    string    `json:"text"`
}

// Fault is one failed call of a plugin.
type Fault struct {
	Time    time.Time `json:"time"`
	Version string    `json:"version"`
	Kind    string    `json:"kind"` // a plugins.FaultKind: "trap", "timeout", …
	Message string    `json:"message"`
}

// MaxLogLineBytes bounds the text of a kept log line or fault message.
const MaxLogLineBytes = 1024

// ring keeps the last size items.
type ring[T any] struct {
	mu    sync.Mutex
	size  int
	items []T
	next  int // where the next item goes once the ring is full
}

func newRing[T any](n int) *ring[T] { return &ring[T]{size: n} }

// add appends v, dropping the oldest past the ring's size.
func (r *ring[T]) add(v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.size <= 0 {
		return
	}
	if len(r.items) < r.size {
		r.items = append(r.items, v)
		return
	}
	r.items[r.next] = v
	r.next = (r.next + 1) % r.size
}

// list returns the items, oldest first.
func (r *ring[T]) list() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]T, 0, len(r.items))
	out = append(out, r.items[r.next:]...)
	return append(out, r.items[:r.next]...)
}

func cut(s string) string {
	if len(s) > MaxLogLineBytes {
		return s[:MaxLogLineBytes] + "…"
	}
	return s
}

// logSink is a tenant's plugin host's logger: each record goes to the
// log ring of the plugin it names, and nowhere else (a tenant's plugin
// logs are its tenant's, not the server's log).
type logSink struct {
	find func(plugin string) *ring[LogLine]
}

func (s logSink) Enabled(context.Context, slog.Level) bool { return true }

func (s logSink) Handle(_ context.Context, r slog.Record) error {
	var plugin, version, stream string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "plugin":
			plugin = a.Value.String()
		case "version":
			version = a.Value.String()
		case "stream":
			stream = a.Value.String()
		}
		return true
	})
	if l := s.find(plugin); l != nil {
		l.add(LogLine{Time: r.Time.UTC(), Level: r.Level.String(), Stream: stream, Version: version, Text: cut(r.Message)})
	}
	return nil
}

func (s logSink) WithAttrs([]slog.Attr) slog.Handler { return s }
func (s logSink) WithGroup(string) slog.Handler      { return s }
