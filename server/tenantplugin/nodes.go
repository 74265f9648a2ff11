package tenantplugin

import (
	"slices"

	"github.com/batpak-go/batpak/server/control"
)

// NodeStatus is one cluster node's part of a plugin's status: the
// version its control plane has active and what it runs, has counted
// and has kept (each node counts its own).
type NodeStatus struct {
	Node string `json:"node"`
	// Error says why the node's part is missing (it could not be asked,
	// did not answer in time, or refused); the fields below are then
	// zero (Faults and Logs empty).
	Error       string    `json:"error,omitempty"`
	Active      string    `json:"active,omitempty"` // the version active in the node's control plane
	Loaded      bool      `json:"loaded"`
	LoadError   string    `json:"load_error,omitempty"`
	Digest      string    `json:"digest,omitempty"`
	Quarantined bool      `json:"quarantined"`
	Stats       Stats     `json:"stats"`
	Faults      []Fault   `json:"faults"`
	Logs        []LogLine `json:"logs"`
}

// Part is the node's part of a cluster-wide status.
func (s Status) Part() NodeStatus {
	return NodeStatus{Node: s.Node, Active: s.Active, Loaded: s.Loaded, LoadError: s.LoadError, Digest: s.Digest,
		Quarantined: s.Quarantined, Stats: s.Stats, Faults: s.Faults, Logs: s.Logs}
}

// ClusterStatus is a plugin's status on every node of a cluster: the
// control plane's record of it (as the asked node holds it), the
// tenant's limits, each node's part, and the counters summed over the
// nodes that answered.
type ClusterStatus struct {
	control.TenantPlugin
	Limits Limits `json:"limits"`
	// Stats are the sums of the answered nodes' counters.
	Stats Stats `json:"stats"`
	// Quarantined: at least one answered node holds the plugin in
	// quarantine. Loaded: every answered node runs it.
	Quarantined bool `json:"quarantined"`
	Loaded      bool `json:"loaded"`
	// Answered counts the nodes whose part is here; Unanswered those
	// with an Error instead.
	Answered   int          `json:"answered"`
	Unanswered int          `json:"unanswered"`
	Nodes      []NodeStatus `json:"nodes"`
}

// Gather makes the cluster-wide status from the asked node's own status
// and the other nodes' parts, in the order given.
func Gather(own Status, others []NodeStatus) ClusterStatus {
	cs := ClusterStatus{TenantPlugin: own.TenantPlugin, Limits: own.Limits, Loaded: true,
		Nodes: append([]NodeStatus{own.Part()}, others...)}
	for i, n := range cs.Nodes {
		if n.Faults == nil {
			cs.Nodes[i].Faults = []Fault{}
		}
		if n.Logs == nil {
			cs.Nodes[i].Logs = []LogLine{}
		}
		if n.Error != "" {
			cs.Unanswered++
			continue
		}
		cs.Answered++
		cs.Quarantined = cs.Quarantined || n.Quarantined
		cs.Loaded = cs.Loaded && n.Loaded
		cs.Stats.add(n.Stats)
	}
	return cs
}

func (s *Stats) add(o Stats) {
	s.Requests += o.Requests
	s.Calls += o.Calls
	s.CallSeconds += o.CallSeconds
	s.Faults += o.Faults
	s.LogLines += o.LogLines
	s.LogBytes += o.LogBytes
	s.DroppedLogLines += o.DroppedLogLines
	s.DroppedLogBytes += o.DroppedLogBytes
}

// Node is the cluster node this manager runs on (Options.Node; "" on a
// single server).
func (m *Manager) Node() string { return m.opts.Node }

// NodeList is one cluster node's list of a tenant's plugins, or why it is
// missing (Error; Plugins then empty).
type NodeList struct {
	Node    string    `json:"node"`
	Error   string    `json:"error,omitempty"`
	Plugins []Summary `json:"-"`
}

// ClusterSummary is one plugin in a tenant's list across a cluster: the
// asked node's summary, with Loaded true when every answered node runs
// it and Quarantined when any holds it in quarantine, naming those.
type ClusterSummary struct {
	Summary
	QuarantinedOn []string `json:"quarantined_on"`
	NotLoadedOn   []string `json:"not_loaded_on"`
}

// ClusterList is a tenant's plugins across a cluster (GatherList).
type ClusterList struct {
	Plugins    []ClusterSummary `json:"plugins"`
	Nodes      []NodeList       `json:"nodes"` // the asked node first
	Answered   int              `json:"answered"`
	Unanswered int              `json:"unanswered"`
}

// GatherList makes a tenant's plugin list across a cluster from the
// asked node's list (own, of node self: its control plane names the
// plugins) and the other nodes' lists, in the order given. A plugin a
// node that answered does not list (it has not applied the upload yet)
// is not loaded there.
func GatherList(self string, own []Summary, others []NodeList) ClusterList {
	cl := ClusterList{Plugins: make([]ClusterSummary, 0, len(own)),
		Nodes: append([]NodeList{{Node: self, Plugins: own}}, others...)}
	for _, s := range own {
		cs := ClusterSummary{Summary: s, QuarantinedOn: []string{}, NotLoadedOn: []string{}}
		cs.Loaded, cs.Quarantined = true, false
		for _, n := range cl.Nodes {
			if n.Error != "" {
				continue
			}
			i := slices.IndexFunc(n.Plugins, func(p Summary) bool { return p.Name == s.Name })
			switch {
			case i < 0 || !n.Plugins[i].Loaded:
				cs.Loaded = false
				cs.NotLoadedOn = append(cs.NotLoadedOn, n.Node)
			case n.Plugins[i].Quarantined:
				cs.Quarantined = true
				cs.QuarantinedOn = append(cs.QuarantinedOn, n.Node)
			}
		}
		cl.Plugins = append(cl.Plugins, cs)
	}
	for _, n := range cl.Nodes {
		if n.Error != "" {
			cl.Unanswered++
		} else {
			cl.Answered++
		}
	}
	return cl
}
