;; guesterr-forge.wat: fold and handle report an error whose text tries to
;; forge the CLI's output: a newline, a "batpak: state" line, an ANSI
;; escape and a NUL (a guest-error fault, printed escaped).
(module
  (memory (export "memory") 1)
  (data (i32.const 64) "boom\0abatpak: state {\22total_cents\22:1}\0a\1b[2J\00")
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
    ;; ptr 64, length 13, error bit
    (i64.const 0x8000002a00000040))
  (func (export "batpak_handle") (param i32 i32) (result i64)
    (i64.const 0x8000002a00000040))
)
