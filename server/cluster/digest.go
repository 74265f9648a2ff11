package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"

	"github.com/batpak-go/batpak/core"
)

// ReplicaDigest is one replica's digest of a store's events in a range of
// global sequences: what a replica check compares between nodes.
type ReplicaDigest struct {
	From   uint64 `json:"from"`   // the first global sequence covered
	Upto   uint64 `json:"upto"`   // the events before this global sequence
	Events uint64 `json:"events"` // how many there were (read before Damaged)
	Digest string `json:"digest"` // hex SHA-256; empty with Damaged
	// Damaged says why this node could not read its copy (a damaged
	// segment, a broken chain): the answer for a damaged replica.
	Damaged string `json:"damaged,omitempty"`
	// Born is, on a cluster node, the store's birth index (StoreMark.Born;
	// 0 unknown): digests of stores born at different indexes are of two
	// incarnations of the tenant (deleted and created again between), not
	// comparable.
	Born uint64 `json:"born,omitempty"`
}

// digestPollBytes bounds the payload bytes a digest holds at once (it
// reads the events in pages of at most this many bytes, or one event).
const digestPollBytes = 4 << 20

// Digest computes the digest of s's visible events with from <= global
// sequence < upto: SHA-256 over each one's global sequence (8 bytes,
// little endian) and chain hash, in order. The chain hash covers the
// event's header, coordinate, idempotency key and payload digest, so
// replicas holding the same events give the same digest, and one holding
// any other gives another; with from = 0 it is the digest of everything
// before upto. It reads the events from from on in pages (at most 4 MiB of
// payloads held at once) and stops at ctx's end (returning its error). A
// copy it cannot read (core.ErrCorrupt, core.ErrChainBroken,
// core.ErrLogTruncated) is no error: the answer says Damaged. The caller
// makes sure s holds the events before upto.
func Digest(ctx context.Context, s *core.Store, from, upto uint64) (ReplicaDigest, error) {
	return DigestChunk(ctx, s, from, upto, 0, 0)
}

// DigestChunk is Digest stopping early: after maxEvents events, or once
// the events it read hold maxBytes of payload (0: no bound). The answer's
// Upto is then the sequence after the last event covered, so another
// replica's Digest of [from, Upto) covers the same events.
func DigestChunk(ctx context.Context, s *core.Store, from, upto uint64, maxEvents uint64, maxBytes int64) (ReplicaDigest, error) {
	d := ReplicaDigest{From: from, Upto: upto}
	var read int64
	if from >= upto {
		d.Digest = hex.EncodeToString(sha256.New().Sum(nil))
		return d, nil
	}
	h := sha256.New()
	var buf [8 + len(core.Hash{})]byte
	c := s.Cursor(core.All())
	c.Seek(from)
	page := 256
	for {
		if err := ctx.Err(); err != nil {
			return d, err
		}
		evs, _, err := c.PollBytes(page, digestPollBytes)
		if err != nil {
			if !Damaged(err) {
				return d, err
			}
			if page > 1 {
				// A page failed (the position stays): read it again
				// one event at a time, to count those before the damage.
				page = 1
				continue
			}
			d.Damaged = err.Error()
			return d, nil
		}
		if len(evs) == 0 {
			break
		}
		for _, ev := range evs {
			if ev.GlobalSequence >= upto {
				d.Digest = hex.EncodeToString(h.Sum(nil))
				return d, nil
			}
			binary.LittleEndian.PutUint64(buf[:8], ev.GlobalSequence)
			copy(buf[8:], ev.Header.Hash[:])
			h.Write(buf[:])
			d.Events++
			read += int64(len(ev.Payload))
			if (maxEvents > 0 && d.Events >= maxEvents) || (maxBytes > 0 && read >= maxBytes) {
				d.Upto = ev.GlobalSequence + 1
				d.Digest = hex.EncodeToString(h.Sum(nil))
				return d, nil
			}
		}
	}
	d.Digest = hex.EncodeToString(h.Sum(nil))
	return d, nil
}

// Damaged reports whether err says a store's files are damaged
// (core.ErrCorrupt, core.ErrChainBroken, core.ErrLogTruncated): for a
// replica check, a copy that differs from every other, not a failed
// request.
func Damaged(err error) bool {
	return errors.Is(err, core.ErrCorrupt) || errors.Is(err, core.ErrChainBroken) || errors.Is(err, core.ErrLogTruncated)
}
