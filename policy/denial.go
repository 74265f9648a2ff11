package policy

import (
	"fmt"
	"strings"
)

// Codes batpak's own gates use.
const (
	// CodeGateDefect: a gate panicked; the write is refused, the process lives.
	CodeGateDefect = "GATE_DEFECT"
	// CodePolicyError: a policy could not decide (no decision, an undefined
	// result, a runtime error, a malformed decision): fail closed.
	CodePolicyError = "POLICY_ERROR"
	// CodeNotAllowed: a policy's allow was not true and it gave no reason.
	CodeNotAllowed = "NOT_ALLOWED"
)

// Reason is one reason for a denial.
type Reason struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Context map[string]any `json:"context,omitempty"`
}

// Denial is a gate's refusal of a write. It implements error; writes the
// store's gate refuses return it (reach it with errors.As). Code, Message
// and Context are the first reason; Reasons holds every reason (at least
// the first).
type Denial struct {
	Gate     string
	Code     string
	Message  string
	Context  map[string]any
	Reasons  []Reason
	Revision string // the policy bundle revision that decided, when a policy did
	// Layer names the policy layer that refused when several judge one
	// write (a server says "platform" or "tenant"); "" otherwise.
	Layer string
	// DecisionID names the decision in a decision log, when one records it.
	DecisionID string
}

// Deny builds a one-reason denial, for native gates.
func Deny(code, message string, context map[string]any) *Denial {
	return &Denial{Code: code, Message: message, Context: context, Reasons: []Reason{{Code: code, Message: message, Context: context}}}
}

func (d *Denial) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "batpak: write denied by gate %q", d.Gate)
	reasons := d.Reasons
	if len(reasons) == 0 {
		reasons = []Reason{{Code: d.Code, Message: d.Message}}
	}
	for i, r := range reasons {
		sep := ": "
		if i > 0 {
			sep = "; "
		}
		fmt.Fprintf(&b, "%s%s: %s", sep, r.Code, r.Message)
	}
	return b.String()
}

// Has reports whether any reason has this code.
func (d *Denial) Has(code string) bool {
	for _, r := range d.Reasons {
		if r.Code == code {
			return true
		}
	}
	return d.Code == code
}
