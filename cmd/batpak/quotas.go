package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/sdk/client"
)

// quotaNames are the quotas a tenant can be given, by their JSON names,
// in client.Quotas' order.
func quotaNames() []string { return jsonFieldNames(reflect.TypeFor[client.Quotas]()) }

// jsonFieldNames are the JSON names of struct type t's fields, in order.
func jsonFieldNames(t reflect.Type) []string {
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// quotaValue reads one --set value: a number (negative: no limit; 0: the
// server's default), "unlimited", or a size with a unit (64MiB).
func quotaValue(name, raw string) (any, error) {
	if strings.EqualFold(strings.TrimSpace(raw), "unlimited") {
		return -1, nil
	}
	if f, err := strconv.ParseFloat(strings.TrimSpace(raw), 64); err == nil {
		return f, nil
	}
	if n, err := parseSize(raw); err == nil {
		return n, nil
	}
	return nil, badInput("--set "+name+"="+raw, errors.New(`want a number (negative or "unlimited": no limit; 0: the server's default) or a size such as 64MiB`))
}

// changeQuotas applies sets (NAME=VALUE) and unsets (NAME) to a tenant's
// overrides q, naming the flag and the quota that is wrong.
func changeQuotas(q client.Quotas, sets, unsets []string) (client.Quotas, error) {
	b, err := json.Marshal(q)
	if err != nil {
		return q, err
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		return q, err
	}
	known := quotaNames()
	check := func(flag, name string) error {
		for _, k := range known {
			if k == name {
				return nil
			}
		}
		return badInput(flag+" "+name, errors.New("no such quota (known: "+strings.Join(known, ", ")+")"))
	}
	for _, name := range unsets {
		if err := check("--unset", name); err != nil {
			return q, err
		}
		delete(m, name)
	}
	for _, kv := range sets {
		name, raw, ok := strings.Cut(kv, "=")
		if !ok {
			return q, badInput("--set "+kv, errors.New("want NAME=VALUE, such as requests_per_second=500"))
		}
		if err := check("--set", name); err != nil {
			return q, err
		}
		v, err := quotaValue(name, raw)
		if err != nil {
			return q, err
		}
		m[name] = v
		one, _ := json.Marshal(map[string]any{name: v})
		if err := json.Unmarshal(one, new(client.Quotas)); err != nil {
			return q, badInput("--set "+kv, errors.New(name+" takes a whole number"))
		}
	}
	b, err = json.Marshal(m)
	if err != nil {
		return q, err
	}
	var out client.Quotas
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&out); err != nil {
		return q, err
	}
	return out, nil
}

// quotaCell renders one quota's value: "unlimited" when negative, sizes
// of *_bytes quotas in binary units, "-" for none.
func quotaCell(name string, v any) string {
	f, ok := v.(float64)
	switch {
	case !ok:
		return "-"
	case f < 0:
		return "unlimited"
	case strings.Contains(name, "bytes") && f == float64(int64(f)):
		return formatSize(int64(f))
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// asMap is q's fields by JSON name (those set).
func asMap(q client.Quotas) map[string]any {
	b, _ := json.Marshal(q)
	m := map[string]any{}
	_ = json.Unmarshal(b, &m)
	return m
}

func newTenantQuotasCmd(a *app, out *outputFlags) *cobra.Command {
	var sets, unsets []string
	cmd := &cobra.Command{
		Use:   "quotas ID [--set NAME=VALUE]... [--unset NAME]...",
		Short: "Show a tenant's quotas, or change what is set for it",
		Long: `Show the quotas tenant ID runs under: each one's effective value and what is
set for the tenant itself (the rest are the server's defaults,
server.quotas.* in config.yaml).

--set NAME=VALUE sets one for the tenant (a number; negative or "unlimited":
no limit; 0: the server's default; sizes may take a unit: 64MiB) and
--unset NAME returns one to the server's default; the others set for the
tenant stay as they are. The change applies to the tenant's next request.
It replaces the tenant's settings as read a moment before: two operators
changing one tenant's quotas at once, the last one's change is what stays.

  batpak tenant quotas acme
  batpak tenant quotas acme --set requests_per_second=500 --set requests_burst=1000
  batpak tenant quotas acme --unset storage_bytes`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			rc, err := a.needServer("tenant quotas")
			if err != nil {
				return err
			}
			adm := rc.c.Admin()
			t, err := adm.Tenant(cmd.Context(), args[0])
			if err != nil {
				return remoteError(err)
			}
			if len(sets)+len(unsets) > 0 {
				q, err := changeQuotas(t.Quotas, sets, unsets)
				if err != nil {
					return err
				}
				if t, err = adm.SetQuotas(cmd.Context(), args[0], q); err != nil {
					return remoteError(err)
				}
			}
			view := struct {
				ID        string        `json:"id"`
				Quotas    client.Quotas `json:"quotas"`
				Effective client.Quotas `json:"effective_quotas"`
			}{t.ID, t.Quotas, t.EffectiveQuotas}
			return emit(cmd.OutOrStdout(), f, view, func(w io.Writer) error {
				eff, own := asMap(t.EffectiveQuotas), asMap(t.Quotas)
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "QUOTA\tEFFECTIVE\tSET FOR THE TENANT")
				for _, name := range quotaNames() {
					e := quotaCell(name, eff[name])
					if e == "-" {
						e = "server ceiling" // the plugin limits: server.plugins.*
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", name, e, quotaCell(name, own[name]))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				_, err := fmt.Fprintf(w, "tenant %s: %s set for it; the rest are the server's defaults\n", oneLine(t.ID), plural(len(own), "quota", "quotas"))
				return err
			})
		},
	}
	cmd.Flags().StringArrayVar(&sets, "set", nil, "NAME=VALUE: set one quota for the tenant (repeatable)")
	cmd.Flags().StringArrayVar(&unsets, "unset", nil, "NAME: return one quota to the server's default (repeatable)")
	return cmd
}
