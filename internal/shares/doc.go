// Package shares bounds work running at once across tenants, with a share
// for each: a pool of slots (module checks, policy evaluations, plugin
// calls) of which one tenant holds at most half (at least one), so that
// one tenant's slow work cannot hold every slot and keep the others
// waiting. A tenant that kept the slots busy lately (its recent use, which
// the pool keeps) also needs one of the slots every such tenant shares,
// half the pool, so that several busy tenants together cannot hold every
// slot either. A slot that frees goes to the waiting tenant holding the
// fewest, then to the one whose takes held the slots least lately, then
// to the one served longest ago, so however many tenants wait, one whose
// calls are quick and that holds none is served at the next hand-over
// unless a waiting tenant used the slots still less lately. NewFair's
// pools keep
// no share back (for work that must not idle). A pool keeps a tenant's
// entry only while a take holds or waits on it, its use until it decays
// away, and when it last served a tenant for at least 65,536 hand-overs.
package shares
