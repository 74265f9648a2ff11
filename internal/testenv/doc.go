// Package testenv decides what a test does when something it needs from
// the machine (a compiler, wat2wasm) is missing: it skips, so that
// `go test ./...` passes on a machine with only Go, unless the environment
// variable BATPAK_REQUIRE_TOOLS is 1, when it fails. CI sets it (.ci/run),
// so a green CI means every such test ran.
package testenv
