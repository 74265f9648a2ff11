package guest_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/plugins/abi"
	"github.com/batpak-go/batpak/sdk/guest"
)

// The registered fold and handler are package state: these tests register
// their own and put the previous ones back.

func register(t *testing.T, f guest.FoldFunc, h guest.HandleFunc) {
	t.Helper()
	guest.Projection(f)
	guest.Handler(h)
	t.Cleanup(func() { guest.Projection(nil); guest.Handler(nil) })
}

func TestBatchOfEncodesEventsAsTheHostSendsThem(t *testing.T) {
	in := []guest.EventRecord{
		{Seq: 7, Clock: 3, Timestamp: -5, Kind: guest.Kind(1, 2), Flags: 9,
			ID: [16]byte{1}, Correlation: [16]byte{2}, Causation: [16]byte{3},
			Entity: []byte("order:1"), Scope: []byte("shop"), Payload: []byte(`{"a":1}`)},
		{Seq: 8}, // zero fields read as zero
	}
	b := guest.BatchOf(in...)
	if b.Len() != 2 {
		t.Fatalf("Len = %d, want 2", b.Len())
	}
	var seen int
	err := b.Events(func(i int, e guest.Event) bool {
		w := in[i]
		if e.Seq() != w.Seq || e.Clock() != w.Clock || e.Timestamp() != w.Timestamp ||
			e.Kind() != w.Kind || e.Flags() != w.Flags ||
			!bytes.Equal(e.ID(), w.ID[:]) || !bytes.Equal(e.Correlation(), w.Correlation[:]) ||
			!bytes.Equal(e.Causation(), w.Causation[:]) || string(e.Entity()) != string(w.Entity) ||
			string(e.Scope()) != string(w.Scope) || string(e.Payload()) != string(w.Payload) {
			t.Errorf("event %d reads back differently from %+v", i, w)
		}
		seen++
		return true
	})
	if err != nil || seen != 2 {
		t.Fatalf("Events: %d events, %v", seen, err)
	}
	if b := guest.BatchOf(); b.Len() != 0 || b.Events(func(int, guest.Event) bool { return true }) != nil {
		t.Errorf("an empty BatchOf is not a valid empty batch")
	}
}

func TestBatchOfRefusesAnEntityTheLayoutCannotHold(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("BatchOf accepted a 65536-byte entity")
		}
	}()
	guest.BatchOf(guest.EventRecord{Entity: make([]byte, 1<<16)})
}

func TestCallProjectionCallsTheFoldAsTheHostDoes(t *testing.T) {
	register(t, nil, nil)
	if _, err := guest.CallProjection(nil, guest.BatchOf()); err == nil || !strings.Contains(err.Error(), "no projection registered") {
		t.Errorf("without a projection: %v", err)
	}

	// The fold gets a copy of the state: growing or changing it in place
	// does not touch the caller's.
	guest.Projection(func(state []byte, _ guest.Batch) ([]byte, error) {
		state[0] = 'X'
		return append(state, '!'), nil
	})
	in := []byte("ab")
	out, err := guest.CallProjection(in, guest.BatchOf())
	if err != nil || string(out) != "Xb!" || string(in) != "ab" {
		t.Errorf("CallProjection = %q, %v; state after %q; want \"Xb!\", nil, \"ab\"", out, err, in)
	}

	// A panic is an error, as the host sees it.
	guest.Projection(func([]byte, guest.Batch) ([]byte, error) { panic("boom") })
	if _, err := guest.CallProjection(nil, guest.BatchOf()); err == nil || err.Error() != "plugin panicked: boom" {
		t.Errorf("a panicking fold: %v", err)
	}
	want := errors.New("bad state")
	guest.Projection(func([]byte, guest.Batch) ([]byte, error) { return nil, want })
	if _, err := guest.CallProjection(nil, guest.BatchOf()); err != want {
		t.Errorf("a failing fold: %v, want its error", err)
	}
}

func TestCallHandlerChecksTheAnswerAsTheHostDoes(t *testing.T) {
	register(t, nil, nil)
	batch := guest.BatchOf(guest.EventRecord{Seq: 1, Kind: guest.Kind(1, 1), Entity: []byte("order:1"), Scope: []byte("shop")})
	if _, _, err := guest.CallHandler(batch); err == nil || !strings.Contains(err.Error(), "no handler registered") {
		t.Errorf("without a handler: %v", err)
	}

	answer := func(rs ...guest.Reaction) {
		guest.Handler(func(guest.Batch) (guest.Action, []guest.Reaction, error) { return guest.Stop, rs, nil })
	}
	answer(guest.Reaction{Source: 0, Kind: guest.Kind(4, 1), Entity: []byte("shipment:1"), Scope: []byte("shop")})
	action, rs, err := guest.CallHandler(batch)
	if err != nil || action != guest.Stop || len(rs) != 1 || string(rs[0].Entity) != "shipment:1" {
		t.Errorf("CallHandler = %v, %+v, %v", action, rs, err)
	}

	for _, tc := range []struct {
		name string
		r    guest.Reaction
		want string
	}{
		{"an entity over 1024 bytes", guest.Reaction{Entity: make([]byte, abi.MaxCoordinateBytes+1)}, "reaction 1: its entity is 1025 bytes"},
		{"a scope over 1024 bytes", guest.Reaction{Entity: []byte("e"), Scope: make([]byte, abi.MaxCoordinateBytes+1)}, "reaction 1: its scope is 1025 bytes"},
		{"a source outside the batch", guest.Reaction{Source: 1, Entity: []byte("e")}, "reaction 1 names source event 1 of a batch of 1"},
	} {
		answer(guest.Reaction{Entity: []byte("ok")}, tc.r)
		action, rs, err := guest.CallHandler(batch)
		if err == nil || !strings.Contains(err.Error(), tc.want) || action != 0 || rs != nil {
			t.Errorf("%s: CallHandler = %v, %+v, %v; want no answer and an error containing %q", tc.name, action, rs, err, tc.want)
		}
	}

	guest.Handler(func(guest.Batch) (guest.Action, []guest.Reaction, error) { panic("boom") })
	if _, _, err := guest.CallHandler(batch); err == nil || err.Error() != "plugin panicked: boom" {
		t.Errorf("a panicking handler: %v", err)
	}
}
