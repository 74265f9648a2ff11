//go:build race

package opa_test

// raceEnabled: the race detector slows byte loops tenfold and more; tests
// that scan large payloads scale them down.
const raceEnabled = true
