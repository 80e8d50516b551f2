//! notify: an example capsule in Rust using its settings (`config_get`, ABI 1.1), one of
//! them a secret, with `http_request`.
//!
//! `notify TEXT...` posts `{"text": "<prefix>TEXT..."}` as JSON to the webhook at the
//! setting `url`, with `Authorization: Bearer <token>` (the secret setting `token`), and
//! replies `{status, id}` (`id`: a random hex string the request carries as
//! `X-Request-Id`, from `random_fill`) or an error. While `url` or `token` is unset, the
//! call fails with a message naming the `astrid settings set` command to run. Build with
//! `./build.sh`.

use std::fmt::Write as _;

use astrid_capsule_sdk::host::{self, HttpRequest};
use astrid_capsule_sdk::{Command, Value, export_command};

export_command!(handle);

fn handle(cmd: &Command) -> Result<Value, String> {
    match cmd.command.as_str() {
        "notify" => notify(&cmd.args.join(" ")),
        other => Err(format!("notify has no command `{other}`")),
    }
}

fn setting(key: &str) -> Result<String, String> {
    host::config_get(key).map_err(|e| format!("config_get {key}: {e}"))
}

fn notify(text: &str) -> Result<Value, String> {
    let url = setting("url")?;
    let token = setting("token")?;
    let prefix = setting("prefix")?;
    let mut id = [0u8; 8];
    host::random_fill(&mut id).map_err(|e| format!("random_fill: {e}"))?;
    let id = id.iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    let request = HttpRequest {
        method: "POST".into(),
        url: url.clone(),
        headers: vec![
            ("authorization".into(), format!("Bearer {token}")),
            ("content-type".into(), "application/json".into()),
            ("x-request-id".into(), id.clone()),
        ],
        body: json_text(&format!("{prefix}{text}")).into_bytes(),
        timeout_ms: None,
    };
    let response = host::http_request(&request).map_err(|e| format!("POST {url}: {e}"))?;
    Ok(Value::Map(vec![
        ("status".into(), Value::Int(i64::from(response.status))),
        ("id".into(), Value::Str(id)),
    ]))
}

/// `{"text": "..."}` with `text` escaped as a JSON string.
fn json_text(text: &str) -> String {
    let mut out = String::from("{\"text\": \"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push_str("\"}");
    out
}
