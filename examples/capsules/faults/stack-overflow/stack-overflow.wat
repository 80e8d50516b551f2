;; stack-overflow: every command recurses without end (not a tail call: each
;; frame adds one to the result of the next), so the call overflows the stack and traps long
;; before it runs out of fuel: `capsule_crashed`, then a restart.
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

  (func $recurse (param $depth i32) (result i32)
    (i32.add
      (call $recurse (i32.add (local.get $depth) (i32.const 1)))
      (i32.const 1)))

  (func (export "astrid_command") (param $ptr i32) (param $len i32) (result i64)
    (i64.extend_i32_u (call $recurse (i32.const 0)))))
