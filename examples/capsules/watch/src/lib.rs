//! watch: an example capsule in Rust that receives bus events.
//!
//! It subscribes to `user.>` (`[bus] subscribe` in `Capsule.toml`). For each event it adds
//! one to the counter under key `seen` in its key-value namespace (decimal text), stores the
//! event's topic under key `last`, and publishes `watch.seen` with the payload
//! `{"topic": <topic>, "count": <the new count>}`.
//!
//! - `watch-count` replies the counter, an integer (0 before the first event).
//! - `watch-last` replies the topic of the last event seen, a string (`""` before the
//!   first).
//!
//! A host function that fails while handling an event is logged at warn level (the event is
//! then not counted, or not announced); in a command it makes the reply a command error,
//! `{"error": "<what failed>: code <n>"}`. The count lives in the key-value store, so it
//! survives the capsule's restarts. Build with `./build.sh`.

use astrid_capsule_sdk::host;
use astrid_capsule_sdk::{Command, Value, export_command, export_event};

/// The counter's key.
const SEEN: &str = "seen";
/// The last topic's key.
const LAST: &str = "last";
/// Where each event seen is announced.
const ANNOUNCE: &str = "watch.seen";

export_command!(handle);
export_event!(on_event);

fn handle(cmd: &Command) -> Result<Value, String> {
    match cmd.command.as_str() {
        "watch-count" => seen().map(Value::Int),
        "watch-last" => last().map(Value::Str),
        other => Err(format!("watch has no command `{other}`")),
    }
}

fn on_event(topic: &str, _payload: &Value) -> Result<(), String> {
    let count = seen()?.saturating_add(1);
    host::kv_put(SEEN, count.to_string().as_bytes()).map_err(|e| format!("kv_put {SEEN}: {e}"))?;
    host::kv_put(LAST, topic.as_bytes()).map_err(|e| format!("kv_put {LAST}: {e}"))?;
    let announcement = Value::Map(vec![
        ("topic".into(), topic.into()),
        ("count".into(), count.into()),
    ]);
    host::publish(ANNOUNCE, &announcement).map_err(|e| format!("publish {ANNOUNCE}: {e}"))
}

/// The counter, 0 when there is none yet.
fn seen() -> Result<i64, String> {
    match host::kv_get(SEEN).map_err(|e| format!("kv_get {SEEN}: {e}"))? {
        None => Ok(0),
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .ok_or_else(|| format!("the value of `{SEEN}` is not a decimal integer")),
    }
}

/// The last topic, `""` when there is none yet.
fn last() -> Result<String, String> {
    match host::kv_get(LAST).map_err(|e| format!("kv_get {LAST}: {e}"))? {
        None => Ok(String::new()),
        Some(bytes) => {
            String::from_utf8(bytes).map_err(|_| format!("the value of `{LAST}` is not UTF-8"))
        }
    }
}
