;; wasi-sock.wat: a projection that tries the network. Its state is the
;; WASI errnos it got, as little-endian u32s:
;;   sock_accept(fd 3)      a preopened listener would be fd 3
;;   sock_send(fd 3)
;;   sock_recv(fd 3)
;;   sock_shutdown(fd 3)
;;   sock_send(fd 1)        stdout exists but is not a socket
;; In batpak's sandbox all are EBADF (8): there are no sockets.
(module
  (import "wasi_snapshot_preview1" "sock_accept"
    (func $sock_accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send"
    (func $sock_send (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv"
    (func $sock_recv (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_shutdown"
    (func $sock_shutdown (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello")
  ;; one iovec at 144: buf 64, len 5
  (data (i32.const 144) "\40\00\00\00\05\00\00\00")
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
    (i32.store (i32.const 16) (call $sock_accept (i32.const 3) (i32.const 0) (i32.const 128)))
    (i32.store (i32.const 20)
      (call $sock_send (i32.const 3) (i32.const 144) (i32.const 1) (i32.const 0) (i32.const 152)))
    (i32.store (i32.const 24)
      (call $sock_recv (i32.const 3) (i32.const 144) (i32.const 1) (i32.const 0) (i32.const 152) (i32.const 156)))
    (i32.store (i32.const 28) (call $sock_shutdown (i32.const 3) (i32.const 3)))
    (i32.store (i32.const 32)
      (call $sock_send (i32.const 1) (i32.const 144) (i32.const 1) (i32.const 0) (i32.const 152)))
    (global.set $top (i32.const 1024))
    ;; ptr 16, length 20
    (i64.const 0x0000001400000010))
)
