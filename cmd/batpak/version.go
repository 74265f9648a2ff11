package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// versionInfo is what "batpak version" prints: the module version and
// the version-control state the binary was built from, as Go recorded
// them in the build info.
type versionInfo struct {
	Version   string `json:"version"`               // module version: v0.5.0, or (devel) for a build from a checkout
	Commit    string `json:"commit,omitempty"`      // vcs.revision, when built from a checkout
	Time      string `json:"commit_time,omitempty"` // vcs.time
	Modified  bool   `json:"modified,omitempty"`    // vcs.modified: the checkout had uncommitted changes
	GoVersion string `json:"go"`
	Platform  string `json:"platform"` // GOOS/GOARCH
}

// readVersion reads the build info. "go install …@v0.5.0" records the
// module version; "go build" in a checkout records "(devel)" and the
// commit (when the checkout is a git repository and -buildvcs is on);
// "go run" and test binaries may record neither.
func readVersion() versionInfo { return versionFrom(debug.ReadBuildInfo()) }

// versionFrom reads what a build info holds (ok false: none).
func versionFrom(bi *debug.BuildInfo, ok bool) versionInfo {
	v := versionInfo{Version: "(devel)", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if !ok || bi == nil {
		return v
	}
	if mv := bi.Main.Version; mv != "" {
		v.Version = mv
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// String is the one-line form: "v0.5.0 (commit 1a2b3c4d5e6f, go1.26.8 linux/amd64)".
func (v versionInfo) String() string {
	s := v.Version + " ("
	if v.Commit != "" {
		c := v.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		s += "commit " + c
		if v.Modified {
			s += "+modified"
		}
		s += ", "
	}
	return s + v.GoVersion + " " + v.Platform + ")"
}

func newVersionCmd(a *app) *cobra.Command {
	var out outputFlags
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version and commit the binary was built from",
		Long: `Print the module version ("(devel)" for a binary built from a checkout),
the commit, whether the checkout had local changes, the Go version and the
platform, as the Go toolchain recorded them in the binary. "batpak
--version" prints the one-line form.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			v := readVersion()
			return emit(cmd.OutOrStdout(), f, v, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintf(tw, "version\t%s\n", v.Version)
				if v.Commit != "" {
					mod := ""
					if v.Modified {
						mod = " (with uncommitted changes)"
					}
					fmt.Fprintf(tw, "commit\t%s%s\n", v.Commit, mod)
				}
				if v.Time != "" {
					fmt.Fprintf(tw, "commit time\t%s\n", v.Time)
				}
				fmt.Fprintf(tw, "go\t%s\n", v.GoVersion)
				fmt.Fprintf(tw, "platform\t%s\n", v.Platform)
				return tw.Flush()
			})
		},
	}
	out.register(cmd)
	return cmd
}
