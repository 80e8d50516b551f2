//! fetch: an example capsule in Rust using the `http_request` import (ABI 1.1).
//!
//! `fetch URL` makes a `GET` request and replies `{status, length, start}`: the status, the
//! body's length, and its first 256 bytes as text (invalid UTF-8 replaced). Only the sites
//! its grants name can be reached (`net:http:...` in `Capsule.toml`, or granted at run time);
//! any other URL is `{"error": "GET URL: code -1"}`, and the denial is audited. Build with
//! `./build.sh`.

use astrid_capsule_sdk::host::{self, HttpRequest};
use astrid_capsule_sdk::{Command, Value, export_command};

export_command!(handle);

/// How much of the body the reply shows.
const START: usize = 256;

fn handle(cmd: &Command) -> Result<Value, String> {
    match cmd.command.as_str() {
        "fetch" => {
            let [url] = cmd.args.as_slice() else {
                return Err("usage: fetch URL".into());
            };
            fetch(url)
        }
        other => Err(format!("fetch has no command `{other}`")),
    }
}

fn fetch(url: &str) -> Result<Value, String> {
    let request = HttpRequest {
        url: url.to_owned(),
        ..HttpRequest::default()
    };
    let response = host::http_request(&request).map_err(|e| format!("GET {url}: {e}"))?;
    let start = &response.body[..response.body.len().min(START)];
    Ok(Value::Map(vec![
        ("status".into(), Value::Int(i64::from(response.status))),
        (
            "length".into(),
            Value::Int(i64::try_from(response.body.len()).unwrap_or(i64::MAX)),
        ),
        (
            "start".into(),
            Value::Str(String::from_utf8_lossy(start).into_owned()),
        ),
    ]))
}
