package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
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

// pluginLimit reports whether quota name is one of the plugin limits, for
// which 0 or a negative value means the server's ceiling
// (server.plugins.*) and a larger one is lowered to it.
func pluginLimit(name string) bool {
	return strings.HasPrefix(name, "plugin_") || strings.HasPrefix(name, "max_plugin") || name == "max_module_bytes"
}

// quotaValue reads one --set value as the JSON number to send: a whole
// or decimal number, "unlimited" (-1), or, for a quota of bytes, a size
// with a unit (64MiB).
func quotaValue(name, raw string) (string, error) {
	v := strings.TrimSpace(raw)
	bad := func(why string) error { return badInput("--set "+name+"="+raw, errors.New(why)) }
	if strings.EqualFold(v, "unlimited") {
		if strings.HasSuffix(name, "_burst") {
			return "", bad("a bucket cannot be unlimited: lift its rate instead (" + strings.TrimSuffix(name, "_burst") + "_per_second=unlimited)")
		}
		return "-1", nil
	}
	// Below zero only -1 is a value: "unlimited" (for a plugin limit, the
	// server's ceiling); a bucket has none.
	negative := func(f float64) error {
		switch {
		case f >= 0:
			return nil
		case f == -1 && strings.HasSuffix(name, "_burst"):
			return bad("a bucket cannot be unlimited: lift its rate instead (" + strings.TrimSuffix(name, "_burst") + "_per_second=unlimited)")
		case f == -1:
			return nil
		}
		return bad(name + " cannot be negative but -1 (unlimited): want 0 (the server's default), a positive number, or unlimited")
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if err := negative(float64(n)); err != nil {
			return "", err
		}
		return v, nil // exactly as written: no rounding through a float
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return "", bad("want a finite number")
		}
		if err := negative(f); err != nil {
			return "", err
		}
		return strconv.FormatFloat(f, 'g', -1, 64), nil
	}
	if strings.Contains(name, "bytes") {
		if n, err := parseSize(v); err == nil {
			return strconv.FormatInt(n, 10), nil
		}
		return "", bad(`want a number of bytes, "unlimited", or a whole number of KiB, MiB or GiB (64MiB)`)
	}
	return "", bad(`want a number, or "unlimited"`)
}

// changeQuotas applies sets (NAME=VALUE) and unsets (NAME) to a tenant's
// overrides q, leaving the others exactly as they were, and names the
// flag and the quota that is wrong.
func changeQuotas(q client.Quotas, sets, unsets []string) (client.Quotas, error) {
	known := quotaNames()
	unknown := func(flag, name string) error {
		if slices.Contains(known, name) {
			return nil
		}
		near := ""
		for _, k := range known {
			if len(name) <= 64 && editDistance(k, name) <= 2 {
				near = "did you mean " + k + "? "
				break
			}
		}
		return badInput(flag+" "+name, errors.New("no such quota ("+near+"known: "+strings.Join(known, ", ")+")"))
	}
	// set decodes name's JSON number into q, that field alone.
	set := func(flag, name, number string) error {
		d := json.NewDecoder(strings.NewReader(`{` + strconv.Quote(name) + `:` + number + `}`))
		d.DisallowUnknownFields()
		if err := d.Decode(&q); err != nil {
			return badInput(flag+" "+name+"="+number, errors.New(name+" takes a whole number (at most 9223372036854775807)"))
		}
		return nil
	}
	for _, name := range unsets {
		if err := unknown("--unset", name); err != nil {
			return q, err
		}
		for _, kv := range sets {
			if n, _, _ := strings.Cut(kv, "="); n == name {
				return q, usagef("--set %s and --unset %s exclude each other: give one", oneLine(kv), oneLine(name))
			}
		}
		if err := set("--unset", name, "0"); err != nil {
			return q, err
		}
	}
	for _, kv := range sets {
		name, raw, ok := strings.Cut(kv, "=")
		if !ok {
			return q, badInput("--set "+kv, errors.New("want NAME=VALUE, such as requests_per_second=500"))
		}
		if err := unknown("--set", name); err != nil {
			return q, err
		}
		number, err := quotaValue(name, raw)
		if err != nil {
			return q, err
		}
		if err := set("--set", name, number); err != nil {
			return q, badInput("--set "+kv, errors.Unwrap(err))
		}
	}
	return q, nil
}

// quotaCell renders one quota's value: "unlimited" when negative (the
// server's ceiling for a plugin limit), sizes of quotas of bytes in
// binary units, "-" for none.
func quotaCell(name string, v any) string {
	f, ok := v.(float64)
	switch {
	case !ok:
		return "-"
	case f <= 0 && pluginLimit(name):
		return "server ceiling"
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

--set NAME=VALUE sets one for the tenant: a number (0: the server's
default), "unlimited" (-1; no other negative value) to lift a limit (not a
burst), or for a quota of bytes a size with a unit (64MiB). A plugin limit
(plugin_*, max_plugins, max_plugin_versions, max_module_bytes) of 0 or -1
is the server's ceiling (server.plugins.*), and one above it is lowered to
it: EFFECTIVE shows the limit that applies and names the server setting
whose ceiling it is. A rate set
alone keeps the server's default burst: set requests_burst with
requests_per_second. --unset NAME returns one to the server's default (not
with --set of the same quota).
The others set for the tenant stay exactly as they are. The change applies
to the tenant's next request. It replaces the tenant's settings as read a
moment before: two operators changing one tenant's quotas at once, the
last one's change is what stays. -o json prints {id, quotas,
effective_quotas, capped_by} (quotas at zero, the server's default, left
out; capped_by: the server setting capping each plugin limit so capped).

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
				ID        string            `json:"id"`
				Quotas    client.Quotas     `json:"quotas"`
				Effective client.Quotas     `json:"effective_quotas"`
				CappedBy  map[string]string `json:"capped_by,omitempty"`
			}{t.ID, t.Quotas, t.EffectiveQuotas, t.CappedBy}
			return emit(cmd.OutOrStdout(), f, view, func(w io.Writer) error {
				eff, own := asMap(t.EffectiveQuotas), asMap(t.Quotas)
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "QUOTA\tEFFECTIVE\tSET FOR THE TENANT")
				for _, name := range quotaNames() {
					e := quotaCell(name, eff[name])
					switch setting := t.CappedBy[name]; {
					case e == "-":
						e = "server ceiling" // an unset plugin limit (a server that does not say it)
					case setting != "":
						e += " (ceiling: " + oneLine(setting) + ")"
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
