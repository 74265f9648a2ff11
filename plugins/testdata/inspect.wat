;; inspect.wat: a module for plugins.Inspect with something to report in
;; every field: WASI and batpak.log imports, a memory with a declared
;; maximum, a handler export only, and an ABI version that _initialize sets
;; (so it reads 1 only if _initialize ran first, as a Go guest needs).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (import "batpak" "log" (func (param i32 i32 i32)))
  (memory (export "memory") 2 16)
  (global $version (mut i32) (i32.const 0))
  (func (export "_initialize") (global.set $version (i32.const 1)))
  (func (export "batpak_abi_version") (result i32) (global.get $version))
  (func (export "batpak_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "batpak_handle") (param i32 i32) (result i64) (i64.const 0))
)
