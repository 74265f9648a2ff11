package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
)

// The ledger's event kinds: category 3, one kind per leg of a transfer.
var (
	kindDebited  = core.MustKind(0x3, 0x1)
	kindCredited = core.MustKind(0x3, 0x2)
)

const scope = "ledger"

// Limits and lists the gates enforce.
const (
	maxTransferCents = 10_000_00 // 10,000.00 EUR per transfer
	opensAt          = 9         // business hours: 09:00 ..
	closesAt         = 17        // .. 17:00, Monday to Friday, UTC
)

var sanctioned = map[string]string{
	"acct:mallory": "on the (example) sanctions list since 2024-11-02",
}

func main() {
	// A fixed Tuesday morning, so that every run prints the same decisions.
	// Pass time.Now to decide by the wall clock instead.
	tuesday := time.Date(2025, time.March, 4, 10, 0, 0, 0, time.UTC)
	if err := run(os.Stdout, func() time.Time { return tuesday }); err != nil {
		fmt.Fprintln(os.Stderr, "policy_gates:", err)
		os.Exit(1)
	}
}

// transfer is the payload of both legs of a transfer: the debit is written
// to the payer's account entity, the credit to the payee's, with the same
// bytes.
type transfer struct {
	ID          string `json:"transfer"`
	From        string `json:"from"`
	To          string `json:"to"`
	AmountCents int64  `json:"amount_cents"`
	Currency    string `json:"currency"`
}

// transferOf reads the transfer a debit leg carries. Gates judge a
// transfer at its debit; its credit is admitted with it (see
// ledgerAdmission).
func transferOf(in *policy.Input) (transfer, bool) {
	var t transfer
	if in.Event.Kind != kindDebited.String() || json.Unmarshal(in.Event.Payload, &t) != nil {
		return t, false
	}
	return t, true
}

// amountLimit refuses transfers above maxTransferCents.
var amountLimit = policy.GateFunc("amount-limit", func(_ context.Context, in *policy.Input) *policy.Denial {
	t, ok := transferOf(in)
	if !ok || t.AmountCents <= maxTransferCents {
		return nil
	}
	return policy.Deny("AMOUNT_OVER_LIMIT",
		fmt.Sprintf("%s is over the limit of %s per transfer", money(t.AmountCents), money(maxTransferCents)),
		map[string]any{"amount_cents": t.AmountCents, "limit_cents": maxTransferCents})
})

// sanctions refuses transfers from or to a sanctioned account.
var sanctions = policy.GateFunc("sanctions", func(_ context.Context, in *policy.Input) *policy.Denial {
	t, ok := transferOf(in)
	if !ok {
		return nil
	}
	for _, acct := range []string{t.From, t.To} {
		if why, listed := sanctioned[acct]; listed {
			return policy.Deny("SANCTIONED", fmt.Sprintf("%s is %s", acct, why), map[string]any{"account": acct})
		}
	}
	return nil
})

// businessHours refuses transfers outside opening hours, asking now for
// the time: the clock is injected, so the gate is deterministic in tests.
func businessHours(now func() time.Time) policy.Gate {
	return policy.GateFunc("business-hours", func(_ context.Context, in *policy.Input) *policy.Denial {
		if _, ok := transferOf(in); !ok {
			return nil
		}
		t := now().UTC()
		weekend := t.Weekday() == time.Saturday || t.Weekday() == time.Sunday
		if !weekend && t.Hour() >= opensAt && t.Hour() < closesAt {
			return nil
		}
		return policy.Deny("OUTSIDE_BUSINESS_HOURS",
			fmt.Sprintf("transfers are taken Monday to Friday %02d:00-%02d:00 UTC; it is %s", opensAt, closesAt, t.Format("Mon 15:04")),
			map[string]any{"at": t.Format(time.RFC3339)})
	})
}

// legs admits ledger events only as the two items of a transfer batch:
// the debit first, the credit second. A credit is not judged by the
// transfer gates itself; ledgerAdmission checks that it repeats its
// batch's debit.
var legs = policy.GateFunc("ledger-legs", func(_ context.Context, in *policy.Input) *policy.Denial {
	var want int
	switch in.Event.Kind {
	case kindDebited.String():
		want = 0
	case kindCredited.String():
		want = 1
	default:
		return nil
	}
	if in.Batch == nil || in.Batch.Size != 2 || in.Batch.Index != want {
		return policy.Deny("NOT_A_TRANSFER", "ledger legs are written as a transfer: one batch of a debit and then a credit", nil)
	}
	return nil
})

// ledgerAdmission is the store's admission: the gates judge every event
// (through the policy.Admitter), then AdmitBatch checks a transfer batch
// as a whole, which no gate can (a gate sees one event): the credit must
// carry its debit's transfer, to the payee's account. So a credit goes in
// only with a debit the gates passed, or one an operator bypassed.
type ledgerAdmission struct{ *policy.Admitter }

func (ledgerAdmission) AdmitBatch(_ context.Context, items []*core.Proposal) error {
	if len(items) != 2 || items[0].Kind != kindDebited || items[1].Kind != kindCredited {
		return nil // not a transfer: the ledger-legs gate has judged it
	}
	var t transfer
	err := json.Unmarshal(items[0].Payload, &t)
	if err == nil && bytes.Equal(items[0].Payload, items[1].Payload) &&
		items[0].Coordinate.Entity == t.From && items[1].Coordinate.Entity == t.To {
		return nil
	}
	d := policy.Deny("UNBALANCED", "the credit does not repeat its debit's transfer to the payee's account", map[string]any{
		"debit": items[0].Coordinate.Entity, "credit": items[1].Coordinate.Entity,
	})
	d.Gate = "ledger-balance"
	return d
}

// simClock is the scenario's clock: the injected one, moved forward when
// the story says "later that day".
type simClock struct {
	mu    sync.Mutex
	now   func() time.Time
	ahead time.Duration
}

func (c *simClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now().Add(c.ahead)
}

func (c *simClock) advance(d time.Duration) {
	c.mu.Lock()
	c.ahead += d
	c.mu.Unlock()
}

// run tells the story to w, deciding business hours by now.
func run(w io.Writer, now func() time.Time) error {
	ctx := context.Background()
	clock := &simClock{now: now}

	// 1. The gates, in order (the first denial wins), as the store's
	// admission. Only the Admitter (and the bypass) needs to know them.
	admitter := policy.NewAdmitter(amountLimit, sanctions, businessHours(clock.Now), legs)
	dir, err := os.MkdirTemp("", "batpak-policy-gates-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := core.DefaultConfig(dir)
	cfg.Admission = ledgerAdmission{admitter}
	s, err := core.Open(cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintf(w, "gates: %v, then ledger-balance on each transfer batch\n", admitter.Gates().Names())
	fmt.Fprintf(w, "clock: %s\n\n", clock.Now().Format("Mon 2006-01-02 15:04 MST"))

	// 2. A teller's transfers. Gates see the principal in the context.
	teller := policy.WithPrincipal(ctx, policy.Principal{ID: "u-teller-3", Tenant: "bank", Roles: []string{"teller"}})
	for _, t := range []transfer{
		{ID: "T-1001", From: "acct:alice", To: "acct:bob", AmountCents: 250_00},
		{ID: "T-1002", From: "acct:alice", To: "acct:carol", AmountCents: 25_000_00},
		{ID: "T-1003", From: "acct:bob", To: "acct:mallory", AmountCents: 40_00},
		{ID: "T-1004", From: "acct:carol", To: "acct:alice", AmountCents: 1_200_00},
	} {
		if err := report(w, clock, t, transact(teller, s, t)); err != nil {
			return err
		}
	}

	// A forged batch: a small debit to bob, a large credit to eve. Every
	// item passes the gates (the credit is not judged by itself), but the
	// batch does not balance.
	small := transfer{ID: "T-1005", From: "acct:alice", To: "acct:bob", AmountCents: 1_00, Currency: "EUR"}
	large := small
	large.To, large.AmountCents = "acct:eve", 9_000_00
	_, err = s.AppendBatch(teller, []core.BatchItem{leg(small.From, kindDebited, small), leg(large.To, kindCredited, large)})
	fmt.Fprintf(w, "a forged batch: its debit sends %s to %s, its credit pays %s to %s\n", money(small.AmountCents), small.To, money(large.AmountCents), large.To)
	if err := report(w, clock, small, err); err != nil {
		return err
	}

	// 3. Later that day: after hours.
	clock.advance(9*time.Hour + 30*time.Minute)
	late := transfer{ID: "T-1006", From: "acct:carol", To: "acct:bob", AmountCents: 3_100_00}
	fmt.Fprintf(w, "\nclock: %s\n", clock.Now().Format("Mon 2006-01-02 15:04 MST"))
	if err := report(w, clock, late, transact(teller, s, late)); err != nil {
		return err
	}

	// 4. An operator lets it through: a Pipeline made from the store's admitter
	// (the only kind of pipeline whose bypasses that admitter honours)
	// evaluates the debit (still denied), then Bypass issues a receipt
	// for a stated reason, and Commit first records who, why and what in
	// an audit event, then runs the write with the bypass in its context.
	pipe := admitter.Pipeline(s)
	operator := policy.WithPrincipal(ctx, policy.Principal{ID: "u-ops-7", Tenant: "bank", Roles: []string{"operator"}})
	batch := transferBatch(late)
	debit := &policy.Input{
		Action:    core.ActionBatch,
		Principal: policy.PrincipalFrom(operator),
		Event: policy.Event{
			Entity: late.From, Scope: scope, Kind: kindDebited.String(),
			Category: kindDebited.Category(), Type: kindDebited.Type(), Payload: batch[0].Payload,
		},
		Batch: &policy.Batch{Size: 2, Index: 0},
	}
	if _, err := pipe.Evaluate(operator, debit); err != nil {
		fmt.Fprintf(w, "operator u-ops-7 evaluates %s: %s\n", late.ID, denialText(err))
	}
	const why = "month-end settlement for carol, approved by the head of operations (ticket OPS-4711)"
	receipt, err := pipe.Bypass(operator, debit, why)
	if err != nil {
		return err
	}
	var written []core.Receipt
	committed, err := pipe.Commit(operator, receipt, func(ctx context.Context) error {
		written, err = s.AppendBatch(ctx, batch)
		return err
	})
	if err != nil {
		return fmt.Errorf("bypass of %s: %w", late.ID, err)
	}
	fmt.Fprintf(w, "operator u-ops-7 bypasses %s (%q): committed, debit seq %d, credit seq %d, bypassed=%v\n",
		late.ID, why, written[0].GlobalSequence, written[1].GlobalSequence, committed.Bypassed)

	// 5. The audit trail: one event per bypass, a system kind, at
	// policy.AuditEntity. The gate cannot refuse it and it cannot be
	// skipped: without it, Commit does not run the write.
	audit, err := s.Query(core.Entity(policy.AuditEntity))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\naudit trail %s: %d event(s)\n", policy.AuditEntity, len(audit))
	for _, ev := range audit {
		var rec struct {
			Who  policy.Principal `json:"who"`
			Why  string           `json:"why"`
			What policy.Input     `json:"what"`
		}
		if err := json.Unmarshal(ev.Payload, &rec); err != nil {
			return fmt.Errorf("audit event %s: %w", ev.Header.ID, err)
		}
		fmt.Fprintf(w, "  seq %d kind %s scope %s (audit receipt seq %d)\n", ev.GlobalSequence, ev.Header.Kind, ev.Coordinate.Scope, committed.Audit.GlobalSequence)
		fmt.Fprintf(w, "    who:  %s %v\n", rec.Who.ID, rec.Who.Roles)
		fmt.Fprintf(w, "    why:  %s\n", rec.Why)
		fmt.Fprintf(w, "    what: %s %s at %s, %s\n", rec.What.Action, rec.What.Event.Kind, rec.What.Event.Entity, rec.What.Event.Payload)
	}

	// 6. What the ledger holds: only the transfers that were let through.
	return printBalances(w, s)
}

// transferBatch is t as an atomic batch: debit the payer, credit the payee
// (caused by the debit, in its conversation).
func transferBatch(t transfer) []core.BatchItem {
	if t.Currency == "" {
		t.Currency = "EUR"
	}
	credit := leg(t.To, kindCredited, t)
	credit.Causation = core.PriorItem(0)
	return []core.BatchItem{leg(t.From, kindDebited, t), credit}
}

func leg(account string, kind core.Kind, t transfer) core.BatchItem {
	if t.Currency == "" {
		t.Currency = "EUR"
	}
	payload, _ := json.Marshal(t) // a struct of strings and numbers: cannot fail
	coord, _ := core.NewCoordinate(account, scope)
	return core.BatchItem{Coordinate: coord, Kind: kind, Payload: payload}
}

// transact writes t as one atomic batch.
func transact(ctx context.Context, s *core.Store, t transfer) error {
	_, err := s.AppendBatch(ctx, transferBatch(t))
	return err
}

// report prints a transfer's outcome: allowed, or the denial. Errors that
// are not denials end the story.
func report(w io.Writer, clock *simClock, t transfer, err error) error {
	head := fmt.Sprintf("%s %s %-12s -> %-12s %12s", clock.Now().Format("15:04"), t.ID, t.From, t.To, money(t.AmountCents))
	var den *policy.Denial
	switch {
	case err == nil:
		fmt.Fprintf(w, "%s  allowed\n", head)
	case errors.As(err, &den):
		fmt.Fprintf(w, "%s  denied: %s\n", head, denialText(err))
	default:
		return fmt.Errorf("%s: %w", t.ID, err)
	}
	return nil
}

// denialText renders a denial as gate, code and message, naming the batch
// item when the store says which one was refused.
func denialText(err error) string {
	var den *policy.Denial
	if !errors.As(err, &den) {
		return err.Error()
	}
	where := ""
	var item *core.BatchItemError
	if errors.As(err, &item) {
		where = fmt.Sprintf(" (batch item %d)", item.Index)
	}
	return fmt.Sprintf("gate %s%s: %s: %s", den.Gate, where, den.Code, den.Message)
}

// printBalances folds the ledger's legs into balances, from zero.
func printBalances(w io.Writer, s *core.Store) error {
	evs, err := s.Query(core.Scope(scope))
	if err != nil {
		return err
	}
	balance := map[string]int64{}
	for _, ev := range evs {
		var t transfer
		if err := json.Unmarshal(ev.Payload, &t); err != nil {
			return err
		}
		switch ev.Header.Kind {
		case kindDebited:
			balance[ev.Coordinate.Entity] -= t.AmountCents
		case kindCredited:
			balance[ev.Coordinate.Entity] += t.AmountCents
		}
	}
	accounts := make([]string, 0, len(balance))
	for a := range balance {
		accounts = append(accounts, a)
	}
	slices.Sort(accounts)
	fmt.Fprintf(w, "\nledger: %d events; balances from zero:\n", len(evs))
	for _, a := range accounts {
		fmt.Fprintf(w, "  %-12s %12s\n", a, money(balance[a]))
	}
	return nil
}

// money renders cents as EUR.
func money(cents int64) string {
	sign := ""
	if cents < 0 {
		sign, cents = "-", -cents
	}
	return fmt.Sprintf("%s%d.%02d EUR", sign, cents/100, cents%100)
}
