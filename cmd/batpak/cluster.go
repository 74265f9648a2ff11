package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/sdk/client"
)

// newClusterCmd is `batpak cluster status|join|leave` against a node of a
// replicated cluster (operator credential).
func newClusterCmd(a *app) *cobra.Command {
	var out outputFlags
	cmd := &cobra.Command{
		Use:     "cluster",
		Short:   "Show a replicated cluster's members, add and remove nodes (operator credential)",
		GroupID: "admin",
		Long: `Manage the members of a cluster of batpak serve --cluster nodes: --server URL
(any node) and --token with the operator credential (BATPAK_SERVER,
BATPAK_TOKEN). join and leave are served by the leader: a follower sends
them there.

A node started with --cluster-join adds itself; join is for adding a node
by hand (for instance one restarted with an empty data directory after
leave).`,
	}
	show := func(cmd *cobra.Command, st client.ClusterStatus) error {
		f, err := out.format()
		if err != nil {
			return err
		}
		return emit(cmd.OutOrStdout(), f, st, func(w io.Writer) error {
			fmt.Fprintf(w, "node %s: %s, term %d, applied %d of %d\n", oneLine(st.ID), st.State, st.Term, st.AppliedIndex, st.CommitIndex)
			if st.Halted != "" {
				fmt.Fprintf(w, "HALTED: %s\n", oneLine(st.Halted))
			}
			if st.Removed {
				fmt.Fprintf(w, "REMOVED: node %s is no longer a member of the cluster; it serves no tenant request. Ask a member below (--server) for the cluster's state; to use this node again, empty its data directory and join it\n", oneLine(st.ID))
			}
			showReplicaCheck(w, st.ReplicaCheck)
			return showMembers(w, st)
		})
	}
	var local bool
	status := &cobra.Command{
		Use: "status", Short: "The cluster's state, leader and members, with every member's health", Args: noArgs,
		Long: `status shows the answering node's view of the cluster — its state, term,
applied and committed entries, the leader's replica check — and its
members. The node asks every other member for its own view (at most 5 s
each) and judges each one's health: it answered, is not halted, follows
the leader in the leader's term, heard from it within 2 s, has caught up
with it since it started, and has applied all but at most 256 of the
entries the leader committed. A member that cannot be reached is shown
with the reason. The last line says how many voting members may still
fail with a quorum left.

--local shows the answering node's view only, asking no other member.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rc, err := a.needServer("cluster status")
			if err != nil {
				return err
			}
			ask := rc.c.Cluster().StatusAllNodes
			if local {
				ask = rc.c.Cluster().Status
			}
			st, err := ask(cmd.Context())
			if err != nil {
				return remoteError(err)
			}
			if err := show(cmd, st); err != nil || !st.Removed {
				return err
			}
			return withExitCode(exitUnavailable, fmt.Errorf("node %s was removed from the cluster: ask a member", oneLine(st.ID)))
		},
	}
	status.Flags().BoolVar(&local, "local", false, "the answering node's view only, without asking the other members")
	var url string
	var replace, joinForce bool
	join := &cobra.Command{
		Use: "join ID RAFT-ADDRESS [--url API-URL] [--force]", Short: "Add a node as a voting member", Args: exactArgs("ID", "RAFT-ADDRESS"),
		Long: `join adds a node as a voting member. It counts towards every quorum at
once, before it has caught up, so the leader refuses (409) a join after
which the voting members, the new one not counted, would have no majority
able to store new entries (judged as for leave: see batpak cluster leave
--help) — with a member down, 3 voters becoming 4 need 3, the new one
among them. The refusal names the members: start or repair them, or
remove those gone for good, then join. A cluster of one voter adding its
second is not refused.

--force joins all the same. It is dangerous: the cluster then takes no
write until the new node has caught up (or the members named are back),
and if it never does — a wrong address, a node that does not speak raft —
the cluster is lost.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := a.needServer("cluster join")
			if err != nil {
				return err
			}
			add := rc.c.Cluster().AddNode
			if joinForce {
				add = rc.c.Cluster().ForceAddNode
			}
			st, err := add(cmd.Context(), args[0], args[1], url, replace)
			if err != nil {
				return remoteError(err)
			}
			return show(cmd, st)
		},
	}
	join.Flags().StringVar(&url, "url", "", "the node's API URL, named in redirects while it leads")
	join.Flags().BoolVar(&replace, "replace", false, "replace the member holding this id or address (it is removed first)")
	join.Flags().BoolVar(&joinForce, "force", false, "join even if the cluster would be left without a quorum until the node has caught up (dangerous: see --help)")
	var force bool
	leave := &cobra.Command{
		Use: "leave ID [--force]", Short: "Remove a member from the cluster", Args: exactArgs("ID"),
		Long: `leave removes a member from the cluster. The leader refuses (409) a removal
that would leave the cluster without a quorum: one after which fewer than a
majority of the voting members that remain stored the entry the leader
wrote to probe them within two heartbeat timeouts (2 s by default): the
refusal names those not heard from and those behind (unable to write their
log, or catching up): start or repair them, then retry; or, if they are
gone for good, remove them first (removing a member that is down keeps
the quorum).

--force removes the member all the same. It is dangerous: if the members
that remain cannot form a majority, the removal never commits, the cluster
takes no write until enough of them are back, and if they never come back
the cluster is lost (see the README, "When a quorum is lost for good").
Use it only when you know the members the refusal names are alive: the
check judged them by 2 s of silence or lag.

When the leader loses its leadership before the removal is known to commit,
or it has not committed within 10 s (exit status 8), the removal may or may not have taken effect: run
batpak cluster status once a leader is elected.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			rc, err := a.needServer("cluster leave")
			if err != nil {
				return err
			}
			remove := rc.c.Cluster().RemoveNode
			if force {
				remove = rc.c.Cluster().ForceRemoveNode
			}
			if err := remove(cmd.Context(), args[0]); err != nil {
				var ou *client.OutcomeUnknownError
				if errors.As(err, &ou) {
					return withExitCode(exitUnavailable, &detailError{err: err,
						msg: remoteError(ou.Err).Error() + "; the removal may or may not have taken effect: run batpak cluster status once a leader is elected"})
				}
				return remoteError(err)
			}
			gone := struct {
				ID      string `json:"id"`
				Removed bool   `json:"removed"`
			}{args[0], true}
			return emit(cmd.OutOrStdout(), f, gone, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "removed node %s\n", oneLine(args[0]))
				return err
			})
		},
	}
	leave.Flags().BoolVar(&force, "force", false, "remove it even if the cluster would be left without a quorum (dangerous: see --help)")
	check := &cobra.Command{
		Use:   "check [TENANT...]",
		Short: "Compare every node's copy of each tenant's events and of the control plane (default: all)",
		Long: `check asks the leader for a digest of each tenant's events (SHA-256 over
their sequences and chain hashes), then every other member for its digest
of the same events, and prints one line per tenant and node. Members are
reached at the API URLs the cluster records (batpak cluster status), with
the operator credential: a plain-http URL is not asked when --server is
https. With no TENANT, --tenant (BATPAK_TENANT) names the one to check, or
else every tenant is, and first the control plane's store (tenants, keys,
quotas, cursors: "(control plane)"). The leader also runs this check by
itself every cluster.replica_check_every (see batpak cluster status). Exit 0 when every node answered with the leader's
digest; 7 when any
copy differs or its node cannot read it (that replica holds other events
than the leader: restore it, see the README); 8 when a node could not be
asked (one that fails is not asked again for the other tenants); 5 when
a tenant named is not on the leader (the others are still compared).`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			rc, err := a.needServer("cluster check")
			if err != nil {
				return err
			}
			rep, err := checkReplicas(cmd.Context(), rc, args)
			if err != nil {
				return err
			}
			if err := emit(cmd.OutOrStdout(), f, rep, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "TENANT\tNODE\tEVENTS\tDIGEST\tRESULT")
				if len(rep.Nodes) == 0 {
					fmt.Fprintln(w, "no tenants to check")
					return nil
				}
				for _, r := range rep.Nodes {
					d := r.Digest
					if len(d) > 16 {
						d = d[:16]
					}
					events := strconv.FormatUint(r.Events, 10)
					if !r.compared() {
						events, d = "-", "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", oneLine(r.Tenant), oneLine(r.Node), events, d, oneLine(r.Result))
				}
				return tw.Flush()
			}); err != nil {
				return err
			}
			return rep.err()
		},
	}
	out.registerPersistent(cmd)
	cmd.AddCommand(status, join, leave, check)
	return cmd
}

// replicaCheck is the report of batpak cluster check.
type replicaCheck struct {
	Nodes []replicaResult `json:"nodes"`
	// Differ counts the copies that differ from the leader's (or that
	// their node could not read); Unasked those that could not be
	// compared; Missing the tenants the leader does not hold.
	Differ  int `json:"differ"`
	Unasked int `json:"unasked"`
	Missing int `json:"missing"`
}

// replicaResult is one node's answer for one tenant.
type replicaResult struct {
	Tenant string `json:"tenant"`
	Node   string `json:"node"`
	Upto   uint64 `json:"upto"`
	Events uint64 `json:"events"`
	Digest string `json:"digest,omitempty"`
	// Result is "leader" (the reference), "same", "DIFFERENT",
	// "DAMAGED: why", "no such tenant" or why the node was not asked.
	Result string `json:"result"`
}

// compared reports whether the row holds a digest the node answered
// (the leader's, or one compared with it).
func (r replicaResult) compared() bool {
	return r.Result == "leader" || r.Result == "same" || r.Result == "DIFFERENT"
}

// err is the check's outcome: every kind of failure it met, in one
// message, with the exit code of the gravest (a copy that differs, then
// one that could not be compared, then a tenant not on the leader).
func (r replicaCheck) err() error {
	var parts []string
	code := 0
	if r.Differ > 0 {
		parts = append(parts, plural(r.Differ, "copy differs", "copies differ")+" from the leader's (those replicas hold other events than the leader, or cannot read theirs: take them out and restore them, README, Cluster)")
		code = exitCorrupt
	}
	if r.Unasked > 0 {
		parts = append(parts, plural(r.Unasked, "copy", "copies")+" could not be compared")
		code = cmp.Or(code, exitUnavailable)
	}
	if r.Missing > 0 {
		parts = append(parts, plural(r.Missing, "tenant is", "tenants are")+" not on the leader")
		code = cmp.Or(code, exitNotFound)
	}
	if code == 0 {
		return nil
	}
	return withExitCode(code, errors.New(strings.Join(parts, "; ")))
}

// checkReplicas compares every member's digest of each tenant's events
// with the leader's (see batpak cluster check). A member that fails once
// is not asked again for the other tenants.
func checkReplicas(ctx context.Context, rc *remoteConf, tenants []string) (replicaCheck, error) {
	rep := replicaCheck{Nodes: []replicaResult{}}
	st, err := rc.c.Cluster().Status(ctx)
	if err != nil {
		return rep, remoteError(err)
	}
	var leader client.ClusterMember
	for _, m := range st.Members {
		if m.Leader {
			leader = m
		}
	}
	if leader.ID == "" || leader.URL == "" {
		return rep, withExitCode(exitUnavailable, errors.New("the cluster has no leader with a known URL right now; retry"))
	}
	secure := isHTTPS(rc.server)
	nodes := map[string]*client.Client{}
	unasked := map[string]string{}
	opts := rc.opts
	opts.MaxRetries = 1 // a member that does not answer costs one retry, once
	for _, m := range st.Members {
		switch {
		case m.URL == "":
			unasked[m.ID] = "not asked: its API URL is not recorded"
		case secure && !isHTTPS(m.URL):
			unasked[m.ID] = "not asked: its URL is plain http and --server is https"
		default:
			c, err := client.New(m.URL, rc.token, opts)
			if err != nil {
				unasked[m.ID] = "not asked: " + err.Error()
				continue
			}
			nodes[m.ID] = c
		}
	}
	if len(tenants) == 0 && rc.tenant != "" {
		tenants = []string{rc.tenant}
	}
	if len(tenants) == 0 {
		// Every tenant, and first the control plane every node's API
		// trusts (keys, quotas, tenants).
		list, err := rc.c.Admin().Tenants(ctx)
		if err != nil {
			return rep, remoteError(err)
		}
		tenants = append(tenants, client.ControlPlane)
		for _, t := range list {
			tenants = append(tenants, t.ID)
		}
	}
	lc, ok := nodes[leader.ID]
	if !ok {
		return rep, withExitCode(exitUnavailable, fmt.Errorf("the leader %s: %s", leader.ID, unasked[leader.ID]))
	}
	for _, t := range tenants {
		ref, err := lc.Cluster().Digest(ctx, t)
		switch {
		case errors.Is(err, client.ErrNotFound) && t == client.ControlPlane:
			// A leader of a version before the control plane's digest
			// (a rolling upgrade): nothing to compare it with.
			rep.Nodes = append(rep.Nodes, replicaResult{Tenant: t, Node: leader.ID, Result: "not compared: this version of the leader has no digest of the control plane"})
			continue
		case errors.Is(err, client.ErrNotFound):
			rep.Nodes = append(rep.Nodes, replicaResult{Tenant: t, Node: leader.ID, Result: "no such tenant"})
			rep.Missing++
			continue
		case err != nil:
			return rep, remoteError(err)
		case ref.Damaged != "":
			rep.Nodes = append(rep.Nodes, replicaResult{Tenant: t, Node: leader.ID, Events: ref.Events, Result: "DAMAGED: " + ref.Damaged})
			rep.Differ++
			continue
		}
		rep.Nodes = append(rep.Nodes, replicaResult{Tenant: t, Node: leader.ID, Upto: ref.Upto, Events: ref.Events, Digest: ref.Digest, Result: "leader"})
		for _, m := range st.Members {
			if m.ID == leader.ID {
				continue
			}
			r := replicaResult{Tenant: t, Node: m.ID, Upto: ref.Upto}
			c, ok := nodes[m.ID]
			if !ok {
				r.Result = unasked[m.ID]
				rep.Unasked++
				rep.Nodes = append(rep.Nodes, r)
				continue
			}
			d, err := c.Cluster().DigestUpto(ctx, t, ref.Upto)
			switch {
			case err != nil:
				why := oneLine(strings.TrimPrefix(err.Error(), "client: "))
				r.Result = "not compared: " + why
				rep.Unasked++
				switch {
				case errors.Is(err, client.ErrNotFound) && t == client.ControlPlane:
					r.Result = "not compared: this version of the node has no digest of the control plane"
					rep.Unasked-- // version skew (a rolling upgrade), not a replica's state
				case errors.Is(err, client.ErrNotFound):
					r.Result = "not compared: it does not hold the tenant (behind, or diverged: run the check again)"
				case errors.Is(err, client.ErrNotCaughtUp):
				default:
					// Unreachable or failing: not asked again.
					delete(nodes, m.ID)
					unasked[m.ID] = "not asked: an earlier request to it failed (" + why + ")"
				}
			case d.Born != 0 && ref.Born != 0 && d.Born != ref.Born:
				r.Result = "not compared: it holds another incarnation of the tenant (deleted and created again while it was behind): run the check again"
				rep.Unasked++
			case d.Damaged != "":
				r.Events, r.Result = d.Events, "DAMAGED: "+d.Damaged
				rep.Differ++
			case d.Digest == ref.Digest && d.Events == ref.Events:
				r.Events, r.Digest, r.Result = d.Events, d.Digest, "same"
			default:
				r.Events, r.Digest, r.Result = d.Events, d.Digest, "DIFFERENT"
				rep.Differ++
			}
			rep.Nodes = append(rep.Nodes, r)
		}
	}
	return rep, nil
}

// showReplicaCheck writes the leader's automatic replica check (nothing
// for a node that does not lead).
// showMembers prints the cluster's members, with each one's health when
// st has it (StatusAllNodes), then the problems found and how many more
// voters may fail.
func showMembers(w io.Writer, st client.ClusterStatus) error {
	health := map[string]client.ClusterNodeHealth{}
	if st.Health != nil {
		for _, n := range st.Health.Nodes {
			health[n.ID] = n
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if st.Health == nil {
		fmt.Fprintln(tw, "ID\tROLE\tRAFT ADDRESS\tURL")
	} else {
		fmt.Fprintln(tw, "ID\tROLE\tRAFT ADDRESS\tURL\tSTATE\tAPPLIED\tLAG\tHEALTH")
	}
	for _, m := range st.Members {
		role := m.Suffrage
		if m.Leader {
			role = "leader"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s", oneLine(m.ID), role, oneLine(m.Address), oneLine(m.URL))
		if st.Health != nil {
			h, ok := health[m.ID]
			switch {
			case !ok:
				fmt.Fprint(tw, "\t-\t-\t-\tnot judged")
			case !h.Reachable:
				fmt.Fprint(tw, "\t-\t-\t-\tUNREACHABLE")
			default:
				verdict := "healthy"
				if !h.Healthy {
					verdict = "UNHEALTHY"
				}
				fmt.Fprintf(tw, "\t%s\t%d\t%d\t%s", oneLine(h.State), h.AppliedIndex, h.Lag, verdict)
			}
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	voters := 0
	for _, m := range st.Members {
		if m.Suffrage == "voter" {
			voters++
		}
	}
	if voters >= 2 && voters%2 == 0 {
		// A quorum of an even count is no more forgiving than one fewer.
		fmt.Fprintf(w, "note: %d voters tolerate as many failures as %d do (a quorum is %d): run 3 or 5\n", voters, voters-1, voters/2+1)
	}
	h := st.Health
	if h == nil {
		return nil
	}
	for _, n := range h.Nodes {
		for _, p := range n.Problems {
			fmt.Fprintf(w, "node %s: %s\n", oneLine(n.ID), oneLine(p))
		}
	}
	leader := "no member answered as the leader"
	if h.Leader != "" {
		leader = "leader " + oneLine(h.Leader)
	}
	more := fmt.Sprintf("%d more may fail", h.FailureTolerance)
	switch {
	case h.FailureTolerance < 0:
		more = "NO QUORUM: writes cannot commit"
	case h.FailureTolerance == 0:
		more = "none more may fail"
	case h.FailureTolerance == 1:
		more = "1 more may fail"
	}
	_, err := fmt.Fprintf(w, "health: %s; %d of %d voters healthy, a quorum is %d: %s\n", leader, h.HealthyVoters, h.Voters, h.Quorum, more)
	return err
}

func showReplicaCheck(w io.Writer, rc *client.ReplicaCheck) {
	switch {
	case rc == nil:
		return
	case rc.Every == "off":
		fmt.Fprintln(w, "replica check: off (cluster.replica_check_every)")
		return
	case rc.LastRound == nil:
		fmt.Fprintf(w, "replica check: every %s, no round finished yet", oneLine(rc.Every))
	default:
		fmt.Fprintf(w, "replica check: every %s, last round %s: %d of %d copies agree with the leader's (%d compared that round, %d not compared)", oneLine(rc.Every),
			rc.LastRound.Local().Format(time.DateTime), rc.Agreeing, rc.Copies, rc.Compared, rc.NotCompared)
	}
	fmt.Fprintf(w, ", %d diverged\n", len(rc.Diverged))
	for _, why := range rc.NotComparedWhy {
		fmt.Fprintf(w, "  not compared: %s\n", oneLine(why))
	}
	for _, a := range rc.Diverged {
		detail := ""
		if a.Detail != "" {
			detail = ": " + oneLine(a.Detail)
		}
		what := "tenant " + oneLine(a.Tenant)
		if a.Tenant == client.ControlPlane {
			what = "the control plane"
		}
		fmt.Fprintf(w, "DIVERGED: %s on node %s: %s in events [%d, %d) since %s%s\n", what, oneLine(a.Node),
			oneLine(a.Result), a.From, a.Upto, a.Since.Local().Format(time.DateTime), detail)
	}
}

// isHTTPS reports whether u is an https URL (the scheme in any case).
func isHTTPS(u string) bool {
	p, err := url.Parse(u)
	return err == nil && strings.EqualFold(p.Scheme, "https")
}
