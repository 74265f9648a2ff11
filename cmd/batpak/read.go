package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/printable"
	"github.com/batpak-go/batpak/sdk/client"
)

func newGetCmd(a *app) *cobra.Command {
	var out outputFlags
	cmd := &cobra.Command{
		Use:     "get ID",
		Short:   "Print one event by id",
		GroupID: "read",
		Long: `Print the event with this id: coordinate, kind, clock, global sequence,
correlation and causation ids, timestamp (RFC 3339, UTC) and payload.
-o json (--json) prints the same fields as query -o json, on one line;
-o yaml as a YAML document.`,
		Example: `  batpak get 0194d7a2-5c1e-7f3a-9b2d-4e6f8a0c1d2e
  batpak get -o json 0194d7a2-5c1e-7f3a-9b2d-4e6f8a0c1d2e | jq .payload`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: completeEventIDs(a),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			format, err := out.format()
			if err != nil {
				return err
			}
			id, err := core.ParseEventID(args[0])
			if err != nil {
				return badInput("ID", err)
			}
			rc, err := a.remote()
			if err != nil {
				return err
			}
			var ev core.StoredEvent
			if rc != nil {
				ev, err = getRemote(cmd.Context(), rc, id)
			} else {
				err = a.withReadStore(func(s *core.Store, res *resolved) error {
					var err error
					ev, err = s.Get(id)
					if errors.Is(err, core.ErrNotFound) {
						return &detailError{msg: fmt.Sprintf("no event %s in %s", id, res.cfg.Dir), err: err}
					}
					return err
				})
			}
			if err != nil {
				return err
			}
			return emit(cmd.OutOrStdout(), format, toEventJSON(ev), func(w io.Writer) error { return printEvent(w, ev) })
		},
	}
	out.register(cmd)
	registerMinSeqFlag(cmd, a)
	return cmd
}

// getRemote is get against a server.
func getRemote(ctx context.Context, rc *remoteConf, id core.EventID) (core.StoredEvent, error) {
	t, err := rc.tenantClient()
	if err != nil {
		return core.StoredEvent{}, err
	}
	ev, err := t.Get(ctx, id.String())
	if err != nil {
		return core.StoredEvent{}, remoteError(err)
	}
	return fromWire(ev)
}

func newQueryCmd(a *app) *cobra.Command {
	var (
		entityPrefix, scope, kindText string
		category                      uint16
		clockMin, clockMax            uint64
		limit                         int
		out                           outputFlags
		follow                        bool
		after, since                  string
		poll                          time.Duration
	)
	cmd := &cobra.Command{
		Use:     "query [--entity-prefix P] [--scope S] [--kind K] [--category C] [--clock-min N] [--clock-max N] [--after ID|SEQ] [--since D|TIME] [--follow]",
		Short:   "List the events matching a region, in global order",
		GroupID: "read",
		Long: `List the events that match every given filter, in global sequence order.
With no filter, every event.

  --entity-prefix P   entities starting with P ("order:" matches order:1, order:2)
  --scope S           exactly scope S
  --kind K            exactly kind K (CATEGORY:TYPE, e.g. 1:1)
  --category C        kinds in category C (0..15, e.g. 1 or 0x1)
  --clock-min/-max N  per-entity clock within [min, max] (either may be left out)
  --after ID|SEQ      only events after this one: an event id, or a global
                      sequence (the events whose sequence is greater)
  --since D|TIME      only events written at or after TIME (RFC 3339, e.g.
                      2026-01-02T15:04:05Z) or in the last D (a Go duration:
                      90s, 15m, 24h)
  --follow, -f        after the matching events, print new ones as they are
                      written, until interrupted (Ctrl-C ends it, exit 0)

The default output is a table; -o json (--json) prints one JSON object per
line with the fields id, entity, scope, kind, clock, global_sequence,
correlation_id, causation_id (null for a root cause), timestamp and payload
(the stored JSON value), plus idempotency_key and flags when set; -o yaml
prints one YAML document per event.

Against a server, --follow uses its Server-Sent Events stream. On a local
store (read-only, beside the writer process) it looks for new events every
--poll-interval and reads them once the store's files changed.`,
		Example: `  batpak query --entity-prefix order: -o json
  batpak query --scope shop --category 2
  batpak query --entity-prefix order:1 --clock-min 1 --limit 10
  batpak query --since 15m --follow`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			format, err := out.format()
			if err != nil {
				return err
			}
			f := cmd.Flags()
			r := core.All()
			if f.Changed("entity-prefix") {
				r = r.WithEntity(entityPrefix)
			}
			if f.Changed("scope") {
				r = r.WithScope(scope)
			}
			if f.Changed("kind") {
				k, err := parseShownKind(kindText)
				if err != nil {
					return badInput("--kind", err)
				}
				r = r.WithKind(k)
			}
			if f.Changed("category") {
				if category > 0xF {
					return badInput("--category", fmt.Errorf("%d is not a category: want 0..15 (0x0..0xF)", category))
				}
				r = r.WithCategory(category)
			}
			var flt eventFilter
			if f.Changed("clock-min") || f.Changed("clock-max") {
				if !f.Changed("clock-max") {
					clockMax = math.MaxUint64
				}
				if clockMin > clockMax {
					return badInput("--clock-min", fmt.Errorf("%d is above --clock-max %d", clockMin, clockMax))
				}
				r = r.WithClockRange(clockMin, clockMax)
				flt.clocks, flt.clockMin, flt.clockMax = true, clockMin, clockMax
			}
			if limit < 0 {
				return badInput("--limit", fmt.Errorf("%d is negative (0 means no limit)", limit))
			}
			if follow && limit > 0 {
				return usagef("--follow and --limit exclude each other")
			}
			if poll <= 0 || poll > time.Minute {
				return badInput("--poll-interval", fmt.Errorf("%v is out of range: want 1ms..1m", poll))
			}
			if since != "" {
				if flt.sinceUS, err = sinceMicros(since, time.Now()); err != nil {
					return badInput("--since", err)
				}
				flt.since = true
			}
			afterID, afterSeq, hasAfter, err := parseAfter(after)
			if err != nil {
				return badInput("--after", err)
			}
			p := newQueryPrinter(cmd.OutOrStdout(), format, queryShows(r, flt, after), limit, follow)

			ctx := cmd.Context()
			rc, err := a.remote()
			if err != nil {
				return err
			}
			if rc != nil {
				t, err := rc.tenantClient()
				if err != nil {
					return err
				}
				q := client.Query{Entity: entityPrefix, Scope: scope}
				if f.Changed("kind") {
					q.Kind = kindText
				}
				if f.Changed("category") {
					c := int(category)
					q.Category = &c
				}
				if hasAfter {
					if !afterID.IsZero() {
						ev, err := getRemote(ctx, rc, afterID)
						if err != nil {
							return badInput("--after", err)
						}
						afterSeq = ev.GlobalSequence
					}
					flt.after, flt.afterSeq = true, afterSeq
					q.After = &afterSeq
				}
				if follow {
					return followRemote(ctx, t, q, flt, p)
				}
				return p.print(ctx, flt.apply(remoteEvents(ctx, t, q, false, 0, 0)))
			}
			res, err := a.loadConfig()
			if err != nil {
				return err
			}
			if err := a.localOnly(); err != nil {
				return err
			}
			if hasAfter && !afterID.IsZero() {
				err := a.withReadStore(func(s *core.Store, res *resolved) error {
					ev, err := s.Get(afterID)
					if errors.Is(err, core.ErrNotFound) {
						return badInput("--after", &detailError{msg: fmt.Sprintf("no event %s in %s", afterID, res.cfg.Dir), err: err})
					}
					afterSeq = ev.GlobalSequence
					return err
				})
				if err != nil {
					return err
				}
			}
			if hasAfter {
				flt.after, flt.afterSeq = true, afterSeq
			}
			if follow {
				return followLocal(ctx, a, res, r, flt, p, poll)
			}
			return a.withReadStore(func(s *core.Store, _ *resolved) error {
				return p.print(ctx, flt.apply(s.Events(r)))
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&entityPrefix, "entity-prefix", "", "only entities starting with this prefix")
	f.StringVar(&scope, "scope", "", "only this scope (exact)")
	f.StringVar(&kindText, "kind", "", "only this kind, CATEGORY:TYPE")
	f.Var(categoryFlag{&category}, "category", "only kinds in this category, 0..15 (decimal, or hex after 0x; 010 is ten)")
	f.Uint64Var(&clockMin, "clock-min", 0, "only per-entity clocks >= N")
	f.Uint64Var(&clockMax, "clock-max", 0, "only per-entity clocks <= N")
	f.IntVar(&limit, "limit", 0, "print at most N events, the first in global order (0: all)")
	f.StringVar(&after, "after", "", "only events after this event id or global sequence")
	f.StringVar(&since, "since", "", "only events at or after this time (RFC 3339) or in the last DURATION (15m, 24h)")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new events until interrupted")
	f.DurationVar(&poll, "poll-interval", 250*time.Millisecond, "local --follow: how often to look for new events; 1ms..1m")
	out.register(cmd)
	registerMinSeqFlag(cmd, a)
	completeRegionFlags(a, cmd)
	return cmd
}

// remoteEvents reads a server's events matching q, page by page, as the
// store's events; the clock range (which the API does not filter on) is
// applied here.
func remoteEvents(ctx context.Context, t *client.Tenant, q client.Query, clocks bool, lo, hi uint64) iter.Seq2[core.StoredEvent, error] {
	return func(yield func(core.StoredEvent, error) bool) {
		for wev, err := range t.Query(ctx, q) {
			if err != nil {
				yield(core.StoredEvent{}, remoteError(err))
				return
			}
			if clocks && (wev.Clock < lo || wev.Clock > hi) {
				continue
			}
			ev, err := fromWire(wev)
			if !yield(ev, err) || err != nil {
				return
			}
		}
	}
}

// oneLine keeps strings from elsewhere (a user's, a server's) from breaking
// a table row or reaching the terminal as control sequences: line breaks,
// tabs, escapes and other unprintable runes are written as Go escapes
// (printable.String).
func oneLine(s string) string { return printable.String(s) }

func newAncestorsCmd(a *app) *cobra.Command {
	var (
		limit int
		out   outputFlags
	)
	cmd := &cobra.Command{
		Use:     "ancestors ID",
		Short:   "Walk causation back from an event to its root cause",
		GroupID: "read",
		Long: `Print the event, then the event that caused it, and so on, until a root
cause (no causation id), a cause that is not in this store, or --limit
events. -o json (--json) prints one event per line, in that order, with
the fields of query -o json; -o yaml one YAML document per event.`,
		Example:           `  batpak ancestors 0194d7a2-5c1e-7f3a-9b2d-4e6f8a0c1d2e`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: completeEventIDs(a),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			format, err := out.format()
			if err != nil {
				return err
			}
			id, err := core.ParseEventID(args[0])
			if err != nil {
				return badInput("ID", err)
			}
			if limit < 0 {
				return badInput("--limit", fmt.Errorf("%d is negative (0 means up to %d)", limit, core.DefaultAncestorLimit))
			}
			rc, err := a.remote()
			if err != nil {
				return err
			}
			var chain []core.StoredEvent
			if rc != nil {
				chain, err = ancestorsRemote(cmd.Context(), rc, id, limit)
			} else {
				err = a.withReadStore(func(s *core.Store, res *resolved) error {
					var err error
					chain, err = s.Ancestors(id, limit)
					if errors.Is(err, core.ErrNotFound) {
						return &detailError{msg: fmt.Sprintf("no event %s in %s", id, res.cfg.Dir), err: err}
					}
					return err
				})
			}
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if format != formatTable {
				out := newRecords(w, format)
				for _, ev := range chain {
					if err := out.write(toEventJSON(ev)); err != nil {
						return err
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "  \tSEQ\tID\tENTITY\tKIND\tCLOCK\tPAYLOAD")
			for i, ev := range chain {
				arrow := "  "
				if i > 0 {
					arrow = "← "
				}
				h := ev.Header
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%s\n", arrow, ev.GlobalSequence, h.ID,
					oneLine(ev.Coordinate.Entity), h.Kind, h.Clock, compactPayload(ev.Payload, 50))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			end := "a root cause"
			if last := chain[len(chain)-1].Header.CausationID; !last.IsZero() {
				if len(chain) == limit || (limit <= 0 && len(chain) == core.DefaultAncestorLimit) {
					end = "the limit; run ancestors on the last id to go on"
				} else {
					end = "a cause not in this store (" + last.String() + ")"
				}
			}
			_, err = fmt.Fprintf(w, "%s, ending at %s\n", plural(len(chain), "event", "events"), end)
			return err
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 0, fmt.Sprintf("follow at most N events (0: %d)", core.DefaultAncestorLimit))
	out.register(cmd)
	registerMinSeqFlag(cmd, a)
	return cmd
}

// ancestorsRemote is ancestors against a server.
func ancestorsRemote(ctx context.Context, rc *remoteConf, id core.EventID, limit int) ([]core.StoredEvent, error) {
	t, err := rc.tenantClient()
	if err != nil {
		return nil, err
	}
	evs, err := t.Ancestors(ctx, id.String(), limit)
	if err != nil {
		return nil, remoteError(err)
	}
	if len(evs) == 0 {
		return nil, fmt.Errorf("no event %s in %s", id, rc.where())
	}
	chain := make([]core.StoredEvent, len(evs))
	for i, w := range evs {
		if chain[i], err = fromWire(w); err != nil {
			return nil, err
		}
	}
	return chain, nil
}

// parseShownKind reads a kind to filter on or to show: "CAT:TYPE" as
// core.ParseKind reads it, but in any category — a store holds effect
// kinds (0xD, written as reactions) and system kinds (0x0) besides those
// an application appends.
func parseShownKind(s string) (core.Kind, error) {
	cat, typ, found := strings.Cut(s, ":")
	c, err1 := core.ParseKindNumber(cat)
	t, err2 := core.ParseKindNumber(typ)
	if !found || err1 != nil || err2 != nil || c > 0xF || t > core.MaxKindType {
		return 0, fmt.Errorf("%w: %q: want CATEGORY:TYPE (category 0..15, type 0..0xFFF), e.g. 1:1 or 0xD:0x4", core.ErrInvalidKind, s)
	}
	return core.Kind(c<<12 | t), nil
}

// categoryFlag is --category: a kind's category as core.ParseKindNumber
// reads it ("010" is ten, not octal eight; 0..15 is checked where used).
type categoryFlag struct{ v *uint16 }

func (f categoryFlag) String() string {
	if f.v == nil {
		return "0"
	}
	return strconv.Itoa(int(*f.v))
}

func (f categoryFlag) Set(s string) error {
	n, err := core.ParseKindNumber(s)
	if err != nil {
		return fmt.Errorf("%q is not a category: want 0..15, decimal or 0x hex", s)
	}
	*f.v = uint16(n)
	return nil
}

func (categoryFlag) Type() string { return "uint16" }
