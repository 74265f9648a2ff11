package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// suggestFlag adds to an "unknown flag: --name" error the command's flags
// the name was likely meant as: those it is a prefix of (--entity for
// --entity-prefix), or within two edits of it (--scpoe). Other errors
// are returned as they are.
func suggestFlag(cmd *cobra.Command, err error) error {
	name, ok := strings.CutPrefix(err.Error(), "unknown flag: --")
	if !ok || name == "" {
		return err
	}
	var sugg []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Deprecated != "" {
			return
		}
		if strings.HasPrefix(f.Name, name) || editDistance(f.Name, name) <= 2 {
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
