package main

import (
	"fmt"
	"io"
	"text/tabwriter"

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
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tROLE\tRAFT ADDRESS\tURL")
			for _, m := range st.Members {
				role := m.Suffrage
				if m.Leader {
					role = "leader"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", oneLine(m.ID), role, oneLine(m.Address), oneLine(m.URL))
			}
			return tw.Flush()
		})
	}
	status := &cobra.Command{
		Use: "status", Short: "The answering node's view: state, leader, members", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rc, err := a.needServer("cluster status")
			if err != nil {
				return err
			}
			st, err := rc.c.Cluster().Status(cmd.Context())
			if err != nil {
				return remoteError(err)
			}
			return show(cmd, st)
		},
	}
	var url string
	var replace bool
	join := &cobra.Command{
		Use: "join ID RAFT-ADDRESS [--url API-URL]", Short: "Add a node as a voting member", Args: exactArgs("ID", "RAFT-ADDRESS"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := a.needServer("cluster join")
			if err != nil {
				return err
			}
			st, err := rc.c.Cluster().AddNode(cmd.Context(), args[0], args[1], url, replace)
			if err != nil {
				return remoteError(err)
			}
			return show(cmd, st)
		},
	}
	join.Flags().StringVar(&url, "url", "", "the node's API URL, named in redirects while it leads")
	join.Flags().BoolVar(&replace, "replace", false, "replace the member holding this id or address (it is removed first)")
	leave := &cobra.Command{
		Use: "leave ID", Short: "Remove a member from the cluster", Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			rc, err := a.needServer("cluster leave")
			if err != nil {
				return err
			}
			if err := rc.c.Cluster().RemoveNode(cmd.Context(), args[0]); err != nil {
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
	out.registerPersistent(cmd)
	cmd.AddCommand(status, join, leave)
	return cmd
}
