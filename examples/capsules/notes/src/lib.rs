//! notes: an example capsule in Rust that keeps notes in a workspace file and counts them in
//! its key-value namespace.
//!
//! - `note-add TEXT...` appends the arguments, joined by spaces, as one line of
//!   `notes/notes.txt` in the workspace (line breaks in the text become spaces), adds one to
//!   the counter under key `notes` and replies the new count, an integer.
//! - `note-list` replies the content of `notes/notes.txt` as a string; `""` when there is no
//!   such file.
//! - `note-count` replies the counter, an integer (0 before the first note).
//!
//! The counter is stored as decimal text. It counts `note-add` calls; it is not recounted
//! from the file, which anyone with workspace access may edit.
//!
//! A host function that fails, other than with "not found", makes the reply a command error,
//! `{"error": "<what failed>: code <n>"}`: with the `kv` grant revoked, say,
//! `{"error": "kv_get notes: code -1"}`. The client sees `capsule_error`.

use astrid_capsule_sdk::host::{self, Level};
use astrid_capsule_sdk::{Command, Value, export_command};

/// The notes file, relative to the workspace.
const FILE: &str = "notes/notes.txt";
/// The counter's key.
const COUNTER: &str = "notes";

export_command!(handle);

fn handle(cmd: &Command) -> Result<Value, String> {
    host::log(
        Level::Info,
        &format!("/{} with {} argument(s)", cmd.command, cmd.args.len()),
    );
    match cmd.command.as_str() {
        "note-add" => add(&cmd.args).map(Value::Int),
        "note-list" => list().map(Value::Str),
        "note-count" => counter().map(Value::Int),
        other => Err(format!("notes has no command `{other}`")),
    }
}

fn add(args: &[String]) -> Result<i64, String> {
    let line = args.join(" ").replace(['\r', '\n'], " ");
    if line.trim().is_empty() {
        return Err("usage: note-add TEXT...".into());
    }
    let mut content = read()?;
    // Exactly the room needed: doubling would need three times the file in memory.
    content.reserve_exact(line.len() + 2);
    if !content.is_empty() && !content.ends_with(b"\n") {
        content.push(b'\n');
    }
    content.extend_from_slice(line.as_bytes());
    content.push(b'\n');
    host::vfs_write(FILE, &content).map_err(|e| format!("vfs_write {FILE}: {e}"))?;
    let count = counter()?.saturating_add(1);
    host::kv_put(COUNTER, count.to_string().as_bytes())
        .map_err(|e| format!("kv_put {COUNTER}: {e}"))?;
    Ok(count)
}

fn list() -> Result<String, String> {
    let content = read()?;
    Ok(String::from_utf8(content)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// The notes file's bytes; none when it does not exist.
fn read() -> Result<Vec<u8>, String> {
    let content = host::vfs_read(FILE).map_err(|e| format!("vfs_read {FILE}: {e}"))?;
    Ok(content.unwrap_or_default())
}

/// The counter; 0 when it was never set.
fn counter() -> Result<i64, String> {
    match host::kv_get(COUNTER).map_err(|e| format!("kv_get {COUNTER}: {e}"))? {
        None => Ok(0),
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .ok_or_else(|| format!("the value of `{COUNTER}` is not a decimal integer")),
    }
}
