;; slowsmall.wat: fold fills its one page of memory 3,000 times over in a
;; loop (~200 MB of stores), then returns an empty state: a slow call that
;; succeeds within one page, so the host splits a batch of large events
;; into many such calls.
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
  (func (export "batpak_fold") (param i32 i32 i32 i32) (result i64)
    (local $i i32)
    (loop $again
      (memory.fill (i32.const 0) (local.get $i) (i32.const 65536))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 3000))))
    (global.set $top (i32.const 1024))
    (i64.const 0))
  (func (export "batpak_handle") (param i32 i32) (result i64)
    (global.set $top (i32.const 1024))
    (i64.const 0))
)
