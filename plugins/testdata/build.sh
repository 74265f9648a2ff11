#!/bin/sh
# Rebuilds the fault fixtures (*.wasm) from their WebAssembly text (*.wat).
# Needs wat2wasm (Debian/Ubuntu: apt-get install wabt). The .wasm files are
# committed so the tests run without wabt; TestFixturesMatchSources checks
# they are current: byte for byte with the wat2wasm version in
# WAT2WASM_VERSION, by their disassembly (wasm2wat) with any other. A
# fixture whose first line is ";; wat2wasm flags: F" is built with flags F
# (--no-check: a module that is not valid as written, which Load refuses).
set -eu
cd "$(dirname "$0")"
for f in *.wat; do
	flags=$(sed -n '1s/^;; wat2wasm flags: //p' "$f")
	# shellcheck disable=SC2086 # flags are words
	wat2wasm $flags "$f" -o "${f%.wat}.wasm"
done
wat2wasm --version > WAT2WASM_VERSION
