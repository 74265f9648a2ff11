package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/follow"
	"github.com/batpak-go/batpak/server/wire"
)

// EncodeEvent is the SSE data of an event: its JSON on one line. The
// follow hub calls it once per event for all subscribers.
func EncodeEvent(ev core.StoredEvent) []byte {
	// Not HTML-escaped: a payload's "<" stays one byte, as stored.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(wire.FromStored(ev))
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// beginStream registers a stream unless the API is draining.
func (a *API) beginStream() bool {
	a.streamMu.Lock()
	defer a.streamMu.Unlock()
	if a.draining {
		return false
	}
	a.streams.Add(1)
	return true
}

// holdStream counts a long response of the call's tenant (an event
// stream, an NDJSON query, an export, a verify) against its
// max_subscriptions: such a response holds a connection for as long as
// its client reads, so without the bound one key could take every
// connection the server has (server.max_connections). Past it: 429
// QUOTA_EXCEEDED. release gives the slot back.
func (a *API) holdStream(c *call) (release func(), err error) {
	release, ex := a.quotaOf(c).AcquireSubscription()
	if ex != nil {
		return nil, ex
	}
	return release, nil
}

// subscribe streams a region as Server-Sent Events: "id:" is the global
// sequence, "event: event", "data:" the event JSON. It catches up from
// ?after or Last-Event-ID (which wins: it is the browser's resume), then
// follows live, with ": heartbeat" comments every SSEHeartbeat. A client
// too slow to keep up gets "event: cutoff", as does one whose key is
// revoked, whose JWT expires (its "exp" plus the configured skew) or whose
// tenant is suspended or deleted (at once, with a
// "reason" saying which; nothing written after that is sent), one the
// server stops for gets
// "event: shutdown", both with data {"resume_after": <last id sent>}
// (null: none sent since the start, which was the log's beginning). On a
// cluster node, a start this node has not applied yet (a client resuming
// here with a position another node sent it) waits for it like min_seq:
// 503 NOT_CAUGHT_UP after Cluster.ReadWait.
func (a *API) subscribe(c *call) error {
	q := c.r.URL.Query()
	region, err := wire.ParseRegion(q.Get("entity"), q.Get("scope"), q.Get("kind"), q.Get("category"))
	if err != nil {
		return err
	}
	start := follow.FromBeginning()
	after, hasAfter, err := queryUint(c.r, "after")
	if err != nil {
		return err
	}
	startField := "after" // where the start came from, for a refusal
	if hasAfter {
		start = follow.After(after)
	}
	if id := strings.TrimSpace(c.r.Header.Get("Last-Event-ID")); id != "" {
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			return errInvalid("Last-Event-ID", "Last-Event-ID must be a global sequence (a whole number)")
		}
		start, after, hasAfter = follow.After(n), n, true
		startField = "Last-Event-ID"
	}
	if a.opts.Follow == nil {
		return &apiError{status: 503, code: wire.CodeBusy, detail: "event streams are not configured on this server"}
	}
	s, err := c.store()
	if err != nil {
		return err
	}
	if hasAfter && a.opts.Cluster != nil {
		// Resuming on another cluster node than the one that sent the
		// events: wait until this one holds them.
		if err := a.clusterWaitSequence(c, s, after); err != nil {
			return err
		}
	}
	release, err := a.holdStream(c)
	if err != nil {
		return err
	}
	defer release()
	if !a.beginStream() {
		return &apiError{status: 503, code: wire.CodeBusy, detail: "the server is shutting down"}
	}
	defer a.streams.Done()
	sub, err := a.opts.Follow.Subscribe(s, region, start)
	if err != nil {
		if errors.Is(err, follow.ErrStartAhead) {
			return errInvalid(startField, "the start position is past the end of the log")
		}
		if errors.Is(err, follow.ErrHubClosed) {
			return &apiError{status: 503, code: wire.CodeBusy, detail: "the server is shutting down"}
		}
		return err
	}
	defer sub.Close()
	// Catching up on a region few events match walks the index: past a
	// step's worth, at the tenant's request rate.
	sub.PaceScans(a.scanCharge(c))
	a.metrics.subscriptions.Inc()
	defer a.metrics.subscriptions.Dec()

	ctx, cancel := context.WithCancelCause(c.r.Context())
	defer cancel(nil)
	go func() {
		select {
		case <-a.stopping:
			cancel(nil)
		case <-ctx.Done():
		}
	}()
	h := c.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	c.w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(c.w)
	bw := bufio.NewWriterSize(c.w, 32<<10)
	_, _ = bw.WriteString(": subscribed\n\n")
	if bw.Flush() != nil || rc.Flush() != nil {
		return nil
	}
	// pos is the position after the last event sent.
	pos := sub.Position()
	end := func(event, reason string) {
		var resume any
		if seq, ok := pos.After(); ok {
			resume = seq
		}
		data, _ := json.Marshal(map[string]any{"resume_after": resume, "reason": reason})
		_, _ = bw.WriteString("event: " + event + "\ndata: ")
		_, _ = bw.Write(data)
		_, _ = bw.WriteString("\n\n")
		_ = bw.Flush()
		_ = rc.Flush()
		a.metrics.disconnects.WithLabelValues(event).Inc()
	}
	for {
		nctx, ncancel := context.WithTimeout(ctx, a.opts.SSEHeartbeat)
		frames, err := sub.Next(nctx)
		ncancel()
		if err != nil {
			var ee *follow.EndError
			switch {
			case errors.As(err, &ee) && errors.Is(err, follow.ErrHubClosed):
				end("shutdown", "server shutting down")
				return nil
			case errors.As(err, &ee) && errors.Is(err, follow.ErrSlowConsumer):
				end("cutoff", "slow consumer")
				return nil
			case errors.As(err, &ee):
				end("cutoff", "the stream ended; resume")
				return nil
			case errors.Is(context.Cause(ctx), errAccessLost):
				end("cutoff", accessReason(a.recheck(c)))
				return nil
			case c.r.Context().Err() != nil:
				a.metrics.disconnects.WithLabelValues("client").Inc()
				return nil
			case ctx.Err() != nil: // draining
				end("shutdown", "server shutting down")
				return nil
			case errors.Is(err, context.DeadlineExceeded):
				_, _ = bw.WriteString(": heartbeat\n\n")
			default:
				end("cutoff", "the stream ended; resume")
				return nil
			}
		}
		if len(frames) > 0 {
			// Nothing is sent past a revocation, even one the watcher
			// has not acted on yet.
			if err := a.recheck(c); err != nil {
				end("cutoff", accessReason(err))
				return nil
			}
		}
		for _, f := range frames {
			_, _ = bw.WriteString("id: ")
			_, _ = bw.WriteString(strconv.FormatUint(f.Seq, 10))
			_, _ = bw.WriteString("\nevent: event\ndata: ")
			_, _ = bw.Write(f.Data)
			_, _ = bw.WriteString("\n\n")
		}
		if bw.Flush() != nil || rc.Flush() != nil {
			a.metrics.disconnects.WithLabelValues("client").Inc()
			return nil
		}
		if len(frames) > 0 {
			pos = sub.Position()
		}
	}
}
