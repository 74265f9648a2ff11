package trusted

import "context"

type key struct{}

// Mark returns ctx marked as a write batpak makes for its own records.
func Mark(ctx context.Context) context.Context { return context.WithValue(ctx, key{}, true) }

// Marked reports whether ctx was marked with Mark.
func Marked(ctx context.Context) bool {
	m, _ := ctx.Value(key{}).(bool)
	return m
}
