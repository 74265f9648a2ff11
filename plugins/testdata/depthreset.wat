;; wat2wasm flags: --no-check
;; depthreset.wat: declares no globals, yet writes global 0 — a module
;; that is not valid WebAssembly as written. Were the host to append its
;; call-depth counter as global 0 before validating, the module would
;; become valid and reset the counter at every level: fold(state=u32 D)
;; nests D calls and returns D; without a state it recurses without end.
;; Load must refuse it.
(module
  (memory (export "memory") 1)
  (func (export "batpak_abi_version") (result i32) (i32.const 1))
  (func (export "batpak_alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (i32.load (i32.const 0)))
    (if (i32.eqz (local.get $p)) (then (local.set $p (i32.const 1024))))
    (i32.store (i32.const 0) (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 15)) (i32.const -16)))
    (local.get $p))
  (func $to (param $n i32)
    (global.set 0 (i32.const 0))
    (if (i32.gt_u (local.get $n) (i32.const 1))
      (then (call $to (i32.sub (local.get $n) (i32.const 1))))))
  (func $down (param $n i64) (result i64)
    (local $a i64) (local $b i64) (local $c i64) (local $d i64)
    (global.set 0 (i32.const 0))
    (local.set $a (i64.add (local.get $n) (i64.const 1)))
    (local.set $b (i64.mul (local.get $a) (i64.const 3)))
    (local.set $c (i64.xor (local.get $b) (local.get $n)))
    (local.set $d (call $down (local.get $c)))
    (i64.add (local.get $d) (i64.add (local.get $a) (i64.add (local.get $b) (local.get $c)))))
  (func (export "batpak_fold") (param $sp i32) (param $sl i32) (param i32 i32) (result i64)
    (local $d i32)
    (if (i32.lt_u (local.get $sl) (i32.const 4))
      (then (drop (call $down (i64.const 0)))))
    (local.set $d (i32.load (local.get $sp)))
    (call $to (local.get $d))
    (i64.store (i32.const 16) (i64.extend_i32_u (local.get $d)))
    (i32.store (i32.const 0) (i32.const 0))
    (i64.const 0x0000000800000010))
  (func (export "batpak_handle") (param i32 i32) (result i64) (i64.const 0))
)
