package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/batpak-go/batpak/core"
)

// timeLayout is RFC 3339 with the store's microsecond precision, in UTC.
const timeLayout = "2006-01-02T15:04:05.000000Z07:00"

func formatMicros(us int64) string { return time.UnixMicro(us).UTC().Format(timeLayout) }

// eventJSON is the JSON form of an event, shared by get --json and query
// --json (one object per line). Ids are canonical UUID text; causation_id
// is null for a root cause; payload is the stored JSON value itself.
type eventJSON struct {
	ID             core.EventID    `json:"id"`
	Entity         string          `json:"entity"`
	Scope          string          `json:"scope"`
	Kind           string          `json:"kind"` // "0x1:0x2", as core.ParseKind reads it
	Clock          uint64          `json:"clock"`
	GlobalSequence uint64          `json:"global_sequence"`
	CorrelationID  core.EventID    `json:"correlation_id"`
	CausationID    *core.EventID   `json:"causation_id"`
	Timestamp      string          `json:"timestamp"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	Flags          uint16          `json:"flags,omitempty"`
	Redacted       bool            `json:"redacted,omitempty"`
	Payload        json.RawMessage `json:"payload"`
}

func toEventJSON(ev core.StoredEvent) eventJSON {
	h := ev.Header
	out := eventJSON{
		ID:             h.ID,
		Entity:         ev.Coordinate.Entity,
		Scope:          ev.Coordinate.Scope,
		Kind:           h.Kind.String(),
		Clock:          h.Clock,
		GlobalSequence: ev.GlobalSequence,
		CorrelationID:  h.CorrelationID,
		Timestamp:      formatMicros(h.Timestamp),
		IdempotencyKey: ev.IdempotencyKey,
		Flags:          h.Flags,
		Redacted:       ev.Redacted,
		Payload:        ev.Payload,
	}
	if ev.Redacted {
		out.Payload = json.RawMessage("null")
	}
	if !h.CausationID.IsZero() {
		c := h.CausationID
		out.CausationID = &c
	}
	return out
}

// jsonLines writes values as JSON, one per line, without HTML escaping.
type jsonLines struct{ enc *json.Encoder }

func newJSONLines(w io.Writer) jsonLines {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return jsonLines{enc}
}

func (j jsonLines) write(v any) error { return j.enc.Encode(v) }

// printEvent writes the human form of one event.
func printEvent(w io.Writer, ev core.StoredEvent) error {
	h := ev.Header
	causation := "none (root cause)"
	if !h.CausationID.IsZero() {
		causation = h.CausationID.String()
	}
	correlation := h.CorrelationID.String()
	if h.CorrelationID == h.ID {
		correlation += " (its own id: starts a conversation)"
	}
	var b bytes.Buffer
	row := func(k, v string) { fmt.Fprintf(&b, "%-12s %s\n", k, v) }
	row("id", h.ID.String())
	row("entity", ev.Coordinate.Entity)
	row("scope", ev.Coordinate.Scope)
	row("kind", fmt.Sprintf("%s (category %d, type %d)", h.Kind, h.Kind.Category(), h.Kind.Type()))
	row("clock", fmt.Sprint(h.Clock))
	row("seq", fmt.Sprint(ev.GlobalSequence))
	row("correlation", correlation)
	row("causation", causation)
	row("timestamp", formatMicros(h.Timestamp))
	if ev.IdempotencyKey != "" {
		row("idem. key", ev.IdempotencyKey)
	}
	if h.Flags != 0 {
		row("flags", fmt.Sprintf("%#04x", h.Flags))
	}
	if h.Hash != (core.Hash{}) { // zero only for an event read from a server
		row("hash", h.Hash.String())
	}
	if ev.Redacted {
		row("payload", "(redacted: erased from disk; its digest still chains the event)")
		_, err := w.Write(b.Bytes())
		return err
	}
	b.WriteString("payload\n")
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, ev.Payload, "  ", "  "); err != nil {
		pretty.Reset()
		pretty.Write(ev.Payload)
	}
	b.WriteString("  ")
	b.Write(pretty.Bytes())
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// compactPayload renders a payload on one line, cut to max runes.
func compactPayload(p json.RawMessage, max int) string {
	if p == nil {
		return "(redacted)"
	}
	var b bytes.Buffer
	if err := json.Compact(&b, p); err != nil {
		b.Reset()
		b.Write(p)
	}
	s := b.String()
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	return string(r[:max-1]) + "…"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// humanBytes renders n like 4.2 KiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
