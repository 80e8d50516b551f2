//! The wire protocol against a real daemon process, frame by frame: handshake refusals
//! (wrong token, wrong version, no handshake, handshake timeout, peers of another uid),
//! framing errors (garbage, truncated, empty and oversized frames), malformed and unknown
//! requests, disconnects in the middle of a request, many clients at once, pipelining and
//! out-of-order replies, the call deadline, topic rules, subscriptions and events (raw and
//! with the async `Client`), fault-injection gating, and the shape of every query's result.
//!
//! After every bad input the test checks both that the offending connection got the
//! documented structured error (or a clean close) and that the daemon still serves a fresh
//! connection.

use crate::common;

use std::collections::HashMap;
use std::io::Write;
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{DEADLINE, Raw, TestDaemon, error_code, get, wait_until};
use astrid::protocol::{
    CapsuleInfo, CapsuleMetadata, CapsuleOrigin, CapsuleState, ChildState, CommandInfo, ErrorCode,
    Event, FaultInjected, NodeKind, Published, RawValue, ReloadReport, Request, Status, Subscribed,
    TreeNode, TrustReport, Unsubscribed,
};
use rmpv::Value;

/// The built-in capsule every daemon lists.
const CLI_CAPSULE: &str = "astrid-capsule-cli";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A MessagePack map with string keys, in the given order.
fn map(entries: &[(&str, Value)]) -> Value {
    Value::Map(
        entries
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    )
}

/// `value` as MessagePack bytes.
fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).unwrap();
    out
}

/// `body` with its 4-byte big-endian length prefix, for writing several frames at once.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// `{"id": id, "request": request}`.
fn req(id: u64, request: Value) -> Value {
    map(&[("id", Value::from(id)), ("request", request)])
}

/// A request variant with fields: `{name: {fields...}}`.
fn variant(name: &str, fields: &[(&str, Value)]) -> Value {
    map(&[(name, map(fields))])
}

/// `{"Publish": {"topic": topic, "payload": payload}}`.
fn publish(topic: &str, payload: Value) -> Value {
    variant("Publish", &[("topic", topic.into()), ("payload", payload)])
}

/// `{"InjectFault": {"target": target, "fault": fault}}`.
fn inject(target: &str, fault: Value) -> Value {
    variant(
        "InjectFault",
        &[("target", target.into()), ("fault", fault)],
    )
}

/// The fault `{"hang": {"millis": millis}}`.
fn hang(millis: u64) -> Value {
    variant("hang", &[("millis", millis.into())])
}

/// Whether the map `frame` has `key` at all (as opposed to a nil value).
fn has(frame: &Value, key: &str) -> bool {
    frame
        .as_map()
        .is_some_and(|m| m.iter().any(|(k, _)| k.as_str() == Some(key)))
}

/// The `error.message` of a frame.
fn error_message(frame: &Value) -> &str {
    get(get(frame, "error"), "message").as_str().unwrap_or("")
}

/// Asserts an error frame: the code, a non-empty message, no result, and the id echoed
/// (`Some`) or absent (`None`, a connection-level error).
fn assert_error(frame: &Value, id: Option<u64>, code: &str) {
    assert_eq!(error_code(frame), Some(code), "{frame}");
    assert!(
        !error_message(frame).is_empty(),
        "an error needs a message: {frame}"
    );
    assert!(!has(frame, "result"), "{frame}");
    match id {
        Some(id) => assert_eq!(get(frame, "id").as_u64(), Some(id), "{frame}"),
        None => assert!(!has(frame, "id"), "no id expected: {frame}"),
    }
}

/// Asserts a handshake refusal: `{"ok": false, "error": {code, message}}` and nothing else.
fn assert_refused(frame: &Value, code: &str) {
    assert_eq!(get(frame, "ok"), &Value::Boolean(false), "{frame}");
    assert_error(frame, None, code);
    for key in ["protocol", "daemon", "session", "connection"] {
        assert!(!has(frame, key), "a refusal carries no `{key}`: {frame}");
    }
}

/// Asserts a successful reply to `id` and returns its result.
fn assert_ok(frame: &Value, id: u64) -> &Value {
    assert_eq!(get(frame, "id").as_u64(), Some(id), "{frame}");
    assert!(!has(frame, "error"), "{frame}");
    assert!(has(frame, "result"), "{frame}");
    get(frame, "result")
}

/// Asserts that the daemon closes `raw` with no further frame.
fn assert_closed(raw: &mut Raw) {
    if let Some(frame) = raw.recv() {
        panic!("expected the daemon to close the connection, got {frame}");
    }
}

/// Sends `request` as `id` and returns the reply, skipping event frames.
fn call(raw: &mut Raw, id: u64, request: Value) -> Value {
    raw.request(id, request);
    loop {
        let frame = raw.recv().expect("the daemon closed instead of replying");
        if !has(&frame, "event") {
            return frame;
        }
    }
}

/// A Ping on `raw` gets `"pong"`.
fn assert_pong(raw: &mut Raw, id: u64) {
    let reply = call(raw, id, "Ping".into());
    assert_eq!(assert_ok(&reply, id).as_str(), Some("pong"), "{reply}");
}

/// The daemon is alive and a fresh connection's Ping gets `"pong"`.
fn assert_serves(d: &mut TestDaemon) {
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon exited: {}",
        d.stderr()
    );
    let mut raw = d.raw();
    assert_pong(&mut raw, 4242);
}

/// A fresh connection after the handshake, with the daemon's welcome.
fn connect(d: &TestDaemon) -> (Raw, Value) {
    let mut raw = Raw::connect(&d.socket());
    let welcome = raw.hello(&d.token(), 1);
    assert_eq!(get(&welcome, "ok"), &Value::Boolean(true), "{welcome}");
    (raw, welcome)
}

/// Decodes a MessagePack value into a protocol type, as the client library does (from bytes:
/// `rmpv::ext` does not read externally tagged enums).
fn decode<T: serde::de::DeserializeOwned>(value: &Value) -> T {
    rmp_serde::from_slice(&encode(value)).unwrap_or_else(|e| panic!("{e}: {value}"))
}

/// Decodes a reply's result into a protocol type.
fn result_as<T: serde::de::DeserializeOwned>(frame: &Value, id: u64) -> T {
    decode(assert_ok(frame, id))
}

/// Hangs the bus of a daemon started with `--allow-fault-injection` for `millis`.
fn hang_bus(d: &TestDaemon, millis: u64) {
    let mut ctl = d.raw();
    let reply = call(&mut ctl, 1, inject("bus", hang(millis)));
    let injected: FaultInjected = result_as(&reply, 1);
    assert_eq!(injected.target, "bus");
}

/// Runs a status query on `raw`.
fn status(raw: &mut Raw, id: u64) -> Status {
    let reply = call(raw, id, "GetStatus".into());
    result_as(&reply, id)
}

// ---------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------

#[test]
fn a_wrong_token_is_refused_as_unauthorized_then_closed() {
    let mut d = TestDaemon::builder().start();
    let token = d.token();
    for wrong in [
        "0".repeat(64),
        String::new(),
        token[..63].to_owned(),
        format!("{token}\n"),
    ] {
        let mut raw = Raw::connect(&d.socket());
        let reply = raw.hello(&wrong, 1);
        assert_refused(&reply, "unauthorized");
        // The message deliberately says nothing about the token.
        assert_eq!(error_message(&reply), "authentication failed");
        assert_closed(&mut raw);
    }
    assert_serves(&mut d);
}

#[test]
fn a_wrong_protocol_version_is_refused_before_the_token_is_checked() {
    let mut d = TestDaemon::builder().start();
    let token = d.token();
    for (token, version) in [(token.as_str(), 2), ("wrong-token", 2), (token.as_str(), 0)] {
        let mut raw = Raw::connect(&d.socket());
        let reply = raw.hello(token, version);
        assert_refused(&reply, "protocol_mismatch");
        let message = error_message(&reply);
        assert!(message.contains(&format!("version {version}")), "{message}");
        assert_closed(&mut raw);
    }
    assert_serves(&mut d);
}

#[test]
fn a_first_frame_that_is_not_a_handshake_is_refused_then_closed() {
    let mut d = TestDaemon::builder().start();
    let token = d.token();
    let bodies = [
        // A request before the handshake.
        encode(&req(1, "Ping".into())),
        // Not a map at all.
        encode(&Value::from(42)),
        // A handshake missing `client`.
        encode(&map(&[
            ("token", token.as_str().into()),
            ("protocol", 1.into()),
        ])),
        // A handshake whose version is not a number.
        encode(&map(&[
            ("token", token.as_str().into()),
            ("protocol", "1".into()),
            ("client", "x".into()),
        ])),
        // An empty frame.
        Vec::new(),
    ];
    for body in bodies {
        let mut raw = Raw::connect(&d.socket());
        raw.send_bytes(&body);
        let reply = raw.recv().expect("a refusal frame");
        assert_refused(&reply, "handshake_required");
        assert_closed(&mut raw);
    }
    assert_serves(&mut d);
}

#[test]
fn no_handshake_within_five_seconds_is_refused_as_handshake_timeout() {
    let mut d = TestDaemon::builder().start();
    let started = Instant::now();
    let mut silent = Raw::connect(&d.socket());
    // Half a frame does not count as a handshake either.
    silent.stream.write_all(&[0, 0]).unwrap();
    // Meanwhile other clients are served normally.
    assert_serves(&mut d);
    let reply = silent.recv().expect("a refusal frame");
    let waited = started.elapsed();
    assert_refused(&reply, "handshake_timeout");
    assert!(
        waited >= Duration::from_millis(4500),
        "refused after only {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(9),
        "refused only after {waited:?}"
    );
    assert_closed(&mut silent);
    assert_serves(&mut d);
}

#[test]
fn a_peer_of_another_uid_is_refused_as_unauthorized_without_being_read() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to connect as another uid");
        return;
    }
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(python) = python else {
        eprintln!("skipped: no system python3 runnable by uid 65534");
        return;
    };
    let mut d = TestDaemon::builder().start();
    let chmod = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    chmod(d.layout.root(), 0o711);
    chmod(&d.layout.sessions(), 0o711);
    chmod(&d.socket(), 0o777);
    let script = r"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print('connect-error', e.errno)
    sys.exit(3)
data = b''
while True:
    try:
        chunk = s.recv(65536)
    except OSError as e:
        break
    if not chunk:
        break
    data += chunk
print(data.hex())
";
    let out = std::process::Command::new(python)
        .args(["-I", "-S", "-c", script])
        .arg(d.socket())
        .env_clear()
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(out.status.success(), "{out:?}");
    let bytes: Vec<u8> = (0..stdout.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&stdout[i..i + 2], 16).unwrap())
        .collect();
    assert!(
        bytes.windows(12).any(|w| w == b"unauthorized"),
        "no refusal in {stdout:?}"
    );
    // Exactly one frame, then the close.
    let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
    assert_eq!(bytes.len(), 4 + len, "one frame then close: {stdout}");
    let reply = rmpv::decode::read_value(&mut &bytes[4..]).unwrap();
    assert_refused(&reply, "unauthorized");
    assert!(error_message(&reply).contains("65534"), "{reply}");
    assert_serves(&mut d);
}

// ---------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------

#[test]
fn garbage_bytes_are_refused_as_frame_too_large_without_reading_the_body() {
    let mut d = TestDaemon::builder().start();
    // "GET " reads as a length of 1,195,725,856 bytes: the daemon must answer at once,
    // without waiting for (or buffering) a body that never comes.
    let mut raw = Raw::connect(&d.socket());
    raw.stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let reply = raw.recv().expect("a refusal frame");
    assert_refused(&reply, "frame_too_large");
    assert!(error_message(&reply).contains("1195725856"), "{reply}");
    assert_closed(&mut raw);
    // A bare oversized prefix, with no byte of body at all.
    let mut raw = Raw::connect(&d.socket());
    raw.stream.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let reply = raw.recv().expect("a refusal frame");
    assert_refused(&reply, "frame_too_large");
    assert_closed(&mut raw);
    assert_serves(&mut d);
}

#[test]
fn a_truncated_frame_closes_only_that_connection() {
    let mut d = TestDaemon::builder().start();
    let mut bystander = d.raw();
    let truncated = {
        let mut b = 100u32.to_be_bytes().to_vec();
        b.extend_from_slice(&[0xa5; 10]);
        b
    };
    // Before the handshake, then half-close: the daemon closes without a frame.
    let mut raw = Raw::connect(&d.socket());
    raw.stream.write_all(&truncated).unwrap();
    raw.stream.shutdown(Shutdown::Write).unwrap();
    assert_closed(&mut raw);
    // After the handshake, then half-close.
    let mut raw = d.raw();
    raw.stream.write_all(&truncated).unwrap();
    raw.stream.shutdown(Shutdown::Write).unwrap();
    assert_closed(&mut raw);
    // After the handshake, then a full disconnect.
    let mut raw = d.raw();
    raw.stream.write_all(&truncated).unwrap();
    drop(raw);
    // A prefix cut in half.
    let mut raw = d.raw();
    raw.stream.write_all(&[0, 0]).unwrap();
    raw.stream.shutdown(Shutdown::Write).unwrap();
    assert_closed(&mut raw);
    assert_pong(&mut bystander, 1);
    assert_serves(&mut d);
    // The broken sessions are gone: only the bystander remains connected.
    assert!(
        wait_until(DEADLINE, || status(&mut bystander, 2).connected_clients
            == 1),
        "sessions of truncated connections linger"
    );
}

#[test]
fn an_empty_frame_after_the_handshake_is_bad_frame_and_the_connection_survives() {
    let mut d = TestDaemon::builder().start();
    let mut raw = d.raw();
    raw.send_bytes(&[]);
    let reply = raw.recv().unwrap();
    assert_error(&reply, None, "bad_frame");
    assert_pong(&mut raw, 7);
    // Between two pipelined requests: answered in place, the stream stays in sync.
    let mut batch = framed(&encode(&req(8, "Ping".into())));
    batch.extend_from_slice(&framed(&[]));
    batch.extend_from_slice(&framed(&encode(&req(9, "Ping".into()))));
    raw.stream.write_all(&batch).unwrap();
    assert_eq!(assert_ok(&raw.recv().unwrap(), 8).as_str(), Some("pong"));
    assert_error(&raw.recv().unwrap(), None, "bad_frame");
    assert_eq!(assert_ok(&raw.recv().unwrap(), 9).as_str(), Some("pong"));
    assert_serves(&mut d);
}

#[test]
fn an_oversized_frame_after_the_handshake_is_frame_too_large_then_closed() {
    let mut d = TestDaemon::builder().args(&["--max-frame", "1024"]).start();
    let mut raw = d.raw();
    // A frame of exactly the limit is fine (a `Ping` padded with a field it ignores: an
    // event must also fit a frame, so a publish this long would be `too_large`).
    let body = (0..1024)
        .map(|n| {
            let padded = [("id", Value::from(1)), ("request", "Ping".into())];
            let mut padded = padded.to_vec();
            padded.push(("pad", "x".repeat(n).into()));
            encode(&map(&padded))
        })
        .find(|b| b.len() == 1024)
        .unwrap();
    raw.send_bytes(&body);
    let reply = raw.recv().unwrap();
    assert_eq!(assert_ok(&reply, 1), &Value::from("pong"));
    // One byte more is not: the header alone is enough for the daemon to refuse it.
    raw.stream.write_all(&2000u32.to_be_bytes()).unwrap();
    let reply = raw.recv().unwrap();
    assert_error(&reply, None, "frame_too_large");
    assert!(
        !has(&reply, "ok"),
        "a connection-level error, not a refusal: {reply}"
    );
    let message = error_message(&reply);
    assert!(
        message.contains("2000") && message.contains("1024"),
        "{message}"
    );
    assert_closed(&mut raw);
    // Same with the body actually sent.
    let mut raw = d.raw();
    raw.stream.write_all(&framed(&[0xc0; 1025])).unwrap();
    assert_error(&raw.recv().unwrap(), None, "frame_too_large");
    assert_closed(&mut raw);
    assert_serves(&mut d);
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

#[test]
fn an_unknown_request_is_unknown_request_with_its_id_and_the_connection_survives() {
    let mut d = TestDaemon::builder().start();
    let mut raw = d.raw();
    let reply = call(&mut raw, 5, "Frobnicate".into());
    assert_error(&reply, Some(5), "unknown_request");
    assert!(error_message(&reply).contains("Frobnicate"), "{reply}");
    let reply = call(&mut raw, 6, variant("Frobnicate", &[]));
    assert_error(&reply, Some(6), "unknown_request");
    let reply = call(&mut raw, 7, variant("Frobnicate", &[("x", 1.into())]));
    assert_error(&reply, Some(7), "unknown_request");
    // Variant names are case-sensitive.
    let reply = call(&mut raw, 8, "ping".into());
    assert_error(&reply, Some(8), "unknown_request");
    assert_pong(&mut raw, 9);
    assert_serves(&mut d);
}

#[test]
fn a_request_with_missing_or_mistyped_fields_is_bad_request_and_does_nothing() {
    let mut d = TestDaemon::builder().start();
    let mut raw = d.raw();
    let cases = [
        (10, variant("Shutdown", &[]), "reason"),
        (11, variant("Subscribe", &[]), "pattern"),
        (12, variant("Unsubscribe", &[]), "pattern"),
        (13, variant("Publish", &[]), "topic"),
        (14, variant("Shutdown", &[("reason", 5.into())]), "Shutdown"),
        (15, Value::from("Shutdown"), "Shutdown"),
        (
            16,
            variant("InjectFault", &[("target", "bus".into())]),
            "fault",
        ),
    ];
    for (id, request, mention) in cases {
        let reply = call(&mut raw, id, request);
        assert_error(&reply, Some(id), "bad_request");
        assert!(error_message(&reply).contains(mention), "{reply}");
    }
    // The daemon did not start shutting down: requests that go through the kernel's actors
    // are still answered normally, and the session files are in place.
    let s = status(&mut raw, 17);
    assert!(s.unavailable.is_empty(), "{s:?}");
    assert_pong(&mut raw, 18);
    assert!(d.files.ready().exists());
    assert_serves(&mut d);
}

#[test]
fn malformed_envelopes_are_bad_request_and_the_connection_survives() {
    let mut d = TestDaemon::builder().start();
    let mut raw = d.raw();
    // Not a map, or no readable id: the error has no id.
    let no_id = [
        map(&[("request", "Ping".into())]),
        Value::from(42),
        Value::from("Ping"),
        Value::Nil,
        Value::Array(vec![]),
        map(&[("id", "seven".into()), ("request", "Ping".into())]),
        map(&[("id", Value::from(-1)), ("request", "Ping".into())]),
        map(&[("id", Value::from(1.5)), ("request", "Ping".into())]),
    ];
    for (n, body) in no_id.iter().enumerate() {
        raw.send_bytes(&encode(body));
        let reply = raw.recv().unwrap();
        assert_error(&reply, None, "bad_request");
        assert_pong(&mut raw, 100 + n as u64);
    }
    // An id but no request: the error echoes the id.
    raw.send_bytes(&encode(&map(&[("id", 3.into())])));
    let reply = raw.recv().unwrap();
    assert_error(&reply, Some(3), "bad_request");
    assert!(error_message(&reply).contains("request"), "{reply}");
    // A request that is a variant but not a one-entry map.
    let reply = call(&mut raw, 4, variant("Ping", &[]));
    assert_error(&reply, Some(4), "bad_request");
    assert_pong(&mut raw, 200);
    assert_serves(&mut d);
}

#[test]
fn a_request_of_the_wrong_type_is_bad_request_echoing_the_readable_id() {
    let mut d = TestDaemon::builder().start();
    let mut raw = d.raw();
    // The id is readable in every one of these, so the error must echo it.
    let cases = [
        Value::from(17),
        Value::Boolean(true),
        Value::Array(vec!["Ping".into()]),
        Value::Map(Vec::new()),
    ];
    let mut wrong = Vec::new();
    for (n, request) in cases.into_iter().enumerate() {
        let id = 10 + n as u64;
        let reply = call(&mut raw, id, request.clone());
        if error_code(&reply) != Some("bad_request") || get(&reply, "id").as_u64() != Some(id) {
            wrong.push(format!("request {request} -> {reply}"));
        }
        assert_pong(&mut raw, 100 + id);
    }
    assert_serves(&mut d);
    assert!(
        wrong.is_empty(),
        "expected bad_request with the id echoed:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn frames_must_be_maps_keyed_by_name() {
    let mut d = TestDaemon::builder().start();
    let mut wrong = Vec::new();
    // A handshake as an array instead of {token, protocol, client}.
    let mut raw = Raw::connect(&d.socket());
    raw.send_bytes(&encode(&Value::Array(vec![
        d.token().into(),
        1.into(),
        "x".into(),
    ])));
    let reply = raw.recv().unwrap();
    if error_code(&reply) != Some("handshake_required") {
        wrong.push(format!("handshake [token, 1, \"x\"] -> {reply}"));
    }
    drop(raw);
    let mut raw = d.raw();
    let cases = [
        // An envelope as an array instead of {id, request}.
        Value::Array(vec![1.into(), "Ping".into()]),
        // A map without `id` or `request` keys (fields by index).
        Value::Map(vec![(0.into(), 2.into()), (1.into(), "Ping".into())]),
    ];
    for (n, body) in cases.into_iter().enumerate() {
        raw.send_bytes(&encode(&body));
        let reply = raw.recv().unwrap();
        if error_code(&reply) != Some("bad_request") || has(&reply, "id") {
            wrong.push(format!("request frame {body} -> {reply}"));
        }
        assert_pong(&mut raw, 100 + n as u64);
    }
    assert_serves(&mut d);
    assert!(
        wrong.is_empty(),
        "accepted frames that are not maps keyed by name:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_frame_that_is_not_valid_messagepack_is_answered_and_the_connection_survives() {
    let mut d = TestDaemon::builder().start();
    let mut raw = d.raw();
    // 0xc1 is never used in MessagePack; 0x92 announces an array of two and stops.
    for body in [&[0xc1u8][..], &[0x92, 0x01]] {
        raw.send_bytes(body);
        let reply = raw.recv().unwrap();
        assert!(!has(&reply, "id"), "{reply}");
        let code = error_code(&reply);
        assert!(matches!(code, Some("bad_frame" | "bad_request")), "{reply}");
        assert_pong(&mut raw, 1);
    }
    assert_serves(&mut d);
}

#[test]
fn a_client_that_disconnects_mid_request_does_not_disturb_the_daemon() {
    let mut d = TestDaemon::builder().fault_injection().start();
    let mut watcher = d.raw();
    let reply = call(
        &mut watcher,
        1,
        variant("Subscribe", &[("pattern", "user.>".into())]),
    );
    assert_ok(&reply, 1);
    hang_bus(&d, 500);
    let (mut victim, welcome) = connect(&d);
    let victim_id = get(&welcome, "connection").as_u64().unwrap();
    victim.request(1, publish("user.x", 1.into()));
    drop(victim);
    // Served at once, while the bus still hangs.
    assert_serves(&mut d);
    // And publishes work again once it is back.
    let mut publisher = d.raw();
    let reply = call(&mut publisher, 2, publish("user.after", 2.into()));
    let after: Published = result_as(&reply, 2);
    assert_eq!(after.delivered, 1);
    let event = loop {
        let frame = watcher.recv().unwrap();
        let event: Event = decode(get(&frame, "event"));
        if event.topic == "user.after" {
            break event;
        }
        // The abandoned request may still have been carried out, but only before.
        assert_eq!(event.topic, "user.x", "{frame}");
        assert_eq!(event.source, format!("client:{victim_id}"));
        assert!(event.seq < after.seq);
    };
    assert_eq!(event.seq, after.seq);
    // The abandoned session ends once its request is done.
    drop(publisher);
    assert!(
        wait_until(DEADLINE, || {
            let mut ctl = d.raw();
            let reply = call(&mut ctl, 3, "GetSupervisionTree".into());
            let tree: TreeNode = result_as(&reply, 3);
            tree.find(&format!("session:{victim_id}")).is_none()
        }),
        "the session of the disconnected client lingers"
    );
    assert_pong(&mut watcher, 4);
}

#[test]
fn many_clients_at_once_are_all_served_while_one_sends_garbage() {
    const CLIENTS: usize = 150;
    const PINGS: u64 = 5;
    let mut d = TestDaemon::builder().start();
    let token = Arc::new(d.token());
    let socket = Arc::new(d.socket());
    let ready = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (token, socket) = (Arc::clone(&token), Arc::clone(&socket));
            let (ready, go) = (Arc::clone(&ready), Arc::clone(&go));
            std::thread::spawn(move || {
                let mut raw = Raw::connect(&socket);
                let welcome = raw.hello(&token, 1);
                assert_eq!(get(&welcome, "ok"), &Value::Boolean(true), "{welcome}");
                ready.fetch_add(1, Ordering::SeqCst);
                assert!(wait_until(DEADLINE, || go.load(Ordering::SeqCst)));
                for i in 0..PINGS {
                    assert_pong(&mut raw, n as u64 * 100 + i);
                }
            })
        })
        .collect();
    let garbage = {
        let socket = Arc::clone(&socket);
        std::thread::spawn(move || {
            for _ in 0..20 {
                let mut raw = Raw::connect(&socket);
                raw.stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
                assert_refused(&raw.recv().unwrap(), "frame_too_large");
                assert_closed(&mut raw);
            }
        })
    };
    let all_in = wait_until(DEADLINE, || {
        ready.load(Ordering::SeqCst) == CLIENTS
            || clients.iter().any(std::thread::JoinHandle::is_finished)
    });
    assert!(
        all_in,
        "only {} clients got in",
        ready.load(Ordering::SeqCst)
    );
    assert_eq!(
        ready.load(Ordering::SeqCst),
        CLIENTS,
        "a client failed its handshake"
    );
    // All of them are connected at the same time.
    let mut main = d.raw();
    assert_eq!(status(&mut main, 1).connected_clients, CLIENTS + 1);
    go.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().expect("a client failed");
    }
    garbage
        .join()
        .expect("the garbage client did not get its refusals");
    assert!(
        wait_until(DEADLINE, || status(&mut main, 2).connected_clients == 1),
        "sessions linger after their clients left"
    );
    assert_serves(&mut d);
}

#[test]
fn replies_on_one_connection_come_in_completion_order() {
    let mut d = TestDaemon::builder().fault_injection().start();
    hang_bus(&d, 400);
    let mut raw = d.raw();
    let mut batch = framed(&encode(&req(1, publish("user.order", 1.into()))));
    batch.extend_from_slice(&framed(&encode(&req(2, "Ping".into()))));
    let sent = Instant::now();
    raw.stream.write_all(&batch).unwrap();
    let first = raw.recv().unwrap();
    assert_eq!(
        assert_ok(&first, 2).as_str(),
        Some("pong"),
        "Ping waited for Publish"
    );
    let second = raw.recv().unwrap();
    let slow = sent.elapsed();
    let published: Published = result_as(&second, 1);
    assert!(published.seq > 0);
    assert!(
        slow >= Duration::from_millis(200),
        "publish after only {slow:?}"
    );
    assert_serves(&mut d);
}

#[test]
fn hundreds_of_pipelined_requests_are_each_answered_exactly_once() {
    const N: u64 = 500;
    let mut d = TestDaemon::builder().start();
    let mut raw = d.raw();
    let mut batch = Vec::new();
    for id in 1..=N {
        let request = if id % 2 == 0 { "GetStatus" } else { "Ping" };
        batch.extend_from_slice(&framed(&encode(&req(id, request.into()))));
    }
    raw.stream.write_all(&batch).unwrap();
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for _ in 0..N {
        let frame = raw.recv().unwrap();
        let id = get(&frame, "id")
            .as_u64()
            .unwrap_or_else(|| panic!("{frame}"));
        if id.is_multiple_of(2) {
            let s: Status = result_as(&frame, id);
            assert_eq!(s.pid, d.child.id());
        } else {
            assert_eq!(assert_ok(&frame, id).as_str(), Some("pong"));
        }
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(seen.len(), usize::try_from(N).unwrap());
    assert!((1..=N).all(|id| seen.get(&id) == Some(&1)), "{seen:?}");
    // Nothing else is pending: the next reply is the next request's.
    assert_pong(&mut raw, N + 1);
    assert_serves(&mut d);
}

#[test]
fn a_request_past_the_call_deadline_is_answered_with_timeout() {
    let mut d = TestDaemon::builder()
        .args(&["--allow-fault-injection", "--call-timeout", "200ms"])
        .start();
    hang_bus(&d, 2000);
    let mut raw = d.raw();
    let sent = Instant::now();
    let reply = call(&mut raw, 2, publish("user.slow", 1.into()));
    let waited = sent.elapsed();
    assert_error(&reply, Some(2), "timeout");
    assert!(
        waited >= Duration::from_millis(150),
        "timed out after only {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "timed out only after {waited:?}"
    );
    // Status still answers, reporting the bus as unavailable.
    let s = status(&mut raw, 3);
    assert_eq!(s.unavailable, vec!["bus".to_owned()], "{s:?}");
    assert!(s.bus.is_none());
    assert_pong(&mut raw, 4);
    assert_serves(&mut d);
}

// ---------------------------------------------------------------------------------------
// Topics, subscriptions and events
// ---------------------------------------------------------------------------------------

#[test]
fn topic_rules_are_enforced_with_forbidden_and_invalid_topic() {
    let mut d = TestDaemon::builder().start();
    let mut raw = d.raw();
    let reply = call(&mut raw, 1, publish("astrid.kernel.shutdown", Value::Nil));
    assert_error(&reply, Some(1), "forbidden");
    assert!(error_message(&reply).contains("user.>"), "{reply}");
    let reply = call(
        &mut raw,
        2,
        variant("Publish", &[("topic", "astrid.x".into())]),
    );
    assert_error(&reply, Some(2), "forbidden");
    for (id, topic) in [
        (3, "user..x"),
        (4, "user.*"),
        (5, "user.>"),
        (6, ""),
        (7, "user.a b"),
    ] {
        let reply = call(&mut raw, id, publish(topic, 1.into()));
        assert_error(&reply, Some(id), "invalid_topic");
    }
    for (id, pattern) in [(8, "a.>.b"), (9, ""), (10, "user.x*"), (11, "a..b")] {
        let reply = call(
            &mut raw,
            id,
            variant("Subscribe", &[("pattern", pattern.into())]),
        );
        assert_error(&reply, Some(id), "invalid_topic");
    }
    // Subscribing to kernel topics is allowed; only publishing is restricted.
    let reply = call(
        &mut raw,
        12,
        variant("Subscribe", &[("pattern", "astrid.>".into())]),
    );
    let subscribed: Subscribed = result_as(&reply, 12);
    assert_eq!(subscribed.patterns, vec!["astrid.>".to_owned()]);
    assert_pong(&mut raw, 13);
    assert_serves(&mut d);
}

#[test]
fn events_flow_from_publisher_to_subscriber_over_raw_frames() {
    let mut d = TestDaemon::builder().start();
    let mut a = d.raw();
    let (mut b, welcome) = connect(&d);
    let b_id = get(&welcome, "connection").as_u64().unwrap();
    let reply = call(
        &mut a,
        1,
        variant("Subscribe", &[("pattern", "user.>".into())]),
    );
    let subscribed: Subscribed = result_as(&reply, 1);
    assert_eq!(subscribed.pattern, "user.>");
    assert_eq!(subscribed.patterns, vec!["user.>".to_owned()]);

    let payload = map(&[("text", "hi".into()), ("n", 3.into())]);
    let reply = call(&mut b, 1, publish("user.note", payload.clone()));
    let published: Published = result_as(&reply, 1);
    assert_eq!(published.delivered, 1);

    let frame = a.recv().unwrap();
    assert!(!has(&frame, "id"), "events have no id: {frame}");
    assert!(!has(&frame, "error") && !has(&frame, "result"), "{frame}");
    let event = get(&frame, "event");
    assert_eq!(get(event, "topic").as_str(), Some("user.note"));
    assert_eq!(get(event, "payload"), &payload);
    assert_eq!(get(event, "seq").as_u64(), Some(published.seq));
    assert_eq!(
        get(event, "source").as_str(),
        Some(format!("client:{b_id}").as_str())
    );
    let time_ms = get(event, "time_ms").as_u64().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert!(
        u128::from(time_ms).abs_diff(now_ms) < 60_000,
        "time_ms {time_ms}"
    );

    // Topics outside the pattern are not delivered.
    let reply = call(&mut b, 2, publish("other.note", 1.into()));
    assert_error(&reply, Some(2), "forbidden");

    let reply = call(
        &mut a,
        2,
        variant("Unsubscribe", &[("pattern", "user.>".into())]),
    );
    let unsubscribed: Unsubscribed = result_as(&reply, 2);
    assert!(unsubscribed.removed);
    assert!(unsubscribed.patterns.is_empty());
    let reply = call(&mut b, 3, publish("user.note", 2.into()));
    let published: Published = result_as(&reply, 3);
    assert_eq!(published.delivered, 0);
    // No event is waiting on A: the next frame it gets is its own reply.
    a.request(3, "Ping");
    assert_eq!(assert_ok(&a.recv().unwrap(), 3).as_str(), Some("pong"));
    // Unsubscribing again reports that nothing was removed.
    let reply = call(
        &mut a,
        4,
        variant("Unsubscribe", &[("pattern", "user.>".into())]),
    );
    let unsubscribed: Unsubscribed = result_as(&reply, 4);
    assert!(!unsubscribed.removed);
    assert_serves(&mut d);
}

#[tokio::test]
async fn events_flow_from_publisher_to_subscriber_with_the_client() {
    let d = TestDaemon::builder().start();
    let mut a = d.client().await;
    let b = d.client().await;
    let b_id = b.welcome().connection.unwrap();
    assert_ne!(a.welcome().connection, b.welcome().connection);
    let subscribed: Subscribed = a
        .call(Request::Subscribe {
            pattern: "user.*".into(),
        })
        .await
        .unwrap();
    assert_eq!(subscribed.patterns, vec!["user.*".to_owned()]);

    let published: Published = b
        .call(Request::Publish {
            topic: "user.note".into(),
            payload: RawValue::encode("hello").unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(published.delivered, 1);
    // `user.*` matches one segment only.
    let deeper: Published = b
        .call(Request::Publish {
            topic: "user.note.deep".into(),
            payload: RawValue::nil(),
        })
        .await
        .unwrap();
    assert_eq!(deeper.delivered, 0);

    let event = tokio::time::timeout(DEADLINE, a.next_event())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.topic, "user.note");
    assert_eq!(event.payload, Value::from("hello"));
    assert_eq!(event.seq, published.seq);
    assert_eq!(event.source, format!("client:{b_id}"));

    let unsubscribed: Unsubscribed = a
        .call(Request::Unsubscribe {
            pattern: "user.*".into(),
        })
        .await
        .unwrap();
    assert!(unsubscribed.removed);
    let after: Published = b
        .call(Request::Publish {
            topic: "user.note".into(),
            payload: RawValue::nil(),
        })
        .await
        .unwrap();
    assert_eq!(after.delivered, 0);
    a.ping().await.unwrap();
    let none = tokio::time::timeout(Duration::from_millis(100), a.next_event()).await;
    assert!(none.is_err(), "an event after unsubscribing: {none:?}");
}

// ---------------------------------------------------------------------------------------
// Fault injection gating
// ---------------------------------------------------------------------------------------

#[test]
fn inject_fault_without_the_flag_is_fault_injection_disabled() {
    let mut d = TestDaemon::builder().start();
    let mut raw = d.raw();
    for (id, fault) in [(1, hang(5000)), (2, "panic".into()), (3, "stop".into())] {
        let reply = call(&mut raw, id, inject("bus", fault));
        assert_error(&reply, Some(id), "fault_injection_disabled");
    }
    // Nothing happened to the bus: a publish goes straight through.
    let sent = Instant::now();
    let reply = call(&mut raw, 4, publish("user.x", Value::Nil));
    let _: Published = result_as(&reply, 4);
    assert!(sent.elapsed() < Duration::from_secs(2));
    assert!(!status(&mut raw, 5).fault_injection);
    assert_serves(&mut d);
}

#[test]
fn inject_fault_on_an_unknown_target_is_not_found() {
    let mut d = TestDaemon::builder().fault_injection().start();
    let mut raw = d.raw();
    for (id, target) in [(1, "nonexistent"), (2, "kernel"), (3, "")] {
        let reply = call(&mut raw, id, inject(target, "panic".into()));
        assert_error(&reply, Some(id), "not_found");
    }
    let s = status(&mut raw, 4);
    assert!(s.fault_injection);
    assert!(s.unavailable.is_empty(), "{s:?}");
    assert_serves(&mut d);
}

// ---------------------------------------------------------------------------------------
// Query results
// ---------------------------------------------------------------------------------------

fn assert_cli_capsule_running(capsules: &[CapsuleInfo]) {
    let cli = capsules
        .iter()
        .find(|c| c.name == CLI_CAPSULE)
        .unwrap_or_else(|| panic!("no {CLI_CAPSULE} in {capsules:?}"));
    assert_eq!(cli.state, CapsuleState::Running, "{cli:?}");
    assert_eq!(cli.origin, CapsuleOrigin::Builtin);
    assert!(cli.error.is_none(), "{cli:?}");
    assert!(cli.path.is_none(), "{cli:?}");
}

#[tokio::test]
async fn get_status_describes_a_persistent_daemon() {
    let d = TestDaemon::builder().start();
    let client = d.client().await;
    let s = client.status().await.unwrap();
    assert_eq!(s.pid, d.child.id());
    assert_eq!(s.protocol, 1);
    assert_eq!(s.session, "system");
    assert_eq!(s.session_id, uuid::Uuid::nil().to_string());
    assert!(!s.ephemeral);
    assert_eq!(s.idle_grace_ms, None);
    assert_eq!(s.socket, d.socket().display().to_string());
    assert_eq!(
        std::fs::canonicalize(&s.workspace).unwrap(),
        std::fs::canonicalize(d.workspace.path()).unwrap()
    );
    assert_eq!(s.connected_clients, 1);
    assert!(!s.fault_injection);
    assert!(s.unavailable.is_empty(), "{s:?}");
    assert!(s.bus.is_some());
    assert!(!s.version.is_empty());
    assert_eq!(
        client.welcome().daemon.as_deref(),
        Some(format!("astrid-daemon {}", s.version).as_str())
    );
    assert_cli_capsule_running(&s.capsules);
}

#[tokio::test]
async fn get_status_describes_an_ephemeral_daemon() {
    let d = TestDaemon::builder()
        .args(&["--ephemeral", "--idle-grace", "30s"])
        .start();
    let client = d.client().await;
    let s = client.status().await.unwrap();
    assert!(s.ephemeral);
    assert_eq!(s.idle_grace_ms, Some(30_000));
    assert_eq!(s.connected_clients, 1);
}

#[tokio::test]
async fn get_supervision_tree_shows_the_kernel_actors_and_this_session() {
    let d = TestDaemon::builder().start();
    let client = d.client().await;
    let me = client.welcome().connection.unwrap();
    let tree = client.tree().await.unwrap();
    assert_eq!(tree.name, "kernel");
    assert_eq!(tree.kind, NodeKind::Supervisor);
    assert_eq!(tree.state, ChildState::Running);
    let names: Vec<&str> = tree.children.iter().map(|c| c.name.as_str()).collect();
    for name in ["bus", "capsules", "listener"] {
        assert!(names.contains(&name), "{names:?}");
        let node = tree.find(name).unwrap();
        let kind = if name == "capsules" {
            NodeKind::Supervisor
        } else {
            NodeKind::Worker
        };
        assert_eq!(node.kind, kind, "{node:?}");
        assert_eq!(node.state, ChildState::Running, "{node:?}");
    }
    // The capsules supervisor shows its own children: the registry first.
    let capsules = tree.find("capsules").unwrap();
    assert_eq!(capsules.children[0].name, "registry", "{capsules:?}");
    assert_eq!(capsules.children[0].kind, NodeKind::Worker);
    let listener = tree.find("listener").unwrap();
    let session = listener
        .children
        .iter()
        .find(|c| c.name == format!("session:{me}"))
        .unwrap_or_else(|| panic!("no session:{me} under {listener:?}"));
    assert_eq!(session.kind, NodeKind::Session);
    assert_eq!(session.state, ChildState::Running);
    assert!(
        session
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with("test")),
        "{session:?}"
    );
}

#[tokio::test]
async fn capsule_queries_list_the_builtin_capsule() {
    let d = TestDaemon::builder().start();
    let client = d.client().await;
    let capsules = client.capsules().await.unwrap();
    assert_cli_capsule_running(&capsules);

    let commands: Vec<CommandInfo> = client.call(Request::GetCommands).await.unwrap();
    let names: Vec<&str> = commands.iter().map(|c| c.name.as_str()).collect();
    for name in ["status", "capsules", "commands", "ps", "quit"] {
        assert!(names.contains(&name), "{names:?}");
    }
    assert!(
        commands
            .iter()
            .all(|c| c.capsule == CLI_CAPSULE && !c.description.is_empty())
    );

    let one: Vec<CapsuleMetadata> = client
        .call(Request::GetCapsuleMetadata {
            name: Some(CLI_CAPSULE.into()),
        })
        .await
        .unwrap();
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0].name, CLI_CAPSULE);
    assert_eq!(one[0].origin, CapsuleOrigin::Builtin);
    assert_eq!(one[0].commands, commands);

    let all: Vec<CapsuleMetadata> = client
        .call(Request::GetCapsuleMetadata { name: None })
        .await
        .unwrap();
    assert!(all.iter().any(|m| m.name == CLI_CAPSULE), "{all:?}");

    let missing = client
        .call::<Vec<CapsuleMetadata>>(Request::GetCapsuleMetadata {
            name: Some("no-such-capsule".into()),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::NotFound), "{missing}");
    // The connection is still fine after an error reply.
    client.ping().await.unwrap();
}

#[tokio::test]
async fn reload_capsules_reports_what_changed() {
    let d = TestDaemon::builder().start();
    let client = d.client().await;
    let report: ReloadReport = client.call(Request::ReloadCapsules).await.unwrap();
    assert!(
        report.added.is_empty() && report.removed.is_empty(),
        "{report:?}"
    );
    assert_cli_capsule_running(&report.capsules);

    let dir = d
        .workspace
        .path()
        .join(".astrid")
        .join("capsules")
        .join("hello");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Capsule.toml"),
        "[package]\nname = \"hello\"\nversion = \"0.1.0\"\ndescription = \"Says hi\"\n\n[module]\nfile = \"hello.wat\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("hello.wat"), common::ECHO_WAT).unwrap();
    // The workspace's own capsules run once it is trusted: listed until then.
    let report: ReloadReport = client.call(Request::ReloadCapsules).await.unwrap();
    assert!(report.added.is_empty(), "{report:?}");
    let hello = report.capsules.iter().find(|c| c.name == "hello").unwrap();
    assert_eq!(hello.state, CapsuleState::Untrusted, "{hello:?}");
    let trusted: TrustReport = client
        .call(Request::TrustWorkspace { path: None })
        .await
        .unwrap();
    let report = trusted.capsules.unwrap();
    assert_eq!(report.added, vec!["hello".to_owned()], "{report:?}");
    assert!(
        report.removed.is_empty() && report.changed.is_empty(),
        "{report:?}"
    );
    let hello = report.capsules.iter().find(|c| c.name == "hello").unwrap();
    assert_eq!(hello.state, CapsuleState::Running);
    assert_eq!(hello.origin, CapsuleOrigin::Workspace);
    assert_eq!(hello.version.as_deref(), Some("0.1.0"));
    assert_cli_capsule_running(&report.capsules);

    std::fs::remove_dir_all(&dir).unwrap();
    let report: ReloadReport = client.call(Request::ReloadCapsules).await.unwrap();
    assert_eq!(report.removed, vec!["hello".to_owned()], "{report:?}");
}
