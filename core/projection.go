package core

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/batpak-go/batpak/core/internal/index"
)

// Projection folds an entity's events into state S. Apply is called for
// each visible event of the entity whose kind is in Kinds (all kinds when
// Kinds is empty), in clock order, starting from Init. Name and
// SchemaVersion identify the projection in caches, so they must be stable
// across builds; bump SchemaVersion when Apply or S changes meaning, and
// cached states of the old version are ignored.
type Projection[S any] interface {
	Name() string
	SchemaVersion() uint32
	Kinds() []Kind
	Init() S
	Apply(state S, ev StoredEvent) S
}

// Incremental is implemented by projections whose Apply may continue from
// a cached state: Project then applies only the events after the cached
// one instead of refolding the entity.
type Incremental interface {
	SupportsIncremental() bool
}

// BatchApplier is implemented by projections that fold many events per
// call (a WebAssembly plugin crossing into its sandbox once per batch, not
// once per event). Project then calls ApplyBatch with up to
// ProjectBatchSize events (fewer past ProjectBatchBytes of payload) at a time
// instead of Apply; an error fails the
// Project call. The slice is reused between calls: do not keep it.
type BatchApplier[S any] interface {
	ApplyBatch(state S, evs []StoredEvent) (S, error)
}

// ProjectBatchSize is the most events Project hands a BatchApplier at
// once; a batch also ends with the event that takes its payloads to
// ProjectBatchBytes (so it holds at least one event, whatever its size):
// an entity of large events is folded in parts, never read all at once.
const (
	ProjectBatchSize  = 1024
	ProjectBatchBytes = 4 << 20
)

// FoldAdmitter is implemented by projections whose folds take a turn
// before reading any event, from a host bounding the folds that run at
// once (a server's plugin call slots): AdmitFold is called once per fold
// that has events to read — not for a cached state that is current, nor
// for an entity with none — before the first is read, and release once
// the fold has ended (its state cached). So a fold waiting for its turn
// holds no events, and a read answered from the cache takes no turn. An
// error from AdmitFold ends the projection with it, nothing read.
type FoldAdmitter interface {
	AdmitFold() (release func(), err error)
}

// StateCodec is implemented by projections that encode their state for
// the cache themselves; the default is encoding/json.
type StateCodec[S any] interface {
	EncodeState(S) ([]byte, error)
	DecodeState([]byte) (S, error)
}

// Freshness says how current a projected state must be.
type Freshness struct {
	maxAge time.Duration // 0: consistent
}

// Consistent: the state includes every event of the entity published when
// Project was called.
func Consistent() Freshness { return Freshness{} }

// MaybeStale: a cached state computed at most maxAge ago may be returned
// without looking for newer events.
func MaybeStale(maxAge time.Duration) Freshness { return Freshness{maxAge: maxAge} }

// EntityGeneration is a number that changes whenever the entity gets a new
// visible event (one past the global sequence of its latest one), and 0
// for an entity with no visible events.
func (s *Store) EntityGeneration(entity string) uint64 {
	ix := s.ix
	ix.RLock()
	defer ix.RUnlock()
	n, ok := ix.EntityNamed(entity)
	if !ok || len(ix.Entity(n).Seqs) == 0 {
		return 0
	}
	seqs := ix.Entity(n).Seqs
	return uint64(seqs[len(seqs)-1]) + 1
}

// Project folds the visible events of entity through p. found is false
// when the entity has no visible event of p's kinds (state is then
// p.Init()). With a projection cache configured (Config.ProjectionCache)
// the result is cached under entity, p.Name() and p.SchemaVersion();
// an Incremental projection continues from a cached state.
func Project[S any](s *Store, entity string, p Projection[S], fresh Freshness) (state S, found bool, err error) {
	state, found, _, err = project(s, entity, p, fresh)
	return state, found, err
}

// ProjectIfChanged projects only when the entity's generation differs from
// lastGen, returning the current generation; changed is false (and state
// the zero value) when nothing changed.
func ProjectIfChanged[S any](s *Store, entity string, p Projection[S], lastGen uint64, fresh Freshness) (gen uint64, state S, changed bool, err error) {
	if g := s.EntityGeneration(entity); g == lastGen {
		return g, state, false, nil
	}
	state, _, gen, err = project(s, entity, p, fresh)
	if err != nil {
		return lastGen, state, false, err
	}
	return gen, state, gen != lastGen, nil
}

func cacheKey[S any](entity string, p Projection[S]) string {
	return fmt.Sprintf("%s\x00%s\x00%d", entity, p.Name(), p.SchemaVersion())
}

func project[S any](s *Store, entity string, p Projection[S], fresh Freshness) (S, bool, uint64, error) {
	var zero S
	if err := s.checkReadable(); err != nil {
		return zero, false, 0, err
	}
	// The epoch is read once, before the cache and before reading: an
	// erasure after this makes whatever is computed here stale.
	erasures := s.erasures.Load()
	cache := s.cfg.ProjectionCache
	key := ""
	var cached *CachedState // a current state an Incremental projection continues
	if cache != nil {
		key = cacheKey(entity, p)
		if ce, ok := cache.Get(key); ok && ce.Erasures == erasures {
			if st, err := decodeState(p, ce.State); err == nil {
				if fresh.maxAge > 0 && time.Since(ce.At) <= fresh.maxAge {
					return st, ce.Found, ce.UpTo, nil
				}
				if inc, ok := any(p).(Incremental); ok && inc.SupportsIncremental() {
					cached = &ce
				}
			}
		}
	}
	// A read that fails while a compaction replaced segment files is done
	// again from the start (see readRetry), in the turn it took.
	var release func() // FoldAdmitter's, once admitted
	for try := 0; ; try++ {
		epoch := s.compactions.Load()
		state, found, from := p.Init(), false, uint64(0)
		if cached != nil {
			st, err := decodeState(p, cached.State) // afresh: Apply may have changed the last one
			if err != nil {
				return zero, false, 0, err
			}
			state, found, from = st, cached.Found, cached.UpTo
		}
		locs, gen := index.EntityEvents(s.ix, entity, p.Kinds(), from)
		if from > 0 && gen == from {
			// cached state is current
			return state, found, gen, nil
		}
		if fa, ok := any(p).(FoldAdmitter); ok && release == nil && len(locs) > 0 {
			r, err := fa.AdmitFold()
			if err != nil {
				return zero, false, 0, err
			}
			release = r
			defer release()
		}
		var rerr error
		if ba, ok := any(p).(BatchApplier[S]); ok {
			// One slice serves every call (see BatchApplier).
			// Each batch is read, then applied with no segment held.
			evs := make([]StoredEvent, 0, min(len(locs), ProjectBatchSize))
			for i := 0; i < len(locs) && rerr == nil; i += len(evs) {
				evs = evs[:0]
				bytes := 0
				s.eachLoc(locs[i:min(i+ProjectBatchSize, len(locs))], func(ev StoredEvent, err error) bool {
					if err != nil {
						rerr = err
						return false
					}
					evs = append(evs, ev)
					bytes += len(ev.Payload)
					return bytes < ProjectBatchBytes
				})
				if rerr == nil {
					state, rerr = ba.ApplyBatch(state, evs)
				}
				found = true
			}
		} else {
			s.eachLoc(locs, func(ev StoredEvent, err error) bool {
				if err != nil {
					rerr = err
					return false
				}
				state = p.Apply(state, ev)
				found = true
				return true
			})
		}
		if rerr != nil {
			if try < 3 && s.compactions.Load() != epoch {
				continue
			}
			return zero, false, 0, rerr
		}
		if cache != nil && s.erasures.Load() == erasures {
			if b, err := encodeState(p, state); err == nil {
				cache.Put(key, CachedState{State: b, UpTo: gen, Found: found, At: time.Now(), Erasures: erasures})
				if s.erasures.Load() != erasures {
					// An erasure was published while this was filed: its
					// forgetting may have run before the Put, and the state
					// may hold what it erased. (An erasure publishes its
					// epoch before it forgets, so one of the two drops it.)
					s.forgetEntities(map[string]int{entity: 1})
				}
			}
		}
		return state, found, gen, nil
	}
}

func encodeState[S any](p Projection[S], st S) ([]byte, error) {
	if c, ok := any(p).(StateCodec[S]); ok {
		return c.EncodeState(st)
	}
	return json.Marshal(st)
}

func decodeState[S any](p Projection[S], b []byte) (S, error) {
	if c, ok := any(p).(StateCodec[S]); ok {
		return c.DecodeState(b)
	}
	var st S
	err := json.Unmarshal(b, &st)
	return st, err
}

// Watcher follows a projection of one entity (see WatchProjection).
type Watcher[S any] struct {
	s      *Store
	entity string
	p      Projection[S]
	gen    uint64
	primed bool
}

// WatchProjection returns a watcher whose Next blocks until the entity's
// state changes and returns it. It re-reads the entity's generation after
// every publication, so it always converges on the true state, however
// many notifications lossy subscribers drop.
func WatchProjection[S any](s *Store, entity string, p Projection[S]) *Watcher[S] {
	return &Watcher[S]{s: s, entity: entity, p: p}
}

// Next returns the entity's state as soon as it differs from the one Next
// last returned (the first call returns the current state if the entity
// has events). It returns ctx.Err() when ctx ends and ErrClosed when the
// store closes.
func (w *Watcher[S]) Next(ctx context.Context) (S, error) {
	var zero S
	for {
		wake := w.s.bc.changed()
		if err := w.s.checkReadable(); err != nil {
			return zero, err
		}
		if g := w.s.EntityGeneration(w.entity); g != w.gen || (!w.primed && g > 0) {
			st, _, gen, err := project(w.s, w.entity, w.p, Consistent())
			if err != nil {
				return zero, err
			}
			w.gen, w.primed = gen, true
			return st, nil
		}
		select {
		case <-wake:
		case <-w.s.bc.shut:
			return zero, ErrClosed
		case <-ctx.Done():
			return zero, ctx.Err()
		}
	}
}

// Generation is the entity generation of the state Next last returned.
func (w *Watcher[S]) Generation() uint64 { return w.gen }
