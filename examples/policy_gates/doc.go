// Policy gates guards a small bank ledger with native Go gates: a limit
// per transfer, a sanctions list and business hours read from an injected
// clock. The gates are wired into the store through policy.NewAdmitter, so
// every write asks them first. Each transfer is one atomic batch, a debit
// and a credit; some go through, some are denied (the denial names the
// gate, a code and a message, and nothing is written), and an operator
// lets one after-hours transfer through with a Pipeline bypass, which
// records an audit event.
//
//	go run ./examples/policy_gates
package main
