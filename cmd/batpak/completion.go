package main

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/printable"
)

// Completion of entity names and event ids reads the local store
// (read-only, beside a writer) and is bounded: it looks at no more than
// completionScan events, offers no more than completionMax names and
// waits at most completionTimeout, so a large store never makes a shell's
// Tab slow. Against a server (or with no store) it offers nothing.
const (
	completionScan = 100_000
	completionMax  = 200
)

// completeEntities offers the entity names of the local store that start
// with what was typed.
func completeEntities(a *app) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(_ *cobra.Command, _ []string, typed string) ([]string, cobra.ShellCompDirective) {
		return a.storeWords(typed, func(ev core.StoredEvent) string { return ev.Coordinate.Entity }), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeScopes offers the scopes of the local store.
func completeScopes(a *app) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(_ *cobra.Command, _ []string, typed string) ([]string, cobra.ShellCompDirective) {
		return a.storeWords(typed, func(ev core.StoredEvent) string { return ev.Coordinate.Scope }), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeKinds offers the kinds the local store holds.
func completeKinds(a *app) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(_ *cobra.Command, _ []string, typed string) ([]string, cobra.ShellCompDirective) {
		return a.storeWords(typed, func(ev core.StoredEvent) string { return ev.Header.Kind.String() }), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeEventIDs offers the ids of the newest events of the local store
// for a positional ID argument (one argument only).
func completeEventIDs(a *app) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(_ *cobra.Command, args []string, typed string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ids := a.completionStore(func(s *core.Store) []string {
			var ids []string
			end := s.Stats().GlobalSequence
			c := s.Cursor(core.All())
			if end > completionMax {
				c.Seek(end - completionMax)
			}
			evs, _ := c.Poll(completionMax)
			for i := len(evs) - 1; i >= 0; i-- { // newest first
				if id := evs[i].Header.ID.String(); strings.HasPrefix(id, typed) {
					ids = append(ids, fmt.Sprintf("%s\t%s %s", id, printable.String(evs[i].Coordinate.Entity), evs[i].Header.Kind))
				}
			}
			return ids
		})
		return ids, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveKeepOrder
	}
}

// completeCategories offers the categories 1..15 an application may read.
func completeCategories(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	var out []string
	for c := 0; c <= 0xF; c++ {
		out = append(out, fmt.Sprint(c))
	}
	return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveKeepOrder
}

// completeRegionFlags registers completion for the region flags a command
// has (--entity-prefix, --entity, --scope, --kind, --category,
// --tombstone-entity).
func completeRegionFlags(a *app, cmd *cobra.Command) {
	reg := func(name string, fn func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective)) {
		if cmd.Flags().Lookup(name) != nil {
			_ = cmd.RegisterFlagCompletionFunc(name, fn)
		}
	}
	reg("entity-prefix", completeEntities(a))
	reg("entity", completeEntities(a))
	reg("tombstone-entity", completeEntities(a))
	reg("scope", completeScopes(a))
	reg("kind", completeKinds(a))
	reg("category", completeCategories)
}

// storeWords collects the distinct values pick returns for the local
// store's events, those starting with typed, sorted (bounded; see
// completionScan).
func (a *app) storeWords(typed string, pick func(core.StoredEvent) string) []string {
	return a.completionStore(func(s *core.Store) []string {
		seen := map[string]bool{}
		n := 0
		for ev, err := range s.Events(core.All()) {
			if err != nil || n >= completionScan || len(seen) >= completionMax {
				break
			}
			n++
			// A name with a control character (a line break would split
			// it into two offers, a tab start its description) cannot be
			// offered whole: it is left out.
			if w := pick(ev); strings.HasPrefix(w, typed) && printable.String(w) == w {
				seen[w] = true
			}
		}
		out := make([]string, 0, len(seen))
		for w := range seen {
			out = append(out, w)
		}
		slices.Sort(out)
		return out
	})
}

// completionTimeout bounds how long a completion waits for the local
// store: opening a large store (its index) takes time whatever
// completionScan says, and a shell's Tab must not hang on it. Past it, a
// completion offers nothing. A variable only so tests can lower it.
var completionTimeout = time.Second

// completionStore returns what fn finds in the local store when one is
// configured and no server is, nothing when the store cannot be opened or
// answers later than completionTimeout; it never prints (a completion's
// stderr would mix into the shell's). fn runs on a goroutine of its own,
// left to finish alone when it is late.
func (a *app) completionStore(fn func(s *core.Store) []string) []string {
	res, err := a.loadConfig()
	if err != nil {
		return nil
	}
	if a.localOnly() != nil || checkStoreDir(res.cfg.Dir) != nil {
		return nil
	}
	cfg := res.cfg
	cfg.Logger = slog.New(slog.DiscardHandler)
	found := make(chan []string, 1)
	go func() {
		s, err := core.OpenReadOnly(cfg)
		if err != nil {
			found <- nil
			return
		}
		defer s.Close()
		found <- fn(s)
	}()
	deadline := time.Now().Add(completionTimeout)
	t := time.NewTimer(completionTimeout)
	defer t.Stop()
	select {
	case words := <-found:
		if time.Now().After(deadline) {
			return nil // late: the timer and the answer were both ready
		}
		return words
	case <-t.C:
		return nil
	}
}
