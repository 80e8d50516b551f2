;; mcp-echo: the `mcp_call` host import from WAT. `astrid_command` ignores its input, asks the
;; MCP server `test` to run its tool `echo` with {"text": "from a capsule"}, and replies with
;; the tool's result as the host returned it (MessagePack: {server, tool, content, structured,
;; is_error}). When the host refuses (a negative code: -1 no capability, -2 no such server,
;; -3 bad request, -5 the server failed or the deadline passed), the reply is the guest
;; error {"error": "mcp_call failed: -N"}.
;;
;; Memory: a bump allocator from $heap, reset when a command returns. The host allocates the
;; input, then (inside `mcp_call`) the result; both stay valid until the host has read the
;; reply, which it does before the next call allocates again.
(module
  (import "astrid" "mcp_call" (func $mcp_call (param i32 i32) (result i64)))
  (memory (export "memory") 1)

  ;; The request, MessagePack: {"server": "test", "tool": "echo",
  ;;                            "arguments": {"text": "from a capsule"}} (54 bytes).
  (data (i32.const 64)
    "\83\a6server\a4test\a4tool\a4echo\a9arguments\81\a4text\aefrom a capsule")
  ;; The error reply, {"error": "mcp_call failed: -N"} (27 bytes); N is written at 154.
  (data (i32.const 128) "\81\a5error\b3mcp_call failed: -?")

  (global $heap i32 (i32.const 1024))
  (global $next (mut i32) (i32.const 1024))

  ;; Room for $len bytes, growing the memory when needed (trapping past the limit).
  (func (export "astrid_alloc") (param $len i32) (result i32)
    (local $at i32)
    (local $end i64)
    (local.set $at (global.get $next))
    (local.set $end (i64.add (i64.extend_i32_u (local.get $at)) (i64.extend_i32_u (local.get $len))))
    (if (i64.gt_u (local.get $end) (i64.const 0xffffffff)) (then unreachable))
    (block $fits
      (br_if $fits
        (i64.le_u (local.get $end) (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 16))))
      (if (i32.eq
            (memory.grow
              (i32.wrap_i64
                (i64.sub
                  (i64.shr_u (i64.add (local.get $end) (i64.const 0xffff)) (i64.const 16))
                  (i64.extend_i32_u (memory.size)))))
            (i32.const -1))
        (then unreachable)))
    (global.set $next (i32.wrap_i64 (local.get $end)))
    (local.get $at))

  (func (export "astrid_command") (param $ptr i32) (param $len i32) (result i64)
    (local $result i64)
    (local.set $result (call $mcp_call (i32.const 64) (i32.const 54)))
    (global.set $next (global.get $heap))
    (if (i64.lt_s (local.get $result) (i64.const 0))
      (then
        ;; '0' + -code: the codes are -1 to -5.
        (i32.store8 (i32.const 154)
          (i32.sub (i32.const 48) (i32.wrap_i64 (local.get $result))))
        (return (i64.or (i64.shl (i64.const 128) (i64.const 32)) (i64.const 27)))))
    (local.get $result)))
