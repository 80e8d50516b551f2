//! guard: an example interceptor capsule in Rust.
//!
//! It intercepts every event on `user.guarded.>` (`[[interceptor]]`, priority 10) before it
//! is delivered, and decides by the payload:
//!
//! | payload | verdict |
//! |---|---|
//! | the string `"forbidden"` | deny, reason `forbidden payload` (the publisher gets `forbidden`) |
//! | the string `"lower"` | continue with the payload `"LOWER"` |
//! | the string `"stop-here"` | finish: delivered as it is, later interceptors skipped |
//! | anything else | continue unchanged |
//!
//! `guard-info` replies a one-line description. It needs no capability but the
//! `bus:subscribe:user.guarded.>` grant that covers its interceptor. Build with `./build.sh`.

use astrid_capsule_sdk::{Command, Value, Verdict, export_command, export_intercept};

export_command!(handle);
export_intercept!(decide);

fn handle(cmd: &Command) -> Result<Value, String> {
    match cmd.command.as_str() {
        "guard-info" => Ok(
            "guard intercepts user.guarded.> (priority 10): denies \"forbidden\", \
             rewrites \"lower\" to \"LOWER\", finishes on \"stop-here\", lets the rest through"
                .into(),
        ),
        other => Err(format!("guard has no command `{other}`")),
    }
}

fn decide(_topic: &str, payload: &Value) -> Verdict {
    match payload.as_str() {
        Some("forbidden") => Verdict::Deny("forbidden payload".into()),
        Some("lower") => Verdict::Continue(Some("LOWER".into())),
        Some("stop-here") => Verdict::Finish(None),
        _ => Verdict::Continue(None),
    }
}
