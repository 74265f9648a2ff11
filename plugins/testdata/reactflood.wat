;; reactflood.wat: a handler answering each batch with 20,000 tiny reactions
;; to source 0 (entity "e", scope "s", payload empty; 18 bytes each): over
;; the default limits.max_reactions of 16,384, which faults it before the
;; answer is read.
(module
  (memory (export "memory") 300)
  (func (export "batpak_abi_version") (result i32) (i32.const 1))
  (func (export "batpak_alloc") (param $n i32) (result i32) (i32.const 65536))
  (func (export "batpak_handle") (param $bp i32) (param $bl i32) (result i64)
    (local $i i32) (local $p i32) (local $k i32)
    (local.set $k (i32.const 20000))
    (local.set $p (i32.const 2097152))
    (i32.store (local.get $p) (i32.const 0))
    (i32.store offset=4 (local.get $p) (local.get $k))
    (local.set $p (i32.add (local.get $p) (i32.const 8)))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $k)))
        (i32.store (local.get $p) (i32.const 0))
        (i32.store16 offset=4 (local.get $p) (i32.const 0x2001))
        (i32.store16 offset=6 (local.get $p) (i32.const 1))
        (i32.store16 offset=8 (local.get $p) (i32.const 1))
        (i32.store16 offset=10 (local.get $p) (i32.const 0))
        (i32.store offset=12 (local.get $p) (i32.const 0))
        (i32.store8 offset=16 (local.get $p) (i32.const 101))
        (i32.store8 offset=17 (local.get $p) (i32.const 115))
        (local.set $p (i32.add (local.get $p) (i32.const 18)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    (i64.or (i64.const 2097152)
      (i64.shl (i64.extend_i32_u (i32.sub (local.get $p) (i32.const 2097152))) (i64.const 32))))
)
