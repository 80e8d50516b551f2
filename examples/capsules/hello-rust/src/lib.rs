//! hello-rust: an example capsule in Rust.
//!
//! - `hello [NAME...]` replies `"Hello, NAME...!"` (the arguments joined by spaces, or
//!   `world`), a MessagePack string.
//! - `count` adds one to the counter under key `count` in the capsule's key-value namespace
//!   (stored as decimal text, `"1"`, `"2"`...) and replies the new value, an integer. It
//!   needs the `kv` capability; without it the reply is `{"error": "kv_get count: code -1"}`.
//!
//! Each call logs one line at info level. Build with `./build.sh`.

use astrid_capsule_sdk::host::{self, Level};
use astrid_capsule_sdk::{Command, Value, export_command};

export_command!(handle);

fn handle(cmd: &Command) -> Result<Value, String> {
    host::log(
        Level::Info,
        &format!("/{} with {} argument(s)", cmd.command, cmd.args.len()),
    );
    match cmd.command.as_str() {
        "hello" => Ok(hello(&cmd.args).into()),
        "count" => count().map(Value::Int),
        other => Err(format!("hello-rust has no command `{other}`")),
    }
}

fn hello(args: &[String]) -> String {
    let name = if args.is_empty() {
        "world".to_owned()
    } else {
        args.join(" ")
    };
    format!("Hello, {name}!")
}

const COUNTER: &str = "count";

fn count() -> Result<i64, String> {
    let current = match host::kv_get(COUNTER).map_err(|e| format!("kv_get {COUNTER}: {e}"))? {
        None => 0,
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .ok_or_else(|| format!("the value of `{COUNTER}` is not a decimal integer"))?,
    };
    let next = current.saturating_add(1);
    host::kv_put(COUNTER, next.to_string().as_bytes())
        .map_err(|e| format!("kv_put {COUNTER}: {e}"))?;
    Ok(next)
}
