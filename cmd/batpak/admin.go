package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/sdk/client"
)

// tenantLine is one row of tenant list.
func tenantLine(t client.TenantInfo) string {
	line := fmt.Sprintf("%s\t%s\t%s", oneLine(t.ID), t.State, t.Created.UTC().Format(time.RFC3339))
	if t.SuspendReason != "" {
		line += "\t" + oneLine(t.SuspendReason)
	}
	return line
}

func newTenantCmd(a *app) *cobra.Command {
	var out outputFlags
	cmd := &cobra.Command{
		Use:     "tenant",
		Short:   "Create, list, suspend, resume and delete a server's tenants, and set their quotas (operator credential)",
		GroupID: "admin",
		Long: `Manage the tenants of a running batpak serve: --server URL and --token with
the server's operator credential (BATPAK_SERVER, BATPAK_TOKEN).`,
	}
	show := func(cmd *cobra.Command, verb string, t client.TenantInfo) error {
		f, err := out.format()
		if err != nil {
			return err
		}
		return emit(cmd.OutOrStdout(), f, t, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "%s tenant %s (state %s)\n", verb, oneLine(t.ID), t.State)
			return err
		})
	}
	create := &cobra.Command{
		Use: "create ID", Short: "Create a tenant", Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := a.needServer("tenant create")
			if err != nil {
				return err
			}
			t, err := rc.c.Admin().CreateTenant(cmd.Context(), args[0], nil, nil)
			if err != nil {
				return remoteError(err)
			}
			return show(cmd, "created", t)
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List the tenants", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			rc, err := a.needServer("tenant list")
			if err != nil {
				return err
			}
			ts, err := rc.c.Admin().Tenants(cmd.Context())
			if err != nil {
				return remoteError(err)
			}
			w := cmd.OutOrStdout()
			if f != formatTable {
				out := newRecords(w, f)
				for _, t := range ts {
					if err := out.write(t); err != nil {
						return err
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tCREATED\tREASON")
			for _, t := range ts {
				fmt.Fprintln(tw, tenantLine(t))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			_, err = fmt.Fprintln(w, plural(len(ts), "tenant", "tenants"))
			return err
		},
	}
	var reason string
	suspend := &cobra.Command{
		Use: "suspend ID", Short: "Suspend a tenant: its keys are refused until resume", Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := a.needServer("tenant suspend")
			if err != nil {
				return err
			}
			var ans client.Answer
			t, err := rc.c.Admin().Suspend(client.WithAnswer(cmd.Context(), &ans), args[0], reason)
			if err != nil {
				return remoteError(err)
			}
			warnUnconfirmed(cmd, "the suspension of tenant "+oneLine(args[0]), &ans)
			return show(cmd, "suspended", t)
		},
	}
	suspend.Flags().StringVar(&reason, "reason", "", "why, shown to the tenant's callers")
	resume := &cobra.Command{
		Use: "resume ID", Short: "Resume a suspended tenant", Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := a.needServer("tenant resume")
			if err != nil {
				return err
			}
			t, err := rc.c.Admin().Resume(cmd.Context(), args[0])
			if err != nil {
				return remoteError(err)
			}
			return show(cmd, "resumed", t)
		},
	}
	var yes bool
	del := &cobra.Command{
		Use: "delete ID --yes", Short: "Delete a tenant and all its data (needs --yes)", Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return usagef("tenant delete erases tenant %s and all its events; repeat with --yes to confirm", oneLine(args[0]))
			}
			f, err := out.format()
			if err != nil {
				return err
			}
			rc, err := a.needServer("tenant delete")
			if err != nil {
				return err
			}
			var ans client.Answer
			if err := rc.c.Admin().DeleteTenant(client.WithAnswer(cmd.Context(), &ans), args[0]); err != nil {
				return remoteError(err)
			}
			warnUnconfirmed(cmd, "the deletion of tenant "+oneLine(args[0]), &ans)
			gone := struct {
				ID      string `json:"id"`
				Deleted bool   `json:"deleted"`
			}{args[0], true}
			return emit(cmd.OutOrStdout(), f, gone, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "deleted tenant %s\n", oneLine(args[0]))
				return err
			})
		},
	}
	del.Flags().BoolVar(&yes, "yes", false, "confirm: the tenant's data is erased")
	out.registerPersistent(cmd)
	cmd.AddCommand(create, list, suspend, resume, del, newTenantQuotasCmd(a, &out))
	return cmd
}

// warnUnconfirmed says on stderr which cluster members had not
// confirmed, when the leader answered, that they applied what (a change
// taking access away, made all the same).
func warnUnconfirmed(cmd *cobra.Command, what string, ans *client.Answer) {
	if len(ans.UnconfirmedMembers) == 0 {
		return
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "batpak: warning: %s is made, but cluster members %s had not confirmed applying it within 2 s: each applies it once it catches up with the leader, and one cut off from the leader stops serving the tenant's requests within 5 heartbeat timeouts (README, \"Revoking on a cluster\")\n",
		what, oneLine(strings.Join(ans.UnconfirmedMembers, ", ")))
}

// keyAdmin runs fn with the operator's route to tenant's keys, and, when
// the token is refused there as not the operator credential, with the
// tenant's own route (a tenant admin key).
func keyAdmin[T any](rc *remoteConf, op func(*client.Admin) (T, error), own func(*client.Tenant) (T, error)) (T, error) {
	v, err := op(rc.c.Admin())
	if errors.Is(err, client.ErrForbidden) {
		return own(rc.c.Tenant(rc.tenant))
	}
	return v, err
}

func newKeyCmd(a *app) *cobra.Command {
	var out outputFlags
	cmd := &cobra.Command{
		Use:     "key",
		Short:   "Issue, list and revoke a tenant's API keys",
		GroupID: "admin",
		Long: `Manage the API keys of the tenant --tenant (BATPAK_TENANT) on --server, with
the operator credential or an admin key of that tenant as --token. An
issued key is printed once: the server keeps only its digest.`,
	}
	tenantOf := func(name string) (*remoteConf, error) {
		rc, err := a.needServer(name)
		if err != nil {
			return nil, err
		}
		if _, err := rc.tenantClient(); err != nil {
			return nil, err
		}
		return rc, nil
	}
	var roles []string
	issue := &cobra.Command{
		Use: "issue NAME --role ROLE", Short: "Issue a key; prints it once", Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(roles) == 0 {
				return usagef("missing required flag --role (reader, writer or admin)")
			}
			f, err := out.format()
			if err != nil {
				return err
			}
			rc, err := tenantOf("key issue")
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			k, err := keyAdmin(rc,
				func(ad *client.Admin) (client.IssuedKey, error) {
					return ad.IssueKey(ctx, rc.tenant, args[0], roles...)
				},
				func(t *client.Tenant) (client.IssuedKey, error) { return t.IssueKey(ctx, args[0], roles...) })
			if err != nil {
				return remoteError(err)
			}
			return emit(cmd.OutOrStdout(), f, k, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "issued key %s (%s) for tenant %s, roles %s\n%s\nthe key is shown only now: store it\n",
					k.ID, oneLine(k.Name), oneLine(rc.tenant), strings.Join(k.Roles, ","), k.Key)
				return err
			})
		},
	}
	issue.Flags().StringSliceVar(&roles, "role", nil, "role of the key: reader, writer or admin, and any application roles your policies read (input.principal.roles, e.g. clerk); repeat or comma-separate")
	list := &cobra.Command{
		Use: "list", Short: "List the tenant's keys (never the keys themselves)", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			rc, err := tenantOf("key list")
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			ks, err := keyAdmin(rc,
				func(ad *client.Admin) ([]client.Key, error) { return ad.Keys(ctx, rc.tenant) },
				func(t *client.Tenant) ([]client.Key, error) { return t.Keys(ctx) })
			if err != nil {
				return remoteError(err)
			}
			w := cmd.OutOrStdout()
			if f != formatTable {
				out := newRecords(w, f)
				for _, k := range ks {
					if err := out.write(k); err != nil {
						return err
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tROLES\tCREATED")
			for _, k := range ks {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.ID, oneLine(k.Name), strings.Join(k.Roles, ","), k.Created.UTC().Format(time.RFC3339))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			_, err = fmt.Fprintln(w, plural(len(ks), "key", "keys"))
			return err
		},
	}
	revoke := &cobra.Command{
		Use: "revoke KEY-ID", Short: "Revoke a key: it is refused from now on", Args: exactArgs("KEY-ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			rc, err := tenantOf("key revoke")
			if err != nil {
				return err
			}
			var ans client.Answer
			ctx := client.WithAnswer(cmd.Context(), &ans)
			_, err = keyAdmin(rc,
				func(ad *client.Admin) (struct{}, error) { return struct{}{}, ad.RevokeKey(ctx, rc.tenant, args[0]) },
				func(t *client.Tenant) (struct{}, error) { return struct{}{}, t.RevokeKey(ctx, args[0]) })
			if err != nil {
				return remoteError(err)
			}
			warnUnconfirmed(cmd, "the revocation of key "+oneLine(args[0]), &ans)
			revoked := struct {
				ID      string `json:"id"`
				Tenant  string `json:"tenant"`
				Revoked bool   `json:"revoked"`
			}{args[0], rc.tenant, true}
			return emit(cmd.OutOrStdout(), f, revoked, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "revoked key %s of tenant %s\n", oneLine(args[0]), oneLine(rc.tenant))
				return err
			})
		},
	}
	out.registerPersistent(cmd)
	cmd.AddCommand(issue, list, revoke)
	return cmd
}
