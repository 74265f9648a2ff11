;; tablegrow.wat: fold grows a table declared with no maximum. With a state
;; (a little-endian u32 N ≥ 1) it grows the table once by N elements and
;; returns the table's new size as a little-endian u64; with no state, and
;; as a handler, it grows by 65536 elements at a time until table.grow
;; fails. A refused table.grow is reported as the guest error
;; "table.grow refused".
(module
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (data (i32.const 64) "table.grow refused")
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
  (func $grow (param $n i32) (result i64)
    (if (i32.eq (table.grow $t (ref.null func) (local.get $n)) (i32.const -1))
      (then
        (global.set $top (i32.const 1024))
        ;; ptr 64, length 18, error bit
        (return (i64.const 0x8000001200000040))))
    (i64.store (i32.const 16) (i64.extend_i32_u (table.size $t)))
    (global.set $top (i32.const 1024))
    ;; ptr 16, length 8
    (i64.const 0x0000000800000010))
  (func $flood (result i64)
    (loop $more
      (br_if $more (i32.ne (table.grow $t (ref.null func) (i32.const 65536)) (i32.const -1))))
    (global.set $top (i32.const 1024))
    (i64.const 0x8000001200000040))
  (func (export "batpak_fold") (param $sp i32) (param $sl i32) (param $bp i32) (param $bl i32) (result i64)
    (if (result i64) (i32.ge_u (local.get $sl) (i32.const 4))
      (then (call $grow (i32.load (local.get $sp))))
      (else (call $flood))))
  (func (export "batpak_handle") (param i32 i32) (result i64)
    (call $flood))
)
