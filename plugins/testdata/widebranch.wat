;; widebranch.wat: counter.wat (a healthy projection) beside one function
;; never called whose block of 200 i64 results is entered by a br_if and by
;; a br_table of 2,000 targets: wazero copies the 200 values on every edge,
;; so this 5 KB module compiles to about 6 MB of machine code (a module's
;; size does not bound what it compiles to).
(module
  (memory (export "memory") 1)
  (func (export "batpak_abi_version") (result i32) (i32.const 1))
  ;; A bump allocator: inputs go above 1024 and the memory grows to fit;
  ;; reset at the end of each call.
  (global $top (mut i32) (i32.const 1024))
  (func $alloc (export "batpak_alloc") (param $n i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (local.set $p (global.get $top))
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535)) (i32.const 16)))
              (i32.const -1))
          (then unreachable))))
    (global.set $top (i32.and (i32.add (local.get $end) (i32.const 15)) (i32.const -16)))
    (local.get $p))
  (func (export "batpak_fold") (param $sp i32) (param $sl i32) (param $bp i32) (param $bl i32) (result i64)
    (local $n i64)
    (if (i32.ge_u (local.get $sl) (i32.const 8))
      (then (local.set $n (i64.load (local.get $sp)))))
    (local.set $n (i64.add (local.get $n)
      (i64.mul (i64.extend_i32_u (i32.load (local.get $bp))) (i64.const 1))))
    (i64.store (i32.const 16) (local.get $n))
    (global.set $top (i32.const 1024))
    ;; ptr 16, length 8
    (i64.const 0x0000000800000010))
  (func (export "batpak_handle") (param $bp i32) (param $bl i32) (result i64)
    (i64.store (i32.const 32) (i64.const 0))
    (global.set $top (i32.const 1024))
    ;; ptr 32, length 8: action continue, no reactions
    (i64.const 0x0000000800000020))
  (type $wide (func (result i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64)))
  (func $wide (param i32)
    block (type $wide)
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 i64.load
      local.get 0 br_if 0
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      drop
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0 i64.load offset=8
      local.get 0
      br_table 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
    end
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
    drop
  )
)
