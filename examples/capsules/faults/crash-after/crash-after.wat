;; crash-after: calls 1 to 3 reply with the call count (a MessagePack positive
;; fixint, one byte: 0x01, 0x02, 0x03); call 4 traps. The count lives in a global of the
;; instance, so the fresh instance the host starts after the crash counts from 1 again.
(module
  (memory (export "memory") 1)

  ;; The allocator of echo.wat: every call gets the same bytes at address 16 (this
  ;; capsule imports nothing, so there is one allocation per call), the memory grown first
  ;; when they do not fit.
  (func (export "astrid_alloc") (param $len i32) (result i32)
    (local $pages i64)
    (local.set $pages
      (i64.shr_u (i64.add (i64.add (i64.const 16) (i64.extend_i32_u (local.get $len)))
                          (i64.const 0xffff))
                 (i64.const 16)))
    (if (i64.gt_u (local.get $pages) (i64.extend_i32_u (memory.size)))
      (then
        (if (i32.eq (memory.grow (i32.wrap_i64 (i64.sub (local.get $pages)
                                                        (i64.extend_i32_u (memory.size)))))
                    (i32.const -1))
          (then unreachable))))
    (i32.const 16))

  ;; Calls so far, this one included.
  (global $calls (mut i32) (i32.const 0))

  ;; Where the one-byte reply is written (below the allocator's address 16).
  (global $reply i32 (i32.const 8))

  (func (export "astrid_command") (param $ptr i32) (param $len i32) (result i64)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (if (i32.ge_u (global.get $calls) (i32.const 4))
      (then unreachable))
    ;; 0x01..0x03 is the MessagePack positive fixint of the same value.
    (i32.store8 (global.get $reply) (global.get $calls))
    (i64.or
      (i64.shl (i64.extend_i32_u (global.get $reply)) (i64.const 32))
      (i64.const 1))))
