package console

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/batpak-go/batpak/server/tenancy"
	"github.com/batpak-go/batpak/server/tenantpolicy"
)

// Sampler limits (see the package doc).
const (
	// RingSamples is how many one-second samples each ring keeps (five
	// minutes).
	RingSamples = 300
	// MaxWatchedTenants bounds the tenants sampled at once: those whose
	// dashboard was opened in the last WatchWindow. A tenant past the
	// bound is sampled once another's window ends.
	MaxWatchedTenants = 64
	// WatchWindow is how long a tenant stays sampled after its dashboard
	// last asked for samples.
	WatchWindow = 2 * time.Minute
)

// ServerSample is one second of the server as a whole, from its own
// Prometheus metrics.
type ServerSample struct {
	Time          time.Time `json:"time"`
	EventsPerSec  float64   `json:"events_per_sec"`  // events appended, all tenants
	AppendP50Ms   float64   `json:"append_p50_ms"`   // median append and batch request latency over the second (0: none)
	AppendP99Ms   float64   `json:"append_p99_ms"`   // its 99th percentile (bucket upper bounds: an estimate)
	Appends       float64   `json:"appends"`         // append and batch requests answered in the second
	FsyncsPerSec  float64   `json:"fsyncs_per_sec"`  // fsyncs seen by writes
	DenialsPerSec float64   `json:"denials_per_sec"` // platform policy denials
	Subscriptions float64   `json:"subscriptions"`   // event streams open now
}

// TenantSample is one second of one tenant's store.
type TenantSample struct {
	Time         time.Time `json:"time"`
	EventsPerSec float64   `json:"events_per_sec"`
	FsyncsPerSec float64   `json:"fsyncs_per_sec"`
	FsyncMs      float64   `json:"fsync_ms"` // mean fsync latency over the second (0: none)
	GroupCommits float64   `json:"group_commits_per_sec"`
	QueueLen     int       `json:"queue_len"` // writes waiting for the writer now
	QueueCap     int       `json:"queue_cap"`
	Denied       uint64    `json:"denied"` // tenant policy denials recorded since start
	DeniedPerSec float64   `json:"denied_per_sec"`
	StorageBytes int64     `json:"storage_bytes"`
	Events       uint64    `json:"global_sequence"`
}

// ring is a fixed-size ring of samples, oldest overwritten.
type ring[T any] struct {
	buf  [RingSamples]T
	next int
	n    int
}

func (r *ring[T]) add(v T) {
	r.buf[r.next] = v
	r.next = (r.next + 1) % RingSamples
	r.n = min(r.n+1, RingSamples)
}

// all returns the samples, oldest first.
func (r *ring[T]) all() []T {
	out := make([]T, 0, r.n)
	for i := RingSamples - r.n; i < RingSamples; i++ {
		out = append(out, r.buf[(r.next+i)%RingSamples])
	}
	return out
}

type tenantTrack struct {
	watched time.Time
	samples ring[TenantSample]
	last    TenantSample
	seen    bool
	syncNs  int64
	fsyncs  uint64
	groups  uint64
}

// sampler takes a sample of the server every second and of each watched
// tenant.
type sampler struct {
	reg      prometheus.Gatherer
	tenants  *tenancy.Registry
	policies *tenantpolicy.Manager
	now      func() time.Time

	mu      sync.Mutex
	server  ring[ServerSample]
	prev    serverCounters
	hasPrev bool
	prevAt  time.Time
	perTen  map[string]float64 // events/s of each tenant with a series of its own, last second
	tracks  map[string]*tenantTrack
}

type serverCounters struct {
	events, fsyncs, denials float64
	byTenant                map[string]float64
	buckets                 []float64 // cumulative counts of the append routes' latency buckets
	bounds                  []float64
	count                   float64
}

func newSampler(reg prometheus.Gatherer, tenants *tenancy.Registry, policies *tenantpolicy.Manager) *sampler {
	return &sampler{reg: reg, tenants: tenants, policies: policies, now: time.Now, perTen: map[string]float64{}, tracks: map[string]*tenantTrack{}}
}

// run samples every interval until ctx ends.
func (s *sampler) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.tick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *sampler) tick(ctx context.Context) {
	now := s.now()
	s.sampleServer(now)
	s.mu.Lock()
	var ids []string
	for id, tr := range s.tracks {
		if now.Sub(tr.watched) > WatchWindow {
			delete(s.tracks, id)
			continue
		}
		ids = append(ids, id)
	}
	s.mu.Unlock()
	for _, id := range ids {
		s.sampleTenant(ctx, id, now)
	}
}

// appendRoutes are the routes whose latency is the "append latency".
var appendRoutes = map[string]bool{
	"POST /v1/tenants/{tenant}/events":  true,
	"POST /v1/tenants/{tenant}/batches": true,
}

func (s *sampler) gather() (serverCounters, float64) {
	c := serverCounters{byTenant: map[string]float64{}}
	var subs float64
	if s.reg == nil {
		return c, 0
	}
	mfs, err := s.reg.Gather()
	if err != nil && len(mfs) == 0 {
		return c, 0
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "batpak_events_appended_total":
			for _, m := range mf.GetMetric() {
				v := m.GetCounter().GetValue()
				c.events += v
				c.byTenant[label(m, "tenant")] = v
			}
		case "batpak_fsyncs_total":
			for _, m := range mf.GetMetric() {
				c.fsyncs += m.GetCounter().GetValue()
			}
		case "batpak_policy_denials_total":
			for _, m := range mf.GetMetric() {
				c.denials += m.GetCounter().GetValue()
			}
		case "batpak_subscriptions":
			for _, m := range mf.GetMetric() {
				subs += m.GetGauge().GetValue()
			}
		case "batpak_http_request_duration_seconds":
			for _, m := range mf.GetMetric() {
				if !appendRoutes[label(m, "route")] {
					continue
				}
				h := m.GetHistogram()
				if c.bounds == nil {
					for _, b := range h.GetBucket() {
						c.bounds = append(c.bounds, b.GetUpperBound())
					}
					c.buckets = make([]float64, len(c.bounds))
				}
				for i, b := range h.GetBucket() {
					if i < len(c.buckets) {
						c.buckets[i] += float64(b.GetCumulativeCount())
					}
				}
				c.count += float64(h.GetSampleCount())
			}
		}
	}
	return c, subs
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// quantile estimates the q-quantile (in ms) of the observations between
// two cumulative bucket snapshots, at the upper bound of its bucket.
func quantile(q float64, bounds, prev, cur []float64, total float64) float64 {
	if total <= 0 || len(bounds) == 0 {
		return 0
	}
	want := q * total
	for i := range bounds {
		d := cur[i]
		if i < len(prev) {
			d -= prev[i]
		}
		if d >= want {
			return bounds[i] * 1000
		}
	}
	return bounds[len(bounds)-1] * 1000 // past the last bucket: at least this
}

func (s *sampler) sampleServer(now time.Time) {
	c, subs := s.gather()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.hasPrev {
		s.prev, s.hasPrev, s.prevAt = c, true, now
		return
	}
	p := s.prev
	dt := now.Sub(s.prevAt).Seconds()
	if dt <= 0 || dt > 10 {
		dt = 1
	}
	smp := ServerSample{Time: now, Subscriptions: subs,
		EventsPerSec:  math.Max(0, c.events-p.events) / dt,
		FsyncsPerSec:  math.Max(0, c.fsyncs-p.fsyncs) / dt,
		DenialsPerSec: math.Max(0, c.denials-p.denials) / dt,
		Appends:       math.Max(0, c.count-p.count),
	}
	if smp.Appends > 0 {
		prev := p.buckets
		if len(prev) != len(c.buckets) {
			prev = nil
		}
		smp.AppendP50Ms = quantile(0.5, c.bounds, prev, c.buckets, smp.Appends)
		smp.AppendP99Ms = quantile(0.99, c.bounds, prev, c.buckets, smp.Appends)
	}
	clear(s.perTen)
	for t, v := range c.byTenant {
		s.perTen[t] = math.Max(0, v-p.byTenant[t]) / dt
	}
	s.server.add(smp)
	s.prev, s.prevAt = c, now
}

func (s *sampler) sampleTenant(ctx context.Context, id string, now time.Time) {
	if s.tenants == nil {
		return
	}
	actx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	l, err := s.tenants.Acquire(actx, id)
	if err != nil {
		return
	}
	st := l.Store()
	u := st.Usage()
	wp := st.WriterPressure()
	l.Release()
	var denied uint64
	if s.policies != nil {
		denied = s.policies.DecisionCounts(id).Denied
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tr := s.tracks[id]
	if tr == nil {
		return
	}
	smp := TenantSample{Time: now, QueueLen: wp.QueueLen, QueueCap: wp.Capacity, Denied: denied,
		StorageBytes: u.Bytes, Events: u.GlobalSequence}
	syncNs := u.SyncTime.Nanoseconds()
	if tr.seen {
		dt := now.Sub(tr.last.Time).Seconds()
		if dt <= 0 {
			dt = 1
		}
		smp.EventsPerSec = float64(u.GlobalSequence-min(tr.last.Events, u.GlobalSequence)) / dt
		df := u.Fsyncs - min(tr.fsyncs, u.Fsyncs)
		smp.FsyncsPerSec = float64(df) / dt
		if df > 0 {
			smp.FsyncMs = float64(syncNs-tr.syncNs) / float64(df) / 1e6
		}
		smp.GroupCommits = float64(u.GroupCommits-min(tr.groups, u.GroupCommits)) / dt
		smp.DeniedPerSec = float64(denied-min(tr.last.Denied, denied)) / dt
		tr.samples.add(smp)
	}
	tr.last, tr.seen, tr.syncNs, tr.fsyncs, tr.groups = smp, true, syncNs, u.Fsyncs, u.GroupCommits
}

// watch marks tenant id as watched now (false when MaxWatchedTenants
// others are) and returns its samples, oldest first.
func (s *sampler) watch(id string) ([]TenantSample, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	tr := s.tracks[id]
	if tr == nil {
		if len(s.tracks) >= MaxWatchedTenants {
			return nil, false
		}
		tr = &tenantTrack{}
		s.tracks[id] = tr
	}
	tr.watched = now
	return tr.samples.all(), true
}

// serverSamples returns the server's samples, oldest first, and the last
// second's events/s of each tenant with a metric series of its own.
func (s *sampler) serverSamples() ([]ServerSample, map[string]float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	per := make(map[string]float64, len(s.perTen))
	for k, v := range s.perTen {
		per[k] = v
	}
	return s.server.all(), per
}
