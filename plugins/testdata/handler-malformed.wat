;; handler-malformed.wat: a handler whose answer breaks the ABI in the way
;; the batch's first event's kind selects, when its category is 3 (kinds
;; 0x3001..0x3005; anything else gets a valid answer):
;;   1  action 7 (neither continue nor stop)
;;   2  a reaction whose entity length runs past the end of the output
;;   3  a result pointer outside the module's memory
;;   4  a reaction naming source event 99 of a shorter batch
;;   5  an output of 4 bytes (shorter than action and count)
;;   other kinds: continue, no reactions (a valid answer)
(module
  (memory (export "memory") 1)
  (data (i32.const 64) "\07\00\00\00\00\00\00\00")
  (data (i32.const 80) "\00\00\00\00\01\00\00\00" "\00\00\00\00\01\20\e8\03\00\00\00\00\00\00\00\00")
  (data (i32.const 112) "\00\00\00\00\01\00\00\00" "\63\00\00\00\01\20\04\00\06\00\00\00\02\00\00\00" "echoplugin{}")
  (data (i32.const 160) "\00\00\00\00")
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
  (func (export "batpak_handle") (param $bp i32) (param $bl i32) (result i64)
    (local $kind i32) (local $type i32)
    (global.set $top (i32.const 1024))
    (if (i32.eqz (i32.load (local.get $bp)))
      (then (return (i64.const 0x0000000800000020))))
    ;; batch: count u32 | size u32 | seq u64 | clock u64 | ts i64 | kind u16 …
    (local.set $kind (i32.load16_u offset=32 (local.get $bp)))
    (if (i32.ne (i32.shr_u (local.get $kind) (i32.const 12)) (i32.const 3))
      (then (return (i64.const 0x0000000800000020))))
    (local.set $type (i32.and (local.get $kind) (i32.const 0xfff)))
    (if (i32.eq (local.get $type) (i32.const 1)) (then (return (i64.const 0x0000000800000040))))
    (if (i32.eq (local.get $type) (i32.const 2)) (then (return (i64.const 0x0000001800000050))))
    (if (i32.eq (local.get $type) (i32.const 3)) (then (return (i64.const 0x00000040fffffff0))))
    (if (i32.eq (local.get $type) (i32.const 4)) (then (return (i64.const 0x0000002400000070))))
    (if (i32.eq (local.get $type) (i32.const 5)) (then (return (i64.const 0x00000004000000a0))))
    ;; ptr 32 (zeros), length 8: continue, no reactions
    (i64.const 0x0000000800000020))
)
