package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// suggestFlag adds to an "unknown flag: --name" error the command's flags
// the name was likely meant as: those it is a prefix of (--entity for
// --entity-prefix), within two edits of it (--scpoe), or whose start is
// within one edit of it (--entty). Other errors are returned as they are.
func suggestFlag(cmd *cobra.Command, err error) error {
	name, ok := strings.CutPrefix(err.Error(), "unknown flag: --")
	if !ok || name == "" || len(name) > 64 {
		return err
	}
	var sugg []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Deprecated != "" {
			return
		}
		// A mistyped start of a longer name (--entty for --entity-prefix)
		// is within one edit of the name's start.
		nearStart := false
		for _, n := range []int{len(name) - 1, len(name), len(name) + 1} {
			if len(name) >= 4 && n <= len(f.Name) && editDistance(f.Name[:n], name) <= 1 {
				nearStart = true
			}
		}
		if strings.HasPrefix(f.Name, name) || editDistance(f.Name, name) <= 2 || nearStart {
			sugg = append(sugg, "--"+f.Name)
		}
	})
	if len(sugg) == 0 || len(sugg) > 3 {
		return err
	}
	return fmt.Errorf("%w (did you mean %s?)", err, strings.Join(sugg, " or "))
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
