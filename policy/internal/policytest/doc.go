// Package policytest holds the fixtures the policy packages' tests share:
// a gated store, denial helpers and a watch that proves a refused write
// wrote and announced nothing. Everything goes through the public API of
// policy and core; the store's directory is only read.
package policytest
