// Package testmodules builds WebAssembly modules for tests of the plugin
// host and the server: small modules with one exported memory and one
// function, shaped to stress the host (SlowToCompile).
package testmodules
