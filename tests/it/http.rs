//! `http_request` through a real daemon, against HTTP servers this test starts on loopback
//! (granted explicitly; never the network): a request inside the grant and its audit entry,
//! a URL outside the grant, a redirect inside it and one leading outside it, a name that
//! resolves to a loopback address under a wildcard grant, a response over the bound, a slow
//! server, a server that drops the connection, and a malformed request map. Each is a clean
//! error code to the guest, and the capsule keeps answering.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use astrid::client::Client;
use astrid::protocol::{AuditEntry, CommandOutput};
use rmpv::Value;

use crate::common::{
    TestDaemon, audit_tail, copy_capsule, example_capsule, invoke, one_command_manifest,
    output_text, write_capsule,
};

/// Reads `req.bin` from the workspace, hands it to `http_request`, and replies with the
/// response map, or with a negative result as a positive integer.
const GUEST: &str = r#"(module
  (import "astrid" "vfs_read" (func $read (param i32 i32) (result i64)))
  (import "astrid" "http_request" (func $http (param i32 i32) (result i64)))
  (memory (export "memory") 4 4)
  (global $bump (mut i32) (i32.const 4096))
  (data (i32.const 0) "req.bin")
  (func (export "astrid_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $len)))
    (local.get $p))
  (func $code (param $c i64) (result i64)
    (i32.store8 (i32.const 1024) (i32.wrap_i64 (i64.sub (i64.const 0) (local.get $c))))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 1)))
  (func (export "astrid_command") (param $p i32) (param $l i32) (result i64)
    (local $r i64)
    (global.set $bump (i32.const 4096))
    (local.set $r (call $read (i32.const 0) (i32.const 7)))
    (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (call $code (local.get $r)))))
    (local.set $r (call $http
      (i32.wrap_i64 (i64.shr_u (local.get $r) (i64.const 32)))
      (i32.wrap_i64 (i64.and (local.get $r) (i64.const 0xffffffff)))))
    (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (call $code (local.get $r)))))
    (local.get $r)))"#;

/// What `/hook` received, by server port: `METHOD AUTHORIZATION BODY`.
static HOOKED: Mutex<Vec<(u16, String)>> = Mutex::new(Vec::new());

/// A loopback HTTP/1.1 server answering by path; returns its port.
fn serve() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || answer(stream, port));
        }
    });
    port
}

fn answer(mut stream: TcpStream, port: u16) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let first_line = first
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let target = first.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/").to_owned();
    let mut auth = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("authorization:") {
            line[14..].trim().clone_into(&mut auth);
        } else if let Some(n) = lower.strip_prefix("content-length:") {
            length = n.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
        return;
    }
    let reply = |status: &str, headers: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n",
            body.len()
        );
        let mut all = head.into_bytes();
        all.extend_from_slice(body);
        all
    };
    let out = match path.as_str() {
        "/hello" => reply("200 OK", "x-test: yes\r\n", b"hello world"),
        "/auth" => reply("200 OK", "", auth.as_bytes()),
        "/inside" => reply("302 Found", "location: /hello\r\n", b""),
        "/outside" => reply(
            "302 Found",
            &format!("location: http://127.0.0.2:{port}/hello\r\n"),
            b"",
        ),
        "/elsewhere" => reply("307 Temporary Redirect", "location: /auth\r\n", b""),
        "/cross" => reply(
            "307 Temporary Redirect",
            &format!("location: http://127.0.0.1:{port}/auth\r\n"),
            b"",
        ),
        // Over half the capsule's memory ceiling (16 pages by default: 512 KiB).
        "/big" => reply("200 OK", "", &vec![b'x'; 600 * 1024]),
        "/slow" => {
            thread::sleep(Duration::from_secs(2));
            reply("200 OK", "", b"late")
        }
        "/drop" => return,
        "/loop" => reply("302 Found", "location: /loop\r\n", b""),
        "/hook" => {
            let seen = format!("{first_line} {auth} {}", String::from_utf8_lossy(&body));
            HOOKED.lock().unwrap().push((port, seen));
            reply("204 No Content", "", b"")
        }
        _ => reply("404 Not Found", "", b"no"),
    };
    let _ = stream.write_all(&out);
}

fn request(url: &str, extra: &[(&str, Value)]) -> Vec<u8> {
    let mut map = vec![(Value::from("url"), Value::from(url))];
    map.extend(extra.iter().map(|(k, v)| (Value::from(*k), v.clone())));
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &Value::Map(map)).unwrap();
    out
}

/// Runs `/fetch` with `req` as `req.bin`; its output.
async fn fetch(d: &TestDaemon, client: &Client, req: &[u8]) -> Value {
    std::fs::write(d.workspace.path().join("req.bin"), req).unwrap();
    let out: CommandOutput = invoke(client, "fetch", &[]).await.unwrap();
    out.output
}

fn field<'a>(map: &'a Value, key: &str) -> &'a Value {
    map.as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(key)))
        .map_or_else(|| panic!("no `{key}` in {map:?}"), |(_, v)| v)
}

fn entries<'a>(all: &'a [AuditEntry], action: &str) -> Vec<&'a AuditEntry> {
    all.iter().filter(|e| e.action == action).collect()
}

/// A daemon whose home holds `fetch`, with `vfs:read:req.bin` and `grants`.
fn daemon(grants: &[String]) -> TestDaemon {
    let mut all = vec!["\"vfs:read:req.bin\"".to_owned()];
    all.extend(grants.iter().map(|g| format!("\"{g}\"")));
    let manifest = one_command_manifest(
        "fetch",
        &format!("[capabilities]\ngrant = [{}]\n", all.join(", ")),
    );
    TestDaemon::builder()
        .prepare(|home, _| {
            write_capsule(
                &home.join("capsules"),
                "fetch",
                &manifest,
                &[("m.wat", GUEST.as_bytes())],
            );
        })
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_inside_the_grant_are_made_and_audited_without_query_or_headers() {
    let port = serve();
    let d = daemon(&[format!("net:http:http://127.0.0.1:{port}")]);
    let client = d.client().await;
    let base = format!("http://127.0.0.1:{port}");

    // Inside the grant: the response map, audited without the query.
    let ok = fetch(
        &d,
        &client,
        &request(&format!("{base}/hello?key=s3cret"), &[]),
    )
    .await;
    assert_eq!(field(&ok, "status"), &Value::from(200));
    assert_eq!(field(&ok, "body"), &Value::Binary(b"hello world".to_vec()));
    assert_eq!(field(field(&ok, "headers"), "x-test"), &Value::from("yes"));
    // A redirect inside the grant is followed.
    let inside = fetch(&d, &client, &request(&format!("{base}/inside"), &[])).await;
    assert_eq!(
        field(&inside, "body"),
        &Value::Binary(b"hello world".to_vec())
    );
    // A redirect to the same origin keeps the credentials.
    let auth = Value::Map(vec![("authorization".into(), "Bearer t0ken".into())]);
    let kept = fetch(
        &d,
        &client,
        &request(&format!("{base}/elsewhere"), &[("headers", auth)]),
    )
    .await;
    assert_eq!(
        field(&kept, "body"),
        &Value::Binary(b"Bearer t0ken".to_vec())
    );

    let all = audit_tail(&client, 500).await;
    let made = entries(&all, "http_request");
    let hello = format!("GET http://127.0.0.1:{port}/hello");
    assert!(
        made.iter()
            .any(|e| e.target == hello && e.outcome == "200, 11 bytes"),
        "{made:#?}"
    );
    assert!(
        made.iter()
            .any(|e| e.target.ends_with("/inside") && e.outcome == "302, redirect"),
        "{made:#?}"
    );
    let shown = format!("{all:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("t0ken"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_grant_does_not_cover_or_the_bounds_refuse_is_a_clean_error() {
    let port = serve();
    let other = serve();
    let d = daemon(&[
        format!("net:http:http://127.0.0.1:{port}"),
        format!("net:http:http://*:{other}"),
    ]);
    let client = d.client().await;
    let base = format!("http://127.0.0.1:{port}");

    // Outside the grant (another port; a redirect to another host): denied, -1.
    let outside = format!("http://127.0.0.1:{}/hello", port.wrapping_add(1).max(1));
    assert_eq!(
        fetch(&d, &client, &request(&outside, &[])).await,
        Value::from(1)
    );
    let redirect = fetch(&d, &client, &request(&format!("{base}/outside"), &[])).await;
    assert_eq!(redirect, Value::from(1));
    // A wildcard grant never reaches a loopback address, whatever the name.
    let named = format!("http://localhost:{other}/hello");
    assert_eq!(
        fetch(&d, &client, &request(&named, &[])).await,
        Value::from(1)
    );

    // Too large (-4), too slow (-5), dropped (-5), malformed (-3).
    let big = fetch(&d, &client, &request(&format!("{base}/big"), &[])).await;
    assert!(big == Value::from(4), "{:.300}", format!("{big:?}"));
    let slow = request(&format!("{base}/slow"), &[("timeout_ms", Value::from(200))]);
    assert_eq!(fetch(&d, &client, &slow).await, Value::from(5));
    let dropped = fetch(&d, &client, &request(&format!("{base}/drop"), &[])).await;
    assert_eq!(dropped, Value::from(5));
    let mut bad = Vec::new();
    rmpv::encode::write_value(&mut bad, &Value::Map(vec![("method".into(), "GET".into())]))
        .unwrap();
    assert_eq!(fetch(&d, &client, &bad).await, Value::from(3));
    assert_eq!(fetch(&d, &client, b"\xc1").await, Value::from(3));

    // A redirect loop: five redirects are followed, the sixth is the response.
    let looped = fetch(&d, &client, &request(&format!("{base}/loop"), &[])).await;
    assert_eq!(field(&looped, "status"), &Value::from(302));

    // Still answering, never restarted.
    let again = fetch(&d, &client, &request(&format!("{base}/hello"), &[])).await;
    assert_eq!(field(&again, "status"), &Value::from(200));
    let listed = client.capsules().await.unwrap();
    assert_eq!(
        listed.iter().find(|c| c.name == "fetch").unwrap().restarts,
        0
    );

    let all = audit_tail(&client, 500).await;
    let made = entries(&all, "http_request");
    assert!(
        made.iter()
            .any(|e| e.target.ends_with("/big") && e.outcome.starts_with("error -4")),
        "{made:#?}"
    );
    let hops: Vec<_> = made
        .iter()
        .filter(|e| e.target.ends_with("/loop"))
        .collect();
    assert_eq!(hops.len(), 6, "{hops:#?}");
    assert_eq!(
        hops.last().map(|e| e.outcome.as_str()),
        Some("302, 0 bytes")
    );
    let denied = entries(&all, "deny");
    assert!(
        denied
            .iter()
            .any(|e| e.target == format!("net:http:http://127.0.0.2:{port}/hello")),
        "{denied:#?}"
    );
    assert!(
        denied.iter().any(|e| e.target
            == format!("net:http:http://localhost:{other}/hello (a non-public address)")),
        "{denied:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_naming_a_host_exactly_reaches_it_and_credentials_stay_with_their_origin() {
    let port = serve();
    let d = daemon(&[
        format!("net:http:http://localhost:{port}"),
        format!("net:http:http://127.0.0.1:{port}"),
    ]);
    let client = d.client().await;
    let named = fetch(
        &d,
        &client,
        &request(&format!("http://localhost:{port}/hello"), &[]),
    )
    .await;
    assert_eq!(field(&named, "status"), &Value::from(200));
    // localhost -> 127.0.0.1 is another origin: the Authorization header is dropped there.
    let auth = Value::Map(vec![("authorization".into(), "Bearer t0ken".into())]);
    let crossed = fetch(
        &d,
        &client,
        &request(
            &format!("http://localhost:{port}/cross"),
            &[("headers", auth)],
        ),
    )
    .await;
    assert_eq!(field(&crossed, "status"), &Value::from(200));
    assert_eq!(field(&crossed, "body"), &Value::Binary(Vec::new()));
}

/// A daemon running the example capsule `name`, its grants replaced by `grants`.
fn example(name: &str, grants: &str) -> TestDaemon {
    let grants = grants.to_owned();
    let name = name.to_owned();
    TestDaemon::builder()
        .prepare(move |home, _| {
            let dir = copy_capsule(&example_capsule(&name), &home.join("capsules"));
            let manifest = std::fs::read_to_string(dir.join("Capsule.toml")).unwrap();
            let manifest: String = manifest
                .lines()
                .map(|l| {
                    if l.starts_with("grant = ") {
                        format!("grant = [\"{grants}\"]\n")
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            std::fs::write(dir.join("Capsule.toml"), manifest).unwrap();
        })
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fetch_example_fetches_what_its_grants_allow() {
    let port = serve();
    let d = example("fetch", &format!("net:http:http://127.0.0.1:{port}"));
    let out = d.cli(&[
        "--json",
        "run",
        "fetch",
        &format!("http://127.0.0.1:{port}/hello"),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["output"]["status"], 200, "{reply}");
    assert_eq!(reply["output"]["start"], "hello world", "{reply}");
    let refused = d.cli(&["run", "fetch", "http://127.0.0.2:1/"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        output_text(&refused).contains("code -1"),
        "{}",
        output_text(&refused)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notify_example_needs_its_settings_and_posts_with_the_secret_token() {
    let port = serve();
    let d = example("notify", &format!("net:http:http://127.0.0.1:{port}/**"));
    let missing = d.cli(&["run", "notify", "hi"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        output_text(&missing).contains("astrid settings set notify url"),
        "{}",
        output_text(&missing)
    );
    let url = format!("http://127.0.0.1:{port}/hook");
    assert!(
        d.cli(&["settings", "set", "notify", "url", &url])
            .status
            .success()
    );
    let token = d.cli_fed(&["settings", "set", "notify", "token"], b"t0k3n\n");
    assert!(token.status.success(), "{}", output_text(&token));
    assert!(
        d.cli(&["settings", "set", "notify", "prefix", "[ci] "])
            .status
            .success()
    );
    let sent = d.cli(&["--json", "run", "notify", "build", "\"green\""]);
    assert!(sent.status.success(), "{}", output_text(&sent));
    let reply: serde_json::Value = serde_json::from_slice(&sent.stdout).unwrap();
    assert_eq!(reply["output"]["status"], 204, "{reply}");
    assert_eq!(
        reply["output"]["id"].as_str().map(str::len),
        Some(16),
        "{reply}"
    );
    let hooked: Vec<String> = HOOKED
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| *p == port)
        .map(|(_, seen)| seen.clone())
        .collect();
    assert_eq!(
        hooked,
        vec![r#"POST Bearer t0k3n {"text": "[ci] build \"green\""}"#.to_owned()]
    );
}
