package main

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"syscall"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/sdk/client"
)

// Exit codes: one per kind of failure a script may want to act on. The
// table is documented in README.md ("Exit codes"); a new kind gets a new
// number, never a reused one.
const (
	exitOK          = 0
	exitError       = 1   // any failure not listed below: bad input values, I/O errors, a failed policy test
	exitUsage       = 2   // the command was called wrongly: unknown verb or flag, missing or extra arguments
	exitDenied      = 3   // a policy (local gate or the server's) or the server's authorization refused it (unknown key, missing role, suspended tenant)
	exitConflict    = 4   // compare-and-set (--expect-clock/--expect-new) or idempotency-key conflict
	exitNotFound    = 5   // no such event, cursor, tenant, key ..., no store at --data-dir, an entity redact --entity finds no events of
	exitLocked      = 6   // the store is locked by another process (one writer at a time)
	exitCorrupt     = 7   // damaged segment, broken hash chain, truncated log: verify failed
	exitUnavailable = 8   // the server is unreachable, overloaded (503, BUSY) or asks to retry later
	exitInterrupted = 130 // SIGINT or SIGTERM
)

// exitCodeOf classifies a command's error into its exit code. It looks at
// the cause (errors.Is/As through every wrapper), so a verb returns its
// errors as it likes — core's, sdk/client's (raw or through remoteError),
// the CLI's own — and gets the right code without doing anything. A new
// verb adopts the table by returning its errors from RunE; to force a code
// for an error of its own, it wraps it: withExitCode(exitNotFound, err).
func exitCodeOf(err error) int {
	var forced *codedError
	if errors.As(err, &forced) {
		return forced.code
	}
	if code := remoteExitCode(err); code != 0 {
		return code
	}
	var den *policy.Denial
	var locked *core.LockedError
	var ue *usageError
	switch {
	case errors.As(err, &den):
		return exitDenied
	case errors.Is(err, core.ErrConflict), errors.Is(err, core.ErrIdempotencyMismatch), errors.Is(err, core.ErrDuplicateID):
		return exitConflict
	case errors.Is(err, core.ErrNotFound):
		return exitNotFound
	case errors.As(err, &locked), errors.Is(err, core.ErrLocked):
		return exitLocked
	case errors.Is(err, core.ErrCorrupt), errors.Is(err, core.ErrChainBroken), errors.Is(err, core.ErrLogTruncated), errors.Is(err, core.ErrCursorAhead):
		return exitCorrupt
	case errors.Is(err, core.ErrRetry):
		return exitUnavailable
	case errors.As(err, &ue):
		return exitUsage
	}
	return exitError
}

// remoteExitCode classifies a server's refusal or a transport failure
// (0: not a remote error).
func remoteExitCode(err error) int {
	var ce *client.Error
	if errors.As(err, &ce) {
		switch ce.Code {
		case client.CodePolicyDenied, client.CodeForbidden, client.CodeUnauthenticated, client.CodeTenantSuspended:
			return exitDenied
		case client.CodeConflict, client.CodeIdempotencyMismatch:
			return exitConflict
		case client.CodeNotFound:
			return exitNotFound
		case client.CodeBusy, client.CodeNotAMember, client.CodeTooManyRequests, client.CodeTooManyConnections:
			return exitUnavailable
		case client.CodeStoreDamaged:
			return exitCorrupt
		case client.CodeQuotaExceeded:
			if ce.RetryAfter > 0 {
				return exitUnavailable
			}
		}
		switch ce.Status {
		case 401, 403:
			return exitDenied
		case 404:
			return exitNotFound
		case 409:
			return exitConflict
		case 502, 503, 504:
			return exitUnavailable
		}
		return exitError
	}
	// Transport failures: the server could not be reached or answered
	// nothing (the request may never have arrived).
	var ue *url.Error
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.Is(err, context.Canceled):
		return 0
	case errors.As(err, &oe), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return exitUnavailable
	case errors.As(err, &ue) && !errors.Is(err, os.ErrNotExist):
		return exitUnavailable
	case errors.As(err, &ne) && ne.Timeout():
		return exitUnavailable
	}
	return 0
}

// codedError gives an error an exit code of the table explicitly.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// withExitCode makes err exit with code (one of the exit* constants).
func withExitCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codedError{code: code, err: err}
}
