;; badalloc.wat: batpak_alloc takes its size but returns nothing, so the
;; host would have no pointer to write an input at (refused at load: the
;; ABI's alloc is (i32) -> i32). Its start function touches 16 MiB, so an
;; instance the host failed to discard would be a large leak.
(module
  (memory (export "memory") 256 256)
  (func $touch (memory.fill (i32.const 0) (i32.const 1) (i32.const 16777216)))
  (start $touch)
  (func (export "batpak_abi_version") (result i32) (i32.const 1))
  (func (export "batpak_alloc") (param i32))
  (func (export "batpak_fold") (param i32 i32 i32 i32) (result i64) (i64.const 0))
)
