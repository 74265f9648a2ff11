package tenantplugin

import "github.com/batpak-go/batpak/server/control"

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
