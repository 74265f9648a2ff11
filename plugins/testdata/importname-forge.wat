;; A plugin whose import names try to forge CLI output lines (newlines,
;; ANSI escapes): a module the host refuses, whose error must print as
;; one escaped line.
(module
  (import "x\0abatpak: state {\22forged\22:1}\0a" "f\0a\1b[31m" (func))
  (memory (export "memory") 1)
  (func (export "batpak_abi_version") (result i32) (i32.const 1))
  (func (export "batpak_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "batpak_fold") (param i32 i32 i32 i32) (result i64) (i64.const 0))
)
