package core

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Fence deadlines. A fence nobody ends would refuse every ordinary write
// until Close, so each fence has a deadline (Config.FenceTimeout, or the
// one given to BeginFenceTimeout) counted from when it opened. When it
// passes, the store cancels the fence exactly as Cancel would — its writes
// stay on disk, hidden for ever, and their tickets fail with
// ErrFenceExpired (which matches ErrFenceCancelled too) — and records a
// KindFenceExpired system event. Ordinary writes are accepted again from
// then on; Commit, Cancel and writes through the fence fail with
// ErrFenceExpired (Fence.Close returns nil).

// errFenceExpiredCancel is what the tickets of an expired fence's writes
// fail with: they were cancelled, because the fence expired.
var errFenceExpiredCancel = fmt.Errorf("%w: %w", ErrFenceCancelled, ErrFenceExpired)

// DefaultFenceTimeout is Config.FenceTimeout's default.
const DefaultFenceTimeout = 30 * time.Second

// Fence deadline range (Config.FenceTimeout, BeginFenceTimeout).
const (
	MinFenceTimeout = time.Millisecond
	MaxFenceTimeout = 24 * time.Hour
)

// KindFenceExpired is the system event the store writes when a fence's
// deadline cancelled it; payload {"fence":ID,"timeout":"30s","hidden":N}
// (N: the events it hid).
const KindFenceExpired Kind = 0x0F2

// FenceEntity is the entity (scope "batpak") of KindFenceExpired events.
const FenceEntity = "batpak:fence"

// fenceCoordinate is where the store files KindFenceExpired events.
var fenceCoordinate = Coordinate{Entity: FenceEntity, Scope: "batpak"}

func checkFenceTimeout(d time.Duration) error {
	if d < MinFenceTimeout || d > MaxFenceTimeout {
		return &ConfigError{Field: "FenceTimeout", Value: d, Want: "1ms..24h"}
	}
	return nil
}

// expire runs when the fence's deadline passes: unless it ended already,
// it is cancelled and the expiry recorded (after the cancel, outside
// endOnce: the record may wait for a fence opened meanwhile to end).
func (f *Fence) expire() {
	cancelled := false
	f.endOnce.Do(func() {
		f.expired.Store(true)
		t, err := f.s.enqueueFenced(&request{op: opFenceCancel, fence: f, t: newTicket()})
		if err == nil {
			_, err = t.Wait(context.Background())
		}
		f.endErr = err
		cancelled = err == nil // otherwise the store is closing: Close cancels the fence
	})
	if !cancelled {
		return
	}
	f.s.log.Warn("batpak: a visibility fence expired and was cancelled; its writes stay hidden", "fence", f.id, "timeout", f.timeout, "hidden", f.hidden)
	p, _ := json.Marshal(map[string]any{"fence": f.id, "timeout": f.timeout.String(), "hidden": f.hidden})
	if _, err := f.s.writeStoreRecord(context.Background(), fenceCoordinate, KindFenceExpired, p); err != nil {
		f.s.log.Warn("batpak: fence expiry not recorded", "fence", f.id, "err", err)
	}
}
