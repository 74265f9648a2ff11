;; slowok.wat: fold grows memory to 512 pages (32 MiB) and fills all of
;; it 8 times over in straight-line code (no loop or call the host could
;; interrupt), then returns an empty state: a call that succeeds long after
;; a short timeout.
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
    (if (i32.lt_u (memory.size) (i32.const 512))
      (then (drop (memory.grow (i32.sub (i32.const 512) (memory.size))))))
    (memory.fill (i32.const 0) (i32.const 1) (i32.mul (memory.size) (i32.const 65536)))
    (memory.fill (i32.const 0) (i32.const 2) (i32.mul (memory.size) (i32.const 65536)))
    (memory.fill (i32.const 0) (i32.const 3) (i32.mul (memory.size) (i32.const 65536)))
    (memory.fill (i32.const 0) (i32.const 4) (i32.mul (memory.size) (i32.const 65536)))
    (memory.fill (i32.const 0) (i32.const 5) (i32.mul (memory.size) (i32.const 65536)))
    (memory.fill (i32.const 0) (i32.const 6) (i32.mul (memory.size) (i32.const 65536)))
    (memory.fill (i32.const 0) (i32.const 7) (i32.mul (memory.size) (i32.const 65536)))
    (memory.fill (i32.const 0) (i32.const 8) (i32.mul (memory.size) (i32.const 65536)))
    (global.set $top (i32.const 1024))
    (i64.const 0))
  (func (export "batpak_handle") (param i32 i32) (result i64)
    (global.set $top (i32.const 1024))
    (i64.const 0))
)
