package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/batpak-go/batpak/server/cluster"
	"github.com/batpak-go/batpak/server/control"
)

// Defaults of ClusterConfig.BlobGrace and BlobCollectEvery.
const (
	DefaultBlobGrace        = 10 * time.Minute
	DefaultBlobCollectEvery = 5 * time.Minute
)

// blobCollectGap is the least time between two collections a burst of
// control-plane changes asks for (each lists cluster/blobs/).
const blobCollectGap = time.Second

// blobCollector removes, on this cluster node, the blobs (tenant policy
// bundles, plugin modules: cluster/blobs/) the control plane no longer
// references: a deleted tenant's bundles and modules, a deleted plugin
// version's module, policy revisions the plane no longer keeps. It runs
// every ClusterConfig.BlobCollectEvery and soon after a change to a
// tenant's policy or plugins (or its deletion) is applied here
// (effects.apply wakes it), at most once per blobCollectGap. A blob is
// referenced when a live tenant's kept policy revision is its digest or a
// kept version of one of its plugins has its digest; an unreferenced one
// goes once its last put on this node is older than
// ClusterConfig.BlobGrace (cluster.Node.CollectBlobs: an upload puts the
// bytes one raft entry before the plane records the change that
// references them). Nothing is collected while the control plane is
// stale: stopped applying (Plane.Err), not caught up with the system
// store within a few seconds, the node halted (cluster.ErrHalted), the
// node knowing no leader, or its log holding entries it has not applied
// within a few seconds (a change recorded after a put may be waiting for
// a quorum for longer than the grace period).
type blobCollector struct {
	plane  *control.Plane
	node   *clusterNode
	logger *slog.Logger
	grace  time.Duration
	every  time.Duration

	wake chan struct{}
	stop chan struct{}
	done chan struct{}

	removed, removedBytes, temporary, skipped atomic.Uint64
	// missing is how many blobs the control plane references that this
	// node did not hold at the last collection; lastMissing is their
	// digests, joined (logged only when it changes). Both owned by run.
	missing     atomic.Int64
	lastMissing string
}

func newBlobCollector(plane *control.Plane, node *clusterNode, logger *slog.Logger, grace, every time.Duration) *blobCollector {
	return &blobCollector{plane: plane, node: node, logger: logger, grace: grace, every: every,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// poke asks for a collection soon (cheap; never blocks).
func (g *blobCollector) poke() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// run collects every g.every and when poked, until close.
func (g *blobCollector) run() {
	defer close(g.done)
	t := time.NewTicker(g.every)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		case <-g.wake:
		}
		g.collect()
		select {
		case <-g.stop:
			return
		case <-time.After(blobCollectGap):
		}
	}
}

// errPlaneStale: a collection skipped because the control plane may not
// name every blob still referenced.
var errPlaneStale = errors.New("the control plane is not caught up")

// errNoLeader and errLogPending: why a node's state may not be final
// (see collectOnce).
var (
	errNoLeader   = errors.New("this node knows no leader: an entry of its log may yet be committed")
	errLogPending = errors.New("entries of this node's log are not applied yet (no quorum?)")
)

// collect runs one collection and logs what it removed (or why it
// skipped).
func (g *blobCollector) collect() {
	got, err := g.collectOnce()
	if err != nil {
		g.skipped.Add(1)
		g.logger.Warn("cluster: blob collection skipped", "err", err)
		return
	}
	g.removed.Add(uint64(len(got.Removed)))
	g.removedBytes.Add(uint64(got.RemovedBytes))
	g.temporary.Add(uint64(got.Temporary))
	if len(got.Removed) > 0 || got.Temporary > 0 {
		shown := got.Removed[:min(len(got.Removed), 8)]
		g.logger.Info("cluster: removed blobs no longer referenced", "blobs", len(got.Removed), "temporary_files", got.Temporary,
			"bytes", got.RemovedBytes, "kept", got.Kept, "digests", strings.Join(shown, ","))
	}
}

// collectOnce checks that the plane is current, computes the referenced
// set and collects.
func (g *blobCollector) collectOnce() (cluster.BlobCollection, error) {
	if err := g.plane.Err(); err != nil {
		return cluster.BlobCollection{}, errors.Join(errPlaneStale, err)
	}
	// An entry in this node's log not applied yet may be the change that
	// references a blob put long ago (its commit stalled: no quorum), and
	// a node that knows no leader may receive such an entry from the next
	// one: collect only from a state that applied every entry the log
	// holds, while a leader is known.
	st := g.node.n.Status()
	if st.Leader.ID == "" {
		return cluster.BlobCollection{}, errors.Join(errPlaneStale, errNoLeader)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for g.node.n.Status().AppliedIndex < st.LastLogIndex {
		select {
		case <-ctx.Done():
			return cluster.BlobCollection{}, errors.Join(errPlaneStale, fmt.Errorf("%w: log index %d, applied %d", errLogPending, st.LastLogIndex, g.node.n.Status().AppliedIndex))
		case <-time.After(20 * time.Millisecond):
		}
	}
	err := g.plane.WaitApplied(ctx, g.node.sys.Usage().GlobalSequence)
	if err != nil {
		return cluster.BlobCollection{}, errors.Join(errPlaneStale, err)
	}
	refs := referencedBlobs(g.plane)
	got, err := g.node.n.CollectBlobs(func(d string) bool { return refs[d] != "" }, g.grace)
	if err == nil {
		g.checkMissing(refs)
	}
	return got, err
}

// checkMissing counts the referenced blobs this node does not hold (a
// tenant's policy or plugin version that cannot load here: restored from
// a snapshot without them, removed by hand, lost with a disk) for
// /metrics, and logs them as an error whenever the set changes (not at
// every collection: a burst of changes asks for one a second).
func (g *blobCollector) checkMissing(refs map[string]string) {
	var missing []string
	for _, d := range slices.Sorted(maps.Keys(refs)) {
		if ok, err := g.node.n.HasBlob(d); err == nil && !ok {
			missing = append(missing, d+" ("+refs[d]+")")
		}
	}
	g.missing.Store(int64(len(missing)))
	key := strings.Join(missing, ",")
	if key == g.lastMissing {
		return
	}
	g.lastMissing = key
	if len(missing) == 0 {
		g.logger.Info("cluster: every blob the control plane references is held again")
		return
	}
	g.logger.Error("cluster: blobs the control plane references are missing on this node: those policies and plugin versions do not load here until the same bundle or module is uploaded again",
		"blobs", len(missing), "missing", strings.Join(missing[:min(len(missing), 8)], ", "))
}

// referencedBlobs is every digest the plane names, each with what names
// it (the first found, for the operator): each live tenant's kept policy
// revisions (and active one) and its plugins' kept versions' modules.
func referencedBlobs(p *control.Plane) map[string]string {
	refs := map[string]string{}
	ref := func(d, what string) {
		if refs[d] == "" {
			refs[d] = what
		}
	}
	for _, t := range p.Tenants() {
		tp := p.Policy(t.ID)
		if tp.Active != "" {
			ref(tp.Active, "tenant "+t.ID+"'s active policy")
		}
		for _, r := range tp.Revisions {
			ref(r.Revision, "tenant "+t.ID+"'s policy revision")
		}
		for _, pl := range p.Plugins(t.ID) {
			for _, v := range pl.Versions {
				ref(v.Digest, "tenant "+t.ID+"'s plugin "+pl.Name+" "+v.Version)
			}
		}
	}
	return refs
}

// close stops the loop (a collection under way finishes first).
func (g *blobCollector) close() {
	select {
	case <-g.stop:
		return
	default:
	}
	close(g.stop)
	<-g.done
}

// metrics are the collector's counters for /metrics.
func (g *blobCollector) metrics() []prometheus.Collector {
	counter := func(name, help string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) })
	}
	return []prometheus.Collector{
		counter("batpak_cluster_blobs_collected_total", "Blobs (policy bundles, plugin modules) this node removed because the control plane no longer references them.", &g.removed),
		counter("batpak_cluster_blob_bytes_collected_total", "Bytes of the blobs and temporary files this node's blob collections removed.", &g.removedBytes),
		counter("batpak_cluster_blob_temporary_files_collected_total", "Temporary files of blob writes a crash cut short that this node removed.", &g.temporary),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "batpak_cluster_blobs_missing",
			Help: "Blobs (policy bundles, plugin modules) the control plane references that this node did not hold at its last blob collection: those revisions and versions cannot load here."},
			func() float64 { return float64(g.missing.Load()) }),
		counter("batpak_cluster_blob_collections_skipped_total", "Blob collections skipped because this node's control plane was not caught up (or the node halted).", &g.skipped),
	}
}
