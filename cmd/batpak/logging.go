package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/internal/printable"
)

// lineHandler prints core's log records the way the CLI prints
// everything else: "batpak: warning: message (key=value, …)". A plugin's
// own lines (records with plugin and stream attributes, as package plugins
// logs them) read "batpak: plugin NAME@VERSION: text (…)", so a plugin
// cannot pass its text off as the CLI's; the message and every value are
// escaped (printable.String), so no record prints as more than one line or
// sends escape sequences.
type lineHandler struct {
	mu    *sync.Mutex
	w     io.Writer
	min   slog.Level
	attrs []slog.Attr
}

func newLineLogger(w io.Writer) *slog.Logger {
	return slog.New(&lineHandler{mu: &sync.Mutex{}, w: w, min: slog.LevelInfo})
}

// logFlags is --log-level and --log-format, the root's persistent flags:
// what core, the plugin host and the server log to stderr, and how.
type logFlags struct {
	level, format string
}

var (
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"text", "json"}
)

func (l *logFlags) register(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&l.level, "log-level", "info", "least severe log records shown on stderr: debug, info, warn or error")
	f.StringVar(&l.format, "log-format", "text", `log records as "batpak: warning: ..." lines (text) or one JSON object a line (json)`)
	_ = cmd.RegisterFlagCompletionFunc("log-level", completeWords(logLevels...))
	_ = cmd.RegisterFlagCompletionFunc("log-format", completeWords(logFormats...))
}

// logger builds the logger the flags ask for, writing to w, or a usage
// error naming the refused value.
func (l logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	switch strings.ToLower(l.level) {
	case "debug":
		lv = slog.LevelDebug
	case "info", "":
		lv = slog.LevelInfo
	case "warn", "warning":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return nil, usagef("--log-level %q: want debug, info, warn or error", l.level)
	}
	switch strings.ToLower(l.format) {
	case "text", "":
		return slog.New(&lineHandler{mu: &sync.Mutex{}, w: w, min: lv}), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})), nil
	}
	return nil, usagef("--log-format %q: want text or json", l.format)
}

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }

func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("batpak: ")
	switch {
	case r.Level >= slog.LevelError:
		b.WriteString("error: ")
	case r.Level >= slog.LevelWarn:
		b.WriteString("warning: ")
	}
	var all []slog.Attr
	all = append(all, h.attrs...)
	r.Attrs(func(a slog.Attr) bool { all = append(all, a); return true })
	var plugin, version, stream string
	for _, a := range all {
		switch a.Key {
		case "plugin":
			plugin = a.Value.String()
		case "version":
			version = a.Value.String()
		case "stream":
			stream = a.Value.String()
		}
	}
	own := plugin != "" && stream != "" // the plugin's text, not the host's
	var kv []string
	for _, a := range all {
		if own && (a.Key == "plugin" || a.Key == "version" || a.Key == "stream" && stream == "log") {
			continue
		}
		kv = append(kv, printable.String(fmt.Sprintf("%s=%v", a.Key, a.Value.Any())))
	}
	if own {
		b.WriteString(printable.String("plugin " + plugin + "@" + version + ": " + r.Message))
	} else {
		b.WriteString(printable.String(strings.TrimPrefix(r.Message, "batpak: ")))
	}
	if len(kv) > 0 {
		b.WriteString(" (" + strings.Join(kv, ", ") + ")")
	}
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *lineHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &lineHandler{mu: h.mu, w: h.w, min: h.min, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *lineHandler) WithGroup(string) slog.Handler { return h }

// logger is the logger --log-level and --log-format ask for (loadConfig
// has refused bad values already; this falls back to the default).
func (a *app) logger() *slog.Logger {
	l, err := a.log.logger(a.stderr)
	if err != nil {
		return newLineLogger(a.stderr)
	}
	return l
}
