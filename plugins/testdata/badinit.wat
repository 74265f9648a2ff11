;; badinit.wat: a well-typed projection but for _initialize, which takes a
;; parameter the host has none to give (refused at load).
(module
  (memory (export "memory") 1)
  (func (export "_initialize") (param i32))
  (func (export "batpak_abi_version") (result i32) (i32.const 1))
  (func (export "batpak_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "batpak_fold") (param i32 i32 i32 i32) (result i64) (i64.const 0))
)
