;; storm.wat is examples/capsules/echo/echo.wat, unchanged.
;;
;; echo: the smallest useful capsule. `astrid_command` replies with its input, unchanged, so
;; the reply to `/echo a b` is the input map itself: {"command": "echo", "args": ["a", "b"]}.
;;
;; Memory: a one-slot bump allocator. Every `astrid_alloc` hands out the same address
;; ($base), growing the memory first when the request does not fit, so a capsule that
;; answers millions of calls never uses more than its largest input. This is only correct
;; because echo imports nothing: the host allocates once per call (the input), then calls
;; `astrid_command`, and the reply (the input itself) is read before the next call's
;; `astrid_alloc`. A capsule that calls `kv_get` or `vfs_read` gets a second allocation in
;; the middle of a call and needs an allocator that does not hand out the same bytes twice.
(module
  (memory (export "memory") 1)

  ;; Where every allocation starts. Low addresses are left alone so that 0 is never a
  ;; valid reply address.
  (global $base i32 (i32.const 16))

  ;; Room for $len bytes at $base; traps (as an allocator abort would) when the memory
  ;; cannot grow that far (past `limits.memory_pages`).
  (func (export "astrid_alloc") (param $len i32) (result i32)
    (local $pages i64)
    ;; Pages needed for $base + $len bytes, computed in 64 bits so a huge $len cannot wrap.
    (local.set $pages
      (i64.shr_u
        (i64.add
          (i64.add (i64.extend_i32_u (global.get $base)) (i64.extend_i32_u (local.get $len)))
          (i64.const 0xffff))
        (i64.const 16)))
    (if (i64.gt_u (local.get $pages) (i64.extend_i32_u (memory.size)))
      (then
        (if (i32.eq
              (memory.grow (i32.wrap_i64 (i64.sub (local.get $pages)
                                                  (i64.extend_i32_u (memory.size)))))
              (i32.const -1))
          (then unreachable))))
    (global.get $base))

  ;; The reply is the input: `ptr << 32 | len`.
  (func (export "astrid_command") (param $ptr i32) (param $len i32) (result i64)
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len)))))
