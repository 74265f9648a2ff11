package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/sdk/client"
)

// receiptJSON is append --json's output.
type receiptJSON struct {
	ID             core.EventID `json:"id"`
	GlobalSequence uint64       `json:"global_sequence"`
	Clock          uint64       `json:"clock"`
	Timestamp      string       `json:"timestamp"`
	Deduplicated   bool         `json:"deduplicated"`
}

func newAppendCmd(a *app) *cobra.Command {
	var (
		entity, scope, kindText, data string
		idemKey, correlation, cause   string
		expectClock                   uint64
		expectNew                     bool
		out                           outputFlags
	)
	cmd := &cobra.Command{
		Use:     "append --entity E --scope S --kind CAT:TYPE --data JSON",
		Short:   "Append one event and print its receipt",
		GroupID: "write",
		Long: `Append one event at coordinate (--entity, --scope) with kind --kind and JSON
payload --data, and print its receipt: event id, global sequence, the
entity's clock, timestamp.

--kind is CATEGORY:TYPE, decimal or hex (1:1, 0x2:0x2a); categories 0 and
0xD are reserved. --data - reads the payload from stdin.

--expect-clock N appends only if the entity's last event has clock N;
--expect-new only if the entity has no events (compare-and-set). With
--idempotency-key, repeating the same key returns the first write's receipt
and writes nothing. --correlation defaults to the new event's own id (it
starts a conversation); a reaction usually passes its cause's correlation
id and --causation the cause's id.

The event is on stable storage when append returns (closing the store
syncs).`,
		Example: `  batpak append --entity order:42 --scope shop --kind 1:1 --data '{"total_cents":998}'
  echo '{"amount_cents":998}' | batpak append --entity payment:42 --scope shop --kind 2:1 --data - \
      --correlation ID --causation ID --expect-new --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			if err := requireFlags(cmd, "entity", "scope", "kind", "data"); err != nil {
				return err
			}
			format, err := out.format()
			if err != nil {
				return err
			}
			f := cmd.Flags()
			if f.Changed("expect-clock") && f.Changed("expect-new") {
				return usagef("--expect-clock and --expect-new exclude each other")
			}
			coord, err := core.NewCoordinate(entity, scope)
			if err != nil {
				var ce *core.CoordinateError
				if errors.As(err, &ce) {
					return badInput("--"+ce.Part, err)
				}
				return err
			}
			kind, err := core.ParseKind(kindText)
			if err != nil {
				return badInput("--kind", err)
			}
			var opts core.AppendOptions
			opts.IdempotencyKey = idemKey
			if f.Changed("correlation") {
				if opts.CorrelationID, err = core.ParseEventID(correlation); err != nil {
					return badInput("--correlation", err)
				}
			}
			if f.Changed("causation") {
				if opts.CausationID, err = core.ParseEventID(cause); err != nil {
					return badInput("--causation", err)
				}
			}
			expectFlag := ""
			switch {
			case f.Changed("expect-clock"):
				opts.ExpectedClock, expectFlag = core.ExpectClock(expectClock), "--expect-clock"
			case expectNew:
				opts.ExpectedClock, expectFlag = core.ExpectNoEvents(), "--expect-new"
			}
			res, err := a.loadConfig()
			if err != nil {
				return err
			}
			payload, err := readPayload(cmd.InOrStdin(), data, res.cfg.SingleAppendMaxBytes)
			if err != nil {
				return badInput("--data", err)
			}

			rc, err := a.remote()
			if err != nil {
				return err
			}
			var r core.Receipt
			if rc != nil {
				r, err = appendRemote(cmd.Context(), rc, coord, kind, payload, opts)
				if err != nil {
					return err
				}
				return printReceipt(cmd.OutOrStdout(), r, idemKey, format)
			}
			s, _, ctx, err := a.openWrite(cmd.Context())
			if err != nil {
				return err
			}
			defer closeStore(s, &err)
			r, err = s.AppendWithOptions(ctx, coord, kind, payload, opts)
			var den *policy.Denial
			switch {
			case err == nil:
			case errors.As(err, &den):
				return denialError(den)
			case errors.Is(err, context.Canceled):
				return fmt.Errorf("interrupted while waiting for the receipt; the event may still have been written: %w", err)
			case errors.Is(err, core.ErrConflict):
				return badInput(expectFlag, err)
			case errors.Is(err, core.ErrInvalidOptions):
				return badInput("--idempotency-key", err)
			case errors.Is(err, core.ErrPayloadTooLarge), errors.Is(err, core.ErrInvalidPayload):
				return badInput("--data", err)
			default:
				return err
			}
			return printReceipt(cmd.OutOrStdout(), r, idemKey, format)
		},
	}
	f := cmd.Flags()
	f.StringVar(&entity, "entity", "", "entity (stream) the event extends, e.g. order:42")
	f.StringVar(&scope, "scope", "", "scope (partition) the event is filed under, e.g. shop")
	f.StringVar(&kindText, "kind", "", "event kind CATEGORY:TYPE, e.g. 1:1 or 0x2:0x2a (categories 1..15 except 13)")
	f.StringVar(&data, "data", "", "payload: one JSON value, or - to read it from stdin")
	f.StringVar(&idemKey, "idempotency-key", "", "make the write idempotent under this store-wide key (at most 256 bytes)")
	f.Uint64Var(&expectClock, "expect-clock", 0, "append only if the entity's last event has this clock")
	f.BoolVar(&expectNew, "expect-new", false, "append only if the entity has no events yet")
	f.StringVar(&correlation, "correlation", "", "correlation id (default: the new event's own id)")
	f.StringVar(&cause, "causation", "", "id of the event that caused this one (default: none, a root cause)")
	out.register(cmd)
	completeRegionFlags(a, cmd)
	return cmd
}

// printReceipt writes append's output, local or remote.
func printReceipt(w io.Writer, r core.Receipt, idemKey string, format string) error {
	if format != formatTable {
		return emit(w, format, receiptJSON{
			ID: r.ID, GlobalSequence: r.GlobalSequence, Clock: r.Clock,
			Timestamp: formatMicros(r.Timestamp), Deduplicated: r.Deduplicated,
		}, nil)
	}
	verb, note := "appended", ""
	if r.Deduplicated {
		verb, note = "duplicate", fmt.Sprintf(" (idempotency key %q was used before: this is the first write's receipt; nothing written)", idemKey)
	}
	_, err := fmt.Fprintf(w, "%s %s seq=%d clock=%d timestamp=%s%s\n",
		verb, r.ID, r.GlobalSequence, r.Clock, formatMicros(r.Timestamp), note)
	return err
}

// appendRemote is append against a server: the same event, through the
// tenant's API. Without --idempotency-key the client picks one, so a
// retried request writes once.
func appendRemote(ctx context.Context, rc *remoteConf, coord core.Coordinate, kind core.Kind, payload []byte, opts core.AppendOptions) (core.Receipt, error) {
	t, err := rc.tenantClient()
	if err != nil {
		return core.Receipt{}, err
	}
	req := client.AppendRequest{
		Entity: coord.Entity, Scope: coord.Scope, Kind: kind.String(), Payload: payload,
		IdempotencyKey: opts.IdempotencyKey,
	}
	if !opts.CorrelationID.IsZero() {
		req.CorrelationID = opts.CorrelationID.String()
	}
	if !opts.CausationID.IsZero() {
		req.CausationID = opts.CausationID.String()
	}
	if e, ok := opts.ExpectedClock.Clock(); ok {
		req.ExpectedClock = client.ExpectClock(e)
	} else if opts.ExpectedClock.NoEvents() {
		req.ExpectedClock = client.ExpectNoEvents()
	}
	wr, err := t.Append(ctx, req)
	if err != nil {
		return core.Receipt{}, remoteError(err)
	}
	id, err := core.ParseEventID(wr.ID)
	if err != nil {
		return core.Receipt{}, fmt.Errorf("server sent event id %q: %w", wr.ID, err)
	}
	return core.Receipt{ID: id, GlobalSequence: wr.GlobalSequence, Clock: wr.Clock, Timestamp: wr.TimestampUS, Deduplicated: wr.Deduplicated}, nil
}

// readPayload returns --data's bytes (stdin for "-"), trimmed of
// surrounding whitespace and checked to be one JSON value of at most max
// bytes.
func readPayload(stdin io.Reader, data string, max int) ([]byte, error) {
	var p []byte
	if data == "-" {
		b, err := io.ReadAll(io.LimitReader(stdin, int64(max)+64<<10))
		if err != nil {
			return nil, fmt.Errorf("reading stdin: %w", err)
		}
		p = b
	} else {
		p = []byte(data)
	}
	p = bytes.TrimSpace(p)
	if len(p) == 0 {
		where := "empty"
		if data == "-" {
			where = "empty (nothing on stdin)"
		}
		return nil, fmt.Errorf("payload is %s; use {} or null for an event without data", where)
	}
	if len(p) > max {
		return nil, fmt.Errorf("payload is larger than single_append_max_bytes (%d bytes)", max)
	}
	if json.Valid(p) {
		return p, nil
	}
	var v any
	if err := json.Unmarshal(p, &v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("payload is not valid JSON: %v (at byte %d)", err, se.Offset)
		}
		return nil, fmt.Errorf("payload is not valid JSON: %v", err)
	}
	return nil, errors.New("payload is not valid JSON")
}
