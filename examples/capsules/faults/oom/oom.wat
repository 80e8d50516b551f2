;; oom: every command grows the memory a page at a time until `memory.grow` refuses
;; (returns -1, at `limits.memory_pages`: 32 here), then traps with `unreachable`, as a real
;; allocator aborts when it is out of memory: `capsule_crashed`, then a restart (a fresh
;; instance, with its memory back at one page).
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

  (func (export "astrid_command") (param $ptr i32) (param $len i32) (result i64)
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable))
