package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func story(t *testing.T, at time.Time) string {
	t.Helper()
	var out bytes.Buffer
	if err := run(&out, func() time.Time { return at }); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	return out.String()
}

// line returns the output line that mentions every one of parts.
func line(t *testing.T, out string, parts ...string) string {
	t.Helper()
next:
	for _, l := range strings.Split(out, "\n") {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		return l
	}
	t.Errorf("no line mentions all of %q in:\n%s", parts, out)
	return ""
}

func TestBusinessDay(t *testing.T) {
	out := story(t, time.Date(2025, time.March, 4, 10, 0, 0, 0, time.UTC)) // a Tuesday
	line(t, out, "gates: [amount-limit sanctions business-hours ledger-legs]")
	line(t, out, "10:00 T-1001", "acct:alice", "acct:bob", "250.00 EUR", "allowed")
	line(t, out, "T-1002", "denied: gate amount-limit (batch item 0): AMOUNT_OVER_LIMIT: 25000.00 EUR is over the limit of 10000.00 EUR")
	line(t, out, "T-1003", "denied: gate sanctions (batch item 0): SANCTIONED: acct:mallory is on the (example) sanctions list")
	line(t, out, "T-1004", "allowed")
	line(t, out, "T-1005", "denied: gate ledger-balance: UNBALANCED")
	line(t, out, "19:30 T-1006", "denied: gate business-hours (batch item 0): OUTSIDE_BUSINESS_HOURS", "it is Tue 19:30")
	line(t, out, "operator u-ops-7 evaluates T-1006: gate business-hours: OUTSIDE_BUSINESS_HOURS")
	line(t, out, "operator u-ops-7 bypasses T-1006", "OPS-4711", "committed", "bypassed=true")

	// The audit event: who, why and what, as a system kind in scope policy.
	line(t, out, "audit trail batpak:audit:bypass: 1 event(s)")
	line(t, out, "kind 0x0:0x1 scope policy")
	line(t, out, "who:  u-ops-7 [operator]")
	line(t, out, "why:  month-end settlement for carol", "OPS-4711")
	line(t, out, "what: batch 0x3:0x1 at acct:carol", `"transfer":"T-1006"`)

	// Denied transfers wrote nothing: 3 transfers of 2 legs each.
	line(t, out, "ledger: 6 events")
	line(t, out, "acct:alice", "950.00 EUR")   // -250 + 1200
	line(t, out, "acct:bob", "3350.00 EUR")    // +250 + 3100
	line(t, out, "acct:carol", "-4300.00 EUR") // -1200 - 3100
	for _, absent := range []string{"acct:mallory ", "acct:eve "} {
		if strings.Contains(out[strings.Index(out, "ledger:"):], absent) {
			t.Errorf("%s has a balance: a denied transfer was written\n%s", absent, out)
		}
	}
}

func TestWeekend(t *testing.T) {
	out := story(t, time.Date(2025, time.March, 8, 11, 0, 0, 0, time.UTC)) // a Saturday
	// Limits and sanctions come first: their denials win.
	line(t, out, "T-1001", "denied: gate business-hours (batch item 0): OUTSIDE_BUSINESS_HOURS", "it is Sat 11:00")
	line(t, out, "T-1002", "AMOUNT_OVER_LIMIT")
	line(t, out, "T-1003", "SANCTIONED")
	line(t, out, "T-1004", "OUTSIDE_BUSINESS_HOURS")
	line(t, out, "operator u-ops-7 bypasses T-1006", "committed")
	line(t, out, "ledger: 2 events")
	line(t, out, "acct:bob", "3100.00 EUR")
	line(t, out, "acct:carol", "-3100.00 EUR")
}

func TestMoney(t *testing.T) {
	for cents, want := range map[int64]string{0: "0.00 EUR", 5: "0.05 EUR", 123456: "1234.56 EUR", -250: "-2.50 EUR"} {
		if got := money(cents); got != want {
			t.Errorf("money(%d) = %q, want %q", cents, got, want)
		}
	}
}
