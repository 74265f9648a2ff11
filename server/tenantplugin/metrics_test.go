package tenantplugin_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/batpak-go/batpak/server/control"
)

// TestCallMetrics: /metrics shows the plugin calls running and the
// projections in flight while a projection spins, and none once it has
// returned, so a slot that never came back would show.
func TestCallMetrics(t *testing.T) {
	ctx, store, m := runningHost(t, control.Quotas{}, "acme")
	pushProjection(ctx, t, m, "acme", "spin", "loop", 300*time.Millisecond)
	gauges := map[string]prometheus.Collector{}
	for _, c := range m.Metrics() {
		ch := make(chan *prometheus.Desc, 1)
		c.Describe(ch)
		d := (<-ch).String()
		for _, name := range []string{"batpak_plugin_calls_running", "batpak_plugin_calls_waiting", "batpak_projections_in_flight", "batpak_projections_waiting"} {
			if containsName(d, name) {
				gauges[name] = c
			}
		}
	}
	if len(gauges) != 4 {
		t.Fatalf("Metrics has %d of the 4 call gauges", len(gauges))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = m.Project(ctx, store, "acme", "spin", "order:1")
	}()
	deadline := time.Now().Add(5 * time.Second)
	for gaugeValue(gauges["batpak_plugin_calls_running"]) != 1 || gaugeValue(gauges["batpak_projections_in_flight"]) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("a spinning projection never showed as running and in flight")
		}
		time.Sleep(5 * time.Millisecond)
	}
	<-done
	for name, g := range gauges {
		if v := gaugeValue(g); v != 0 {
			t.Errorf("%s = %v after the call returned, want 0", name, v)
		}
	}
}

// containsName reports whether a metric description names name.
func containsName(desc, name string) bool {
	return strings.Contains(desc, `fqName: "`+name+`"`)
}

// gaugeValue is the value a one-gauge collector reports now.
func gaugeValue(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	_ = (<-ch).Write(&m)
	return m.GetGauge().GetValue()
}
