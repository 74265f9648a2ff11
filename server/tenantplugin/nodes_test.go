package tenantplugin_test

import (
	"slices"
	"testing"

	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/tenantplugin"
)

// A cluster-wide status sums the answered nodes' counters, is quarantined
// when any answered node holds the plugin in quarantine and loaded when
// every answered node runs it; a node with an error counts for nothing
// but is listed, with empty lists.
func TestGather(t *testing.T) {
	own := tenantplugin.Status{TenantPlugin: control.TenantPlugin{Name: "p", Active: "2"}, Node: "n1", Loaded: true,
		Stats: tenantplugin.Stats{Requests: 3, Faults: 1}}
	cs := tenantplugin.Gather(own, []tenantplugin.NodeStatus{
		{Node: "n2", Loaded: true, Quarantined: true, Stats: tenantplugin.Stats{Requests: 4, Faults: 2}},
		{Node: "n3", Error: "unreachable"},
	})
	if cs.Name != "p" || cs.Answered != 2 || cs.Unanswered != 1 || !cs.Quarantined || !cs.Loaded || cs.Stats.Requests != 7 || cs.Stats.Faults != 3 {
		t.Fatalf("%+v", cs)
	}
	if len(cs.Nodes) != 3 || cs.Nodes[0].Node != "n1" || cs.Nodes[0].Active != "2" || cs.Nodes[2].Faults == nil || cs.Nodes[2].Logs == nil {
		t.Fatalf("parts %+v", cs.Nodes)
	}
	if cs := tenantplugin.Gather(own, []tenantplugin.NodeStatus{{Node: "n2", Loaded: false, LoadError: "no module"}}); cs.Loaded || cs.Quarantined {
		t.Fatalf("a node not running it: %+v", cs)
	}
}

// A cluster-wide list takes its plugins from the asked node's list and
// names, for each, the answered nodes that hold it in quarantine and
// those that do not run it (a node that does not list it has not applied
// its upload yet).
func TestGatherList(t *testing.T) {
	own := []tenantplugin.Summary{{Name: "a", Loaded: true}, {Name: "b", Loaded: true}}
	cl := tenantplugin.GatherList("n1", own, []tenantplugin.NodeList{
		{Node: "n2", Plugins: []tenantplugin.Summary{{Name: "a", Loaded: true, Quarantined: true}}},
		{Node: "n3", Error: "unreachable"},
	})
	if cl.Answered != 2 || cl.Unanswered != 1 || len(cl.Nodes) != 3 || len(cl.Plugins) != 2 {
		t.Fatalf("%+v", cl)
	}
	a, b := cl.Plugins[0], cl.Plugins[1]
	if !a.Quarantined || !a.Loaded || !slices.Equal(a.QuarantinedOn, []string{"n2"}) || len(a.NotLoadedOn) != 0 {
		t.Fatalf("a: %+v", a)
	}
	if b.Quarantined || b.Loaded || !slices.Equal(b.NotLoadedOn, []string{"n2"}) {
		t.Fatalf("b, not listed by n2: %+v", b)
	}
}
