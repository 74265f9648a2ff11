package httpapi

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/tenancy"
)

// metrics are the API's Prometheus series (see the package doc).
type metrics struct {
	reg           *prometheus.Registry
	requests      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	appendReqs    prometheus.Counter
	events        *prometheus.CounterVec
	fsyncs        prometheus.Counter
	queueDepth    prometheus.Histogram
	denials       prometheus.Counter
	quotaRejects  *prometheus.CounterVec
	subscriptions prometheus.Gauge
	disconnects   *prometheus.CounterVec
	panics        prometheus.Counter

	labels tenantLabels

	mu        sync.Mutex
	lastFsync map[string]uint64 // per tenant, the store's Fsyncs last seen
	evTotal   float64
	fsTotal   float64
}

// tenantLabels bounds per-tenant series: the first cap tenants seen keep
// their own label, later ones are "other".
type tenantLabels struct {
	mu   sync.Mutex
	cap  int
	seen map[string]struct{}
}

func (t *tenantLabels) label(id string) string {
	if id == "" {
		return "none"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.seen[id]; ok {
		return id
	}
	if len(t.seen) < t.cap {
		t.seen[id] = struct{}{}
		return id
	}
	return "other"
}

func newMetrics(reg *prometheus.Registry, tenantCap int, reg2 *tenancy.Registry) *metrics {
	m := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "batpak_http_requests_total",
			Help: "HTTP requests by route pattern and status code."}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "batpak_http_request_duration_seconds",
			Help: "HTTP request latency by route pattern.", Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14)}, []string{"route"}),
		appendReqs: prometheus.NewCounter(prometheus.CounterOpts{Name: "batpak_append_requests_total",
			Help: "Successful append and batch requests."}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "batpak_events_appended_total",
			Help: "Events written (appends, batch items, imports) by tenant (bounded: see tenant=\"other\")."}, []string{"tenant"}),
		fsyncs: prometheus.NewCounter(prometheus.CounterOpts{Name: "batpak_fsyncs_total",
			Help: "fsyncs of tenant stores, as seen by writes (core Stats)."}),
		queueDepth: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "batpak_writer_queue_depth",
			Help: "Writes waiting in the tenant's writer mailbox when a write was submitted.", Buckets: []float64{0, 1, 4, 16, 64, 256, 1024, 4096}}),
		denials: prometheus.NewCounter(prometheus.CounterOpts{Name: "batpak_policy_denials_total",
			Help: "Writes refused by the platform policy."}),
		quotaRejects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "batpak_quota_rejections_total",
			Help: "Requests refused by a quota, by quota and tenant (bounded)."}, []string{"quota", "tenant"}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "batpak_subscriptions",
			Help: "Event streams (SSE) open now."}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "batpak_subscription_disconnects_total",
			Help: "Event streams ended, by reason (client, cutoff, shutdown)."}, []string{"reason"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{Name: "batpak_http_panics_total",
			Help: "Handler panics turned into 500 responses."}),
		labels:    tenantLabels{cap: tenantCap, seen: map[string]struct{}{}},
		lastFsync: map[string]uint64{},
	}
	reg.MustRegister(m.requests, m.latency, m.appendReqs, m.events, m.fsyncs, m.queueDepth, m.denials,
		m.quotaRejects, m.subscriptions, m.disconnects, m.panics)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "batpak_events_per_fsync",
		Help: "Events appended per fsync since start (group commit)."}, func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.fsTotal == 0 {
			return 0
		}
		return m.evTotal / m.fsTotal
	}))
	if reg2 != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "batpak_open_tenants",
			Help: "Tenant stores open now."}, func() float64 { return float64(reg2.OpenCount()) }))
	}
	return m
}

func (m *metrics) observeRequest(route string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}

func (m *metrics) appended(tenant string, n int) {
	if n <= 0 {
		return
	}
	m.appendReqs.Inc()
	m.events.WithLabelValues(m.labels.label(tenant)).Add(float64(n))
	m.mu.Lock()
	m.evTotal += float64(n)
	m.mu.Unlock()
}

// noteStats adds the fsyncs a tenant's store made since last seen.
func (m *metrics) noteStats(tenant string, st core.Stats) {
	m.mu.Lock()
	defer m.mu.Unlock()
	last := m.lastFsync[tenant]
	if st.Fsyncs < last {
		last = 0 // the store was closed and opened again: its count restarted
	}
	m.lastFsync[tenant] = st.Fsyncs
	if st.Fsyncs > last {
		d := float64(st.Fsyncs - last)
		m.fsTotal += d
		m.fsyncs.Add(d)
	}
}

func (m *metrics) quotaRejection(q, tenant string) {
	m.quotaRejects.WithLabelValues(q, m.labels.label(tenant)).Inc()
}

func (a *API) serveMetrics(c *call) error {
	promhttp.HandlerFor(a.opts.Registry, promhttp.HandlerOpts{}).ServeHTTP(c.w, c.r)
	return nil
}
