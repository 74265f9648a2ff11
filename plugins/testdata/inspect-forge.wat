;; A module whose import names carry escape sequences, carriage returns
;; and newlines that would forge lines in batpak plugin inspect's output.
(module
  (import "\1b[2K\0dbatpak: state {\22forged\22:1}\0a" "f\0a\1b[31m" (func))
  (memory (export "memory") 1)
  (func (export "batpak_abi_version") (result i32) (i32.const 1))
  (func (export "batpak_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "batpak_fold") (param i32 i32 i32 i32) (result i64) (i64.const 0))
)
