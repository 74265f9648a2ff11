#!/bin/sh
# Rebuilds the fault fixtures (*.wasm) from their WebAssembly text (*.wat).
# Needs wat2wasm (Debian/Ubuntu: apt-get install wabt). The .wasm files are
# committed so the tests run without wabt; TestFixturesMatchSources checks
# they are current: byte for byte with the wat2wasm version in
# WAT2WASM_VERSION, by their disassembly (wasm2wat) with any other.
set -eu
cd "$(dirname "$0")"
for f in *.wat; do
	wat2wasm "$f" -o "${f%.wat}.wasm"
done
wat2wasm --version > WAT2WASM_VERSION
