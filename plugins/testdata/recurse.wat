;; recurse.wat: fold and handle recurse without end (each frame holds a few
;; locals), until the call stack runs out (a stack fault). Given a state (a
;; little-endian u32 D ≥ 2), fold instead nests exactly D calls, itself
;; included, and returns D as a little-endian u64.
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
  (func $down (param $n i64) (result i64)
    (local $a i64) (local $b i64) (local $c i64) (local $d i64)
    (local.set $a (i64.add (local.get $n) (i64.const 1)))
    (local.set $b (i64.mul (local.get $a) (i64.const 3)))
    (local.set $c (i64.xor (local.get $b) (local.get $n)))
    (local.set $d (call $down (local.get $c)))
    (i64.add (local.get $d) (i64.add (local.get $a) (i64.add (local.get $b) (local.get $c)))))
  ;; $to nests n calls: itself, then n-1 more.
  (func $to (param $n i32)
    (if (i32.gt_u (local.get $n) (i32.const 1))
      (then (call $to (i32.sub (local.get $n) (i32.const 1))))))
  (func (export "batpak_fold") (param $sp i32) (param $sl i32) (param i32 i32) (result i64)
    (local $d i32)
    (if (i32.lt_u (local.get $sl) (i32.const 4))
      (then (drop (call $down (i64.const 0)))))
    (local.set $d (i32.load (local.get $sp)))
    (call $to (i32.sub (local.get $d) (i32.const 1)))
    (i64.store (i32.const 16) (i64.extend_i32_u (local.get $d)))
    (global.set $top (i32.const 1024))
    ;; ptr 16, length 8
    (i64.const 0x0000000800000010))
  (func (export "batpak_handle") (param i32 i32) (result i64)
    (drop (call $down (i64.const 0)))
    (i64.const 0))
)
