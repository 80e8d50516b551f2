;; forget: every command answers the MessagePack integer 0 (the single byte 0x00) and keeps
;; nothing, so `forget-add` acknowledges notes that `forget-count` never counts.
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

  ;; The one-byte reply, 0x00, at address 8 (below the allocator's address 16).
  (func (export "astrid_command") (param $ptr i32) (param $len i32) (result i64)
    (i32.store8 (i32.const 8) (i32.const 0))
    (i64.or (i64.shl (i64.const 8) (i64.const 32)) (i64.const 1))))
