package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

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
	attrs []slog.Attr
}

func newLineLogger(w io.Writer) *slog.Logger {
	return slog.New(&lineHandler{mu: &sync.Mutex{}, w: w})
}

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

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
	return &lineHandler{mu: h.mu, w: h.w, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *lineHandler) WithGroup(string) slog.Handler { return h }
