package httpapi

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/batpak-go/batpak/server/tenancy"
)

// metrics are the API's Prometheus series (see the package doc).
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	appendReqs   prometheus.Counter
	events       *prometheus.CounterVec
	fsyncs       prometheus.Counter
	queueDepth   prometheus.Histogram
	denials      prometheus.Counter
	quotaRejects *prometheus.CounterVec
	// sourceRefusals counts requests refused for their source's rate
	// (Options.Sources).
	sourceRefusals prometheus.Counter
	subscriptions  prometheus.Gauge
	disconnects    *prometheus.CounterVec
	panics         prometheus.Counter

	labels tenantLabels

	// observers caches the curried series of each route and status, so a
	// request costs no label hashing.
	observers sync.Map // routeStatus -> *routeSeries
	// eventCounters caches the events series of tenants with a label of
	// their own (at most TenantSeries of them).
	eventCounters sync.Map // tenant id -> prometheus.Counter

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
		sourceRefusals: prometheus.NewCounter(prometheus.CounterOpts{Name: "batpak_anonymous_requests_refused_total",
			Help: "Requests no tenant is charged for (no valid credential, routes that read none) refused past their source's server.anonymous_requests_per_second."}),
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
		m.quotaRejects, m.sourceRefusals, m.subscriptions, m.disconnects, m.panics)
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
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "batpak_tenant_store_reopens_total",
			Help: "Tenant stores closed and opened again because their writer had stopped after a failed write (a full disk, an I/O error)."},
			func() float64 { return float64(reg2.Stats().Reopens) }))
	}
	return m
}

type routeStatus struct {
	route  string
	status int
}

type routeSeries struct {
	requests prometheus.Counter
	latency  prometheus.Observer
}

func (m *metrics) observeRequest(route string, status int, d time.Duration) {
	k := routeStatus{route, status}
	v, ok := m.observers.Load(k)
	if !ok {
		// Routes are the registered patterns (and "unmatched"), statuses
		// a few dozen: the cache is bounded like the series themselves.
		v, _ = m.observers.LoadOrStore(k, &routeSeries{
			requests: m.requests.WithLabelValues(route, strconv.Itoa(status)),
			latency:  m.latency.WithLabelValues(route),
		})
	}
	rs := v.(*routeSeries)
	rs.requests.Inc()
	rs.latency.Observe(d.Seconds())
}

func (m *metrics) appended(tenant string, n int) {
	if n <= 0 {
		return
	}
	m.appendReqs.Inc()
	m.eventsCounter(tenant).Add(float64(n))
	m.mu.Lock()
	m.evTotal += float64(n)
	m.mu.Unlock()
}

func (m *metrics) eventsCounter(tenant string) prometheus.Counter {
	if c, ok := m.eventCounters.Load(tenant); ok {
		return c.(prometheus.Counter)
	}
	l := m.labels.label(tenant)
	c := m.events.WithLabelValues(l)
	if l == tenant {
		m.eventCounters.Store(tenant, c)
	}
	return c
}

// noteFsyncs adds the fsyncs a tenant's store made since last seen
// (fsyncs is the store's counter).
func (m *metrics) noteFsyncs(tenant string, fsyncs uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	last := m.lastFsync[tenant]
	if fsyncs < last {
		last = 0 // the store was closed and opened again: its count restarted
	}
	m.lastFsync[tenant] = fsyncs
	if fsyncs > last {
		d := float64(fsyncs - last)
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
