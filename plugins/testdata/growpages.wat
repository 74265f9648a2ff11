;; growpages.wat: fold grows linear memory one page at a time until it has
;; N pages (N: the little-endian u32 in the state's first 4 bytes) and
;; returns memory.size as a little-endian u64; when memory.grow fails it
;; traps (a memory fault, the host having refused the growth).
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
    (local $want i32)
    (if (i32.ge_u (local.get $sl) (i32.const 4))
      (then (local.set $want (i32.load (local.get $sp)))))
    (block $done
      (loop $more
        (br_if $done (i32.ge_u (memory.size) (local.get $want)))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1))
          (then unreachable))
        (br $more)))
    (i64.store (i32.const 16) (i64.extend_i32_u (memory.size)))
    (global.set $top (i32.const 1024))
    (i64.const 0x0000000800000010))
  (func (export "batpak_handle") (param i32 i32) (result i64)
    (global.set $top (i32.const 1024))
    (i64.const 0))
)
