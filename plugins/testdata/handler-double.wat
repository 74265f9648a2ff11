;; handler-double.wat: a handler that answers every batch with continue
;; and two reactions per event: kind 0x2001 at entity "echo", scope
;; "plugin", payload {} (the reactions to one event are one batch of 2).
(module
  (memory (export "memory") 1)
  (data (i32.const 64) "echoplugin{}")
  (func (export "batpak_abi_version") (result i32)
    (i32.const 1))
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
    (local $n i32) (local $i i32) (local $out i32) (local $p i32)
    (local.set $n (i32.load (local.get $bp)))
    ;; output: action u32 | count u32 | 2n × (16 fixed + "echo" "plugin" "{}")
    (local.set $out (call $alloc (i32.add (i32.const 8) (i32.mul (local.get $n) (i32.const 56)))))
    (i32.store (local.get $out) (i32.const 0))
    (i32.store offset=4 (local.get $out) (i32.shl (local.get $n) (i32.const 1)))
    (local.set $p (i32.add (local.get $out) (i32.const 8)))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (i32.shl (local.get $n) (i32.const 1))))
        (i32.store (local.get $p) (i32.shr_u (local.get $i) (i32.const 1))) ;; source
        (i32.store16 offset=4 (local.get $p) (i32.const 0x2001))     ;; kind
        (i32.store16 offset=6 (local.get $p) (i32.const 4))          ;; entity length
        (i32.store16 offset=8 (local.get $p) (i32.const 6))          ;; scope length
        (i32.store16 offset=10 (local.get $p) (i32.const 0))         ;; reserved
        (i32.store offset=12 (local.get $p) (i32.const 2))           ;; payload length
        (i64.store offset=16 (local.get $p) (i64.load (i32.const 64)))
        (i32.store offset=24 (local.get $p) (i32.load (i32.const 72)))
        (local.set $p (i32.add (local.get $p) (i32.const 28)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    (global.set $top (i32.const 1024))
    (i64.or (i64.extend_i32_u (local.get $out))
      (i64.shl (i64.extend_i32_u (i32.sub (local.get $p) (local.get $out))) (i64.const 32))))
)
