// Package shares bounds work running at once across tenants, with a share
// for each: a pool of slots (module checks, policy evaluations) of which
// one tenant holds at most half (at least one), so that one tenant's slow
// work cannot hold every slot and keep the others waiting.
package shares
