#!/bin/sh
# Builds c-counter.wasm (or the path given as $1) from counter.c.
# Needs clang and wasm-ld (Debian/Ubuntu: apt-get install clang lld).
# Freestanding: no libc, so no wasi-libc or compiler-rt for wasm32 is needed.
# --target=wasm32 (not wasm32-wasi) looks for no WASI sysroot, and
# -ffreestanding makes clang's own <stdint.h> stand alone instead of
# including the host's C library headers, which do not fit wasm32.
# (counter.c also names its exports with export_name, which exports
# _initialize; the --export flags list the ABI's functions for the reader.)
set -eu
cd "$(dirname "$0")"
out="${1:-c-counter.wasm}"
"${CC:-clang}" --target=wasm32 -ffreestanding -O2 -nostdlib \
	-Wl,--no-entry \
	-Wl,--export=batpak_abi_version \
	-Wl,--export=batpak_alloc \
	-Wl,--export=batpak_fold \
	-Wl,--strip-all \
	-o "$out" counter.c
