;; logflood.wat: fold logs. With a state of little-endian u32s (lines, size
;; [, stream]) it writes `lines` lines of `size` (< 65536) bytes of "x",
;; through batpak.log (stream 0) or to stderr (stream 1). With no state it
;; writes, through both, a line that tries to forge the CLI's output with a
;; newline, ANSI escapes, NUL, invalid UTF-8, C1 and U+2028, then floods
;; batpak.log with 600 lines of 1 KiB. fold returns an empty state.
(module
  (import "batpak" "log" (func $log (param i32 i32 i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 3)
  (data (i32.const 256) "fold ok\0abatpak: state {\22total_cents\22:1}\0a\1b[31mRED\1b[0m\00nul\ff\c2\85\e2\80\a8end\0a")
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
  ;; $stderr writes [ptr, ptr+n) to fd 2.
  (func $stderr (param $ptr i32) (param $n i32)
    (i32.store (i32.const 32) (local.get $ptr))
    (i32.store (i32.const 36) (local.get $n))
    (drop (call $fd_write (i32.const 2) (i32.const 32) (i32.const 1) (i32.const 48))))
  ;; $lines writes $count lines of $size bytes of "x" to $stream.
  (func $lines (param $count i32) (param $size i32) (param $stream i32)
    (memory.fill (i32.const 65536) (i32.const 0x78) (local.get $size))
    (i32.store8 (i32.add (i32.const 65536) (local.get $size)) (i32.const 0x0a))
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $count)))
        (if (local.get $stream)
          (then (call $stderr (i32.const 65536) (i32.add (local.get $size) (i32.const 1))))
          (else (call $log (i32.const 1) (i32.const 65536) (local.get $size))))
        (local.set $count (i32.sub (local.get $count) (i32.const 1)))
        (br $more))))
  (func (export "batpak_fold") (param $sp i32) (param $sl i32) (param $bp i32) (param $bl i32) (result i64)
    (if (i32.ge_u (local.get $sl) (i32.const 8))
      (then
        (call $lines (i32.load (local.get $sp)) (i32.load offset=4 (local.get $sp))
          (if (result i32) (i32.ge_u (local.get $sl) (i32.const 12))
            (then (i32.load offset=8 (local.get $sp)))
            (else (i32.const 0)))))
      (else
        (call $log (i32.const 2) (i32.const 256) (i32.const 66))
        (call $stderr (i32.const 256) (i32.const 66))
        (call $lines (i32.const 600) (i32.const 1024) (i32.const 0))))
    (global.set $top (i32.const 1024))
    (i64.const 0))
  (func (export "batpak_handle") (param i32 i32) (result i64)
    (global.set $top (i32.const 1024))
    (i64.const 0))
)
