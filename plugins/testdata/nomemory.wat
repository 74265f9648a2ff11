;; nomemory.wat: follows the ABI's exports but defines no linear memory, so
;; there is nowhere to pass inputs (refused at load).
(module
  (func (export "batpak_abi_version") (result i32) (i32.const 1))
  (func (export "batpak_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "batpak_fold") (param i32 i32 i32 i32) (result i64) (i64.const 0))
)
