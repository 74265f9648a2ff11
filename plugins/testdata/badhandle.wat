;; badhandle.wat: batpak_handle returns an i32, not the ABI's packed i64
;; (refused at load as a handler).
(module
  (memory (export "memory") 1)
  (func (export "batpak_abi_version") (result i32) (i32.const 1))
  (func (export "batpak_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "batpak_handle") (param i32 i32) (result i32) (i32.const 0))
)
