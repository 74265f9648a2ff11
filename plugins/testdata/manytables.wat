;; manytables.wat: five tables of 16 elements, declared with no maximum,
;; and three globals (counting $top); fold returns the tables' total size
;; as a little-endian u64. Loaded with limits.tables ≥ 5 and limits.globals
;; ≥ 3, refused with fewer.
(module
  (memory (export "memory") 1)
  (table $a 16 funcref)
  (table $b 16 funcref)
  (table $c 16 funcref)
  (table $d 16 funcref)
  (table $e 16 funcref)
  (global $g1 i32 (i32.const 1))
  (global $g2 i32 (i32.const 2))
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
  (func (export "batpak_fold") (param i32 i32 i32 i32) (result i64)
    (i64.store (i32.const 16) (i64.extend_i32_u
      (i32.add (i32.add (i32.add (table.size $a) (table.size $b)) (i32.add (table.size $c) (table.size $d))) (table.size $e))))
    (global.set $top (i32.const 1024))
    (i64.const 0x0000000800000010))
  (func (export "batpak_handle") (param i32 i32) (result i64)
    (global.set $top (i32.const 1024))
    (i64.const 0))
)
