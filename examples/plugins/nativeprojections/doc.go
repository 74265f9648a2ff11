// Package nativeprojections holds native Go equivalents of the example
// plugins in examples/plugins, for parity tests and benchmarks against
// the WebAssembly builds.
package nativeprojections
