package cluster

import (
	"context"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// raftLogger hands raft's log lines (hclog) to the node's slog.Logger, so
// they come out in the server's format (text or JSON) and at its level,
// beside its own lines. Each message is prefixed with the logger's name
// ("raft n2: failed to contact"); hclog's key/value arguments become the
// record's attributes. Raft's trace lines are slog's debug.
type raftLogger struct {
	l    *slog.Logger
	name string
	args []any
}

// newRaftLogger is raft's logger writing to l under name; a nil l
// discards every line.
func newRaftLogger(l *slog.Logger, name string) hclog.Logger {
	if l == nil {
		return hclog.NewNullLogger()
	}
	return &raftLogger{l: l, name: name}
}

func slogLevel(level hclog.Level) slog.Level {
	switch {
	case level <= hclog.Debug:
		return slog.LevelDebug
	case level == hclog.Info:
		return slog.LevelInfo
	case level == hclog.Warn:
		return slog.LevelWarn
	}
	return slog.LevelError
}

func (r *raftLogger) Log(level hclog.Level, msg string, args ...any) {
	lv := slogLevel(level)
	ctx := context.Background()
	if !r.l.Enabled(ctx, lv) {
		return
	}
	if r.name != "" {
		msg = r.name + ": " + msg
	}
	r.l.Log(ctx, lv, msg, append(append([]any(nil), r.args...), args...)...)
}

func (r *raftLogger) Trace(msg string, args ...any) { r.Log(hclog.Trace, msg, args...) }
func (r *raftLogger) Debug(msg string, args ...any) { r.Log(hclog.Debug, msg, args...) }
func (r *raftLogger) Info(msg string, args ...any)  { r.Log(hclog.Info, msg, args...) }
func (r *raftLogger) Warn(msg string, args ...any)  { r.Log(hclog.Warn, msg, args...) }
func (r *raftLogger) Error(msg string, args ...any) { r.Log(hclog.Error, msg, args...) }

func (r *raftLogger) enabled(lv slog.Level) bool { return r.l.Enabled(context.Background(), lv) }
func (r *raftLogger) IsTrace() bool              { return r.enabled(slog.LevelDebug) }
func (r *raftLogger) IsDebug() bool              { return r.enabled(slog.LevelDebug) }
func (r *raftLogger) IsInfo() bool               { return r.enabled(slog.LevelInfo) }
func (r *raftLogger) IsWarn() bool               { return r.enabled(slog.LevelWarn) }
func (r *raftLogger) IsError() bool              { return r.enabled(slog.LevelError) }
func (r *raftLogger) ImpliedArgs() []any         { return r.args }
func (r *raftLogger) Name() string               { return r.name }

func (r *raftLogger) With(args ...any) hclog.Logger {
	return &raftLogger{l: r.l, name: r.name, args: append(append([]any(nil), r.args...), args...)}
}

func (r *raftLogger) Named(name string) hclog.Logger {
	if r.name != "" {
		name = r.name + "." + name
	}
	return &raftLogger{l: r.l, name: name, args: r.args}
}

func (r *raftLogger) ResetNamed(name string) hclog.Logger {
	return &raftLogger{l: r.l, name: name, args: r.args}
}

// SetLevel does nothing: the slog.Logger's handler decides.
func (r *raftLogger) SetLevel(hclog.Level) {}

func (r *raftLogger) GetLevel() hclog.Level {
	switch {
	case r.enabled(slog.LevelDebug):
		return hclog.Debug
	case r.enabled(slog.LevelInfo):
		return hclog.Info
	case r.enabled(slog.LevelWarn):
		return hclog.Warn
	}
	return hclog.Error
}

func (r *raftLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(r.StandardWriter(opts), "", 0)
}

// StandardWriter logs each write as one info line.
func (r *raftLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer { return lineWriter{r} }

type lineWriter struct{ r *raftLogger }

func (w lineWriter) Write(p []byte) (int, error) {
	w.r.Info(strings.TrimRight(string(p), "\r\n"))
	return len(p), nil
}
