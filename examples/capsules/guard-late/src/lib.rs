//! guard-late: an example interceptor capsule in Rust, to go with `guard`.
//!
//! It intercepts every event on `user.guarded.>` at priority 20, so after `guard`
//! (priority 10): a string payload continues with `"!"` appended, anything else unchanged.
//! With both loaded, `"lower"` is delivered as `"LOWER!"` (guard rewrote it first), while
//! `"stop-here"` arrives as it is (guard finished the chain, so this one never sees it).
//!
//! `guard-late-info` replies a one-line description. Build with `./build.sh`.

use astrid_capsule_sdk::{Command, Value, Verdict, export_command, export_intercept};

export_command!(handle);
export_intercept!(decide);

fn handle(cmd: &Command) -> Result<Value, String> {
    match cmd.command.as_str() {
        "guard-late-info" => Ok(
            "guard-late intercepts user.guarded.> (priority 20): appends \"!\" to string payloads"
                .into(),
        ),
        other => Err(format!("guard-late has no command `{other}`")),
    }
}

fn decide(_topic: &str, payload: &Value) -> Verdict {
    match payload.as_str() {
        Some(text) => Verdict::Continue(Some(format!("{text}!").into())),
        None => Verdict::Continue(None),
    }
}
