package cluster

import (
	"encoding/json"
	"fmt"

	"github.com/batpak-go/batpak/core"
)

// The raft log entry format. An entry's data is one version byte followed
// by a JSON command:
//
//	byte 0    commandVersion (1)
//	bytes 1…  {"t": tenant, "b": batch, "i": [item, …]}
//
//	item      {"e": entity, "s": scope, "k": kind, "p": payload (base64),
//	           "id": event id, "ts": microseconds, "x": expectation
//	           (0 none, 1 no events, 2 clock), "c": expected clock,
//	           "ik": idempotency key, "co": correlation id,
//	           "ca": causation id, "f": flags, "pi": prior item + 1 (0 none)}
//
// A node refuses an entry whose version byte it does not know (a newer
// node's format) rather than guessing at it: see Node.Err.
const commandVersion byte = 1

// command is one raft entry: writes to one tenant, each item an
// independent append, or (batch) one atomic batch.
type command struct {
	Tenant string     `json:"t"`
	Batch  bool       `json:"b,omitempty"`
	Items  []wireItem `json:"i"`
}

type wireItem struct {
	Entity      string       `json:"e"`
	Scope       string       `json:"s"`
	Kind        uint16       `json:"k"`
	Payload     []byte       `json:"p"`
	ID          core.EventID `json:"id"`
	Timestamp   int64        `json:"ts"`
	Expect      uint8        `json:"x,omitempty"`
	Clock       uint64       `json:"c,omitempty"`
	Idem        string       `json:"ik,omitempty"`
	Correlation core.EventID `json:"co"`
	Causation   core.EventID `json:"ca"`
	Flags       uint16       `json:"f,omitempty"`
	Prior       int          `json:"pi,omitempty"`
}

// toWire renders a prepared item (id and timestamp fixed).
func toWire(it core.BatchItem) wireItem {
	w := wireItem{
		Entity: it.Coordinate.Entity, Scope: it.Coordinate.Scope, Kind: uint16(it.Kind),
		Payload: it.Payload, ID: it.Options.ID, Timestamp: it.Options.Timestamp,
		Idem: it.Options.IdempotencyKey, Correlation: it.Options.CorrelationID,
		Causation: it.Options.CausationID, Flags: it.Options.Flags,
	}
	exp := it.Options.ExpectedClock
	if c, ok := exp.Clock(); ok {
		w.Expect, w.Clock = 2, c
	} else if exp.NoEvents() {
		w.Expect = 1
	}
	if id, ok := it.Causation.Event(); ok {
		w.Causation = id
	}
	if i, ok := it.Causation.Prior(); ok {
		w.Prior = i + 1
	}
	return w
}

// item is the core.BatchItem a wire item describes.
func (w *wireItem) item() core.BatchItem {
	it := core.BatchItem{
		Coordinate: core.Coordinate{Entity: w.Entity, Scope: w.Scope},
		Kind:       core.Kind(w.Kind),
		Payload:    w.Payload,
		Options: core.AppendOptions{
			IdempotencyKey: w.Idem, CorrelationID: w.Correlation, CausationID: w.Causation,
			Flags: w.Flags, ID: w.ID, Timestamp: w.Timestamp,
		},
	}
	switch w.Expect {
	case 1:
		it.Options.ExpectedClock = core.ExpectNoEvents()
	case 2:
		it.Options.ExpectedClock = core.ExpectClock(w.Clock)
	}
	if w.Prior > 0 {
		it.Causation = core.PriorItem(w.Prior - 1)
	}
	return it
}

func encodeCommand(c *command) ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	return append([]byte{commandVersion}, b...), nil
}

// decodeCommand reads an entry's data. An unknown version is an
// *UnknownFormatError.
func decodeCommand(data []byte) (*command, error) {
	if len(data) == 0 {
		return nil, &UnknownFormatError{Version: -1}
	}
	if data[0] != commandVersion {
		return nil, &UnknownFormatError{Version: int(data[0])}
	}
	var c command
	if err := json.Unmarshal(data[1:], &c); err != nil {
		return nil, fmt.Errorf("cluster: undecodable command: %w", err)
	}
	return &c, nil
}
