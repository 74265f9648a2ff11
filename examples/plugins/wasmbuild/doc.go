// Package wasmbuild builds Go plugins (GOOS=wasip1 GOARCH=wasm,
// -buildmode=c-shared) for tests and benchmarks, keeping each build under
// os.TempDir()/batpak-wasm-cache keyed by a hash of its sources, so a
// rerun of a test binary that needs a plugin does not rebuild it.
//
// The key covers the Go version, the build flags and the path and contents
// of every non-standard-library Go file the package depends on (as
// `go list -deps` reports them for wasip1), so editing the plugin, the
// guest SDK, the ABI package or a dependency's version makes a new build.
package wasmbuild
