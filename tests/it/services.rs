//! The kernel services seen from a client of a real daemon: the key-value store, capability
//! grants, the audit log, the workspace file system, and the supervision of their actors.
//! Each test talks to an `astrid-daemon` process over its socket (or through the `astrid`
//! CLI) and checks what lands on disk.

use crate::common;

use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use crate::common::{DEADLINE, TestDaemon, inject, poll_async, short_tempdir, tamper, wait_node};
use astrid::client::{Client, ClientError};
use astrid::protocol::{
    AuditEntry, ChildState, DEFAULT_MAX_FRAME_LEN, DirEntry, EntryKind, ErrorBody, ErrorCode,
    Fault, FileStat, Grant, GrantSource, KvValue, Listing, ReadResult, Removed, Request,
    Verification, Written,
};
use astrid_actors::audit::chain::{GENESIS, hash_of};
use rustix::process::Signal;
use serde::de::DeserializeOwned;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Sends `request` and expects a result.
async fn ok<T: DeserializeOwned>(c: &Client, request: Request) -> T {
    let name = request.name();
    c.call(request)
        .await
        .unwrap_or_else(|e| panic!("{name} failed: {e}"))
}

/// Sends `request` and expects the daemon to answer with an error, which it returns.
async fn refused(c: &Client, request: Request) -> ErrorBody {
    let name = request.name();
    match c.call::<rmpv::Value>(request).await {
        Err(ClientError::Remote(body)) => body,
        other => panic!("{name}: expected an error reply, got {other:?}"),
    }
}

/// Asserts that `request` is refused with `code`, and returns the message.
async fn refused_with(c: &Client, request: Request, code: ErrorCode) -> String {
    let what: String = format!("{} {:?}", request.name(), request.target())
        .chars()
        .take(200)
        .collect();
    let body = refused(c, request).await;
    assert_eq!(body.code, code, "{what}: {body}");
    body.message
}

fn put(key: &str, value: &[u8]) -> Request {
    Request::KvPut {
        key: key.into(),
        value: value.to_vec(),
    }
}

fn get(key: &str) -> Request {
    Request::KvGet { key: key.into() }
}

fn delete(key: &str) -> Request {
    Request::KvDelete { key: key.into() }
}

fn list(prefix: &str, limit: Option<usize>) -> Request {
    Request::KvList {
        prefix: prefix.into(),
        limit,
    }
}

fn grant(subject: &str, resource: &str) -> Request {
    Request::GrantCapability {
        subject: subject.into(),
        resource: resource.into(),
    }
}

fn revoke(subject: &str, resource: &str) -> Request {
    Request::RevokeCapability {
        subject: subject.into(),
        resource: resource.into(),
    }
}

fn caps_of(subject: Option<&str>) -> Request {
    Request::ListCapabilities {
        subject: subject.map(Into::into),
    }
}

/// The value of `key`, `None` when absent.
async fn value_of(c: &Client, key: &str) -> Option<Vec<u8>> {
    let got: KvValue = ok(c, get(key)).await;
    assert_eq!(got.key, key);
    got.value
}

/// The last `n` audit entries.
async fn tail(c: &Client, n: usize) -> Vec<AuditEntry> {
    ok(
        c,
        Request::AuditTail {
            n: Some(n),
            from: None,
        },
    )
    .await
}

/// The whole audit log, paged through from the first entry.
async fn all_entries(c: &Client) -> Vec<AuditEntry> {
    let mut entries: Vec<AuditEntry> = Vec::new();
    loop {
        let from = entries.last().map_or(1, |e| e.seq + 1);
        let page: Vec<AuditEntry> = ok(
            c,
            Request::AuditTail {
                n: Some(1000),
                from: Some(from),
            },
        )
        .await;
        // A short page is the end (every page request is itself recorded, so waiting for an
        // empty one would chase the log's own tail).
        let short = page.len() < 1000;
        entries.extend(page);
        if short {
            return entries;
        }
    }
}

/// Polls the audit log until `cond` holds for it (entries recorded without waiting are
/// committed shortly after their reply).
async fn wait_audit(c: &Client, cond: impl Fn(&[AuditEntry]) -> bool) -> Vec<AuditEntry> {
    let matched = poll_async(DEADLINE, async || {
        let entries = all_entries(c).await;
        if cond(&entries) {
            Ok(entries)
        } else {
            Err(entries)
        }
    })
    .await;
    matched.unwrap_or_else(|entries| panic!("the audit log never matched: {}", show(&entries)))
}

fn show(entries: &[AuditEntry]) -> String {
    use std::fmt::Write as _;
    entries.iter().fold(String::new(), |mut out, e| {
        let _ = writeln!(
            out,
            "#{} {} {} {:?} -> {}",
            e.seq, e.actor, e.action, e.target, e.outcome
        );
        out
    })
}

/// The entry for `action` on `target`, if any (the last one).
fn entry<'a>(entries: &'a [AuditEntry], action: &str, target: &str) -> Option<&'a AuditEntry> {
    entries
        .iter()
        .rev()
        .find(|e| e.action == action && e.target == target)
}

/// How the daemon names this test's connection `c` in audit entries.
fn audit_actor(c: &Client) -> String {
    format!(
        "client:{} (test, pid {}, uid {})",
        c.welcome().connection.unwrap(),
        std::process::id(),
        rustix::process::getuid().as_raw()
    )
}

/// The target of the kernel's `boot` entry for daemon process `pid`.
fn boot_target(pid: i32) -> String {
    format!("astrid-daemon {} pid {pid}", env!("CARGO_PKG_VERSION"))
}

/// Checks that `entries` are consecutive, linked, and each matches its hash.
fn assert_chained(entries: &[AuditEntry]) {
    for e in entries {
        assert_eq!(
            hash_of(e),
            e.hash,
            "entry {} does not match its hash",
            e.seq
        );
        assert_eq!(e.session, "system");
    }
    for pair in entries.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "{}", show(entries));
        assert_eq!(pair[1].prev_hash, pair[0].hash, "entry {}", pair[1].seq);
    }
}

/// Stops `d` with SIGTERM and starts a new daemon with `args` on the same home.
fn restart(mut d: TestDaemon, args: &[&str]) -> TestDaemon {
    d.signal(Signal::TERM);
    let status = d.wait_exit(DEADLINE).expect("daemon exits after SIGTERM");
    assert!(status.success(), "{status}: {}", d.stderr());
    let home = std::mem::replace(&mut d.home, short_tempdir());
    drop(d);
    let next = TestDaemon::builder().home(home).args(args).spawn();
    next.wait_ready();
    next
}

/// Stdout of a CLI run that must succeed.
fn cli_ok(d: &TestDaemon, args: &[&str]) -> String {
    let out = d.cli(args);
    assert!(out.status.success(), "astrid {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Stderr of a CLI run that must fail with status 1.
fn cli_err(d: &TestDaemon, args: &[&str]) -> String {
    let out = d.cli(args);
    assert_eq!(out.status.code(), Some(1), "astrid {args:?}: {out:?}");
    String::from_utf8(out.stderr).unwrap()
}

/// Everything in the daemon's log files.
fn log_text(d: &TestDaemon) -> String {
    common::files_in(&d.layout.logs())
        .iter()
        .map(|name| std::fs::read_to_string(d.layout.logs().join(name)).unwrap_or_default())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Key-value store
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn kv_put_get_overwrite_and_delete() {
    let d = TestDaemon::builder().start();
    let c = d.client().await;
    assert_eq!(value_of(&c, "greeting").await, None);
    let written: Written = ok(&c, put("greeting", b"hello")).await;
    assert_eq!(
        written,
        Written {
            target: "greeting".into(),
            bytes: 5
        }
    );
    assert_eq!(value_of(&c, "greeting").await.unwrap(), b"hello");
    // Values are bytes, not text: every byte value survives, NUL and invalid UTF-8 too.
    let binary: Vec<u8> = (0..=255u8).chain([0xc0, 0xff, 0x00, 0xfe]).collect();
    let _: Written = ok(&c, put("greeting", &binary)).await;
    assert_eq!(value_of(&c, "greeting").await.unwrap(), binary);
    // An empty value is a value, not an absence.
    let _: Written = ok(&c, put("empty", b"")).await;
    assert_eq!(value_of(&c, "empty").await, Some(Vec::new()));
    // Keys are any UTF-8 without NUL.
    let _: Written = ok(&c, put("ключ/🔑 with spaces", b"u")).await;
    assert_eq!(value_of(&c, "ключ/🔑 with spaces").await.unwrap(), b"u");

    let removed: Removed = ok(&c, delete("greeting")).await;
    assert_eq!(
        removed,
        Removed {
            target: "greeting".into(),
            removed: true
        }
    );
    assert_eq!(value_of(&c, "greeting").await, None);
    let again: Removed = ok(&c, delete("greeting")).await;
    assert!(!again.removed);
    // Another connection sees the same data.
    let other = d.client().await;
    assert_eq!(value_of(&other, "empty").await, Some(Vec::new()));
    assert_eq!(value_of(&other, "greeting").await, None);
}

#[tokio::test]
async fn kv_list_by_prefix_with_limit_and_truncation() {
    let d = TestDaemon::builder().start();
    let c = d.client().await;
    for key in ["list/c", "list/a", "list/b", "lisp", "other", "list"] {
        let _: Written = ok(&c, put(key, key.as_bytes())).await;
    }
    let all: Listing = ok(&c, list("list/", None)).await;
    assert_eq!(all.keys, ["list/a", "list/b", "list/c"]);
    assert!(!all.truncated);
    let two: Listing = ok(&c, list("list/", Some(2))).await;
    assert_eq!(two.keys, ["list/a", "list/b"]);
    assert!(two.truncated, "three keys match, two were asked for");
    let exact: Listing = ok(&c, list("list/", Some(3))).await;
    assert_eq!(exact.keys.len(), 3);
    assert!(!exact.truncated, "exactly the limit matched: nothing more");
    let zero: Listing = ok(&c, list("list/", Some(0))).await;
    assert!(zero.keys.is_empty() && zero.truncated);
    let everything: Listing = ok(&c, list("", None)).await;
    assert_eq!(
        everything.keys,
        ["lisp", "list", "list/a", "list/b", "list/c", "other"]
    );
    let none: Listing = ok(&c, list("zzz", None)).await;
    assert!(none.keys.is_empty() && !none.truncated);
    let _: Removed = ok(&c, delete("list/b")).await;
    let after: Listing = ok(&c, list("list/", None)).await;
    assert_eq!(after.keys, ["list/a", "list/c"]);
    refused_with(&c, list("a\0", None), ErrorCode::InvalidArgument).await;
}

#[tokio::test]
async fn kv_refuses_bad_keys_and_oversize_values_and_stores_nothing() {
    let d = TestDaemon::builder().start();
    let c = d.client().await;
    let long = "k".repeat(1025);
    for key in ["", long.as_str(), "a\0b", "\0"] {
        let m = refused_with(&c, put(key, b"v"), ErrorCode::InvalidArgument).await;
        assert!(m.contains("invalid key"), "{m}");
        refused_with(&c, get(key), ErrorCode::InvalidArgument).await;
        refused_with(&c, delete(key), ErrorCode::InvalidArgument).await;
    }
    // The limits themselves are accepted.
    let longest = "k".repeat(1024);
    let _: Written = ok(&c, put(&longest, b"v")).await;
    let largest = vec![0xabu8; 1024 * 1024];
    let _: Written = ok(&c, put("largest", &largest)).await;
    assert_eq!(value_of(&c, "largest").await.unwrap(), largest);
    // One byte more is too large, and the old value stays.
    let over = vec![0xcdu8; 1024 * 1024 + 1];
    let m = refused_with(&c, put("largest", &over), ErrorCode::TooLarge).await;
    assert!(m.contains("1048577") && m.contains("1048576"), "{m}");
    refused_with(&c, put("fresh", &over), ErrorCode::TooLarge).await;
    assert_eq!(value_of(&c, "largest").await.unwrap(), largest);
    assert_eq!(value_of(&c, "fresh").await, None);
    let everything: Listing = ok(&c, list("", None)).await;
    assert_eq!(everything.keys, ["k".repeat(1024), "largest".to_owned()]);
    // The connection is still usable after all these refusals.
    c.ping().await.unwrap();
}

#[tokio::test]
async fn an_acknowledged_put_survives_a_restart() {
    let d = TestDaemon::builder().start();
    let c = d.client().await;
    let value = vec![0u8, 159, 146, 150, 255];
    let _: Written = ok(&c, put("durable", &value)).await;
    let _: Written = ok(&c, put("doomed", b"x")).await;
    let _: Removed = ok(&c, delete("doomed")).await;
    drop(c);
    let d = restart(d, &[]);
    let c = d.client().await;
    assert_eq!(value_of(&c, "durable").await.unwrap(), value);
    assert_eq!(value_of(&c, "doomed").await, None);
    let everything: Listing = ok(&c, list("", None)).await;
    assert_eq!(everything.keys, ["durable"]);
}

#[test]
fn kv_cli_put_get_rm_ls() {
    let d = TestDaemon::builder().start();
    assert_eq!(
        cli_ok(&d, &["kv", "put", "fruit/apple", "red"]),
        "stored fruit/apple (3 bytes)\n"
    );
    cli_ok(&d, &["kv", "put", "fruit/kiwi", "green and fuzzy"]);
    cli_ok(&d, &["kv", "put", "veg", "leek"]);
    assert_eq!(cli_ok(&d, &["kv", "get", "fruit/apple"]), "red\n");
    assert_eq!(
        cli_ok(&d, &["kv", "get", "fruit/kiwi"]),
        "green and fuzzy\n"
    );
    let missing = cli_err(&d, &["kv", "get", "fruit/durian"]);
    assert!(missing.contains("no key `fruit/durian`"), "{missing}");
    assert_eq!(cli_ok(&d, &["kv", "ls"]), "fruit/apple\nfruit/kiwi\nveg\n");
    assert_eq!(
        cli_ok(&d, &["kv", "ls", "fruit/"]),
        "fruit/apple\nfruit/kiwi\n"
    );
    assert_eq!(
        cli_ok(&d, &["kv", "ls", "fruit/", "--limit", "1"]),
        "fruit/apple\n(more keys; raise --limit)\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(&d, &["--json", "kv", "ls", "--limit", "2"])).unwrap();
    assert_eq!(
        json["keys"],
        serde_json::json!(["fruit/apple", "fruit/kiwi"])
    );
    assert_eq!(json["truncated"], true);
    assert_eq!(cli_ok(&d, &["kv", "rm", "veg"]), "deleted: veg\n");
    assert_eq!(cli_ok(&d, &["kv", "rm", "veg"]), "no such key: veg\n");
    cli_err(&d, &["kv", "get", "veg"]);
    let bad = cli_err(&d, &["kv", "put", "", "x"]);
    assert!(
        bad.contains("invalid_argument") || bad.contains("invalid key"),
        "{bad}"
    );
    assert_eq!(cli_ok(&d, &["kv", "ls", "nothing-here"]), "");
}

// ---------------------------------------------------------------------------------------
// Capabilities
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn capabilities_grant_list_and_revoke() {
    let d = TestDaemon::builder().start();
    let c = d.client().await;
    let none: Vec<Grant> = ok(&c, caps_of(None)).await;
    assert!(none.is_empty(), "{none:?}");
    let first: Grant = ok(&c, grant("echo", "kv")).await;
    assert_eq!(first.subject, "echo");
    assert_eq!(first.resource, "kv");
    assert_eq!(first.source, GrantSource::Runtime);
    assert!(first.granted_ms > 0);
    // Granting again changes nothing: same grant, still one of it.
    let again: Grant = ok(&c, grant("echo", "kv")).await;
    assert_eq!(again, first);
    for (subject, resource) in [
        ("echo", "vfs:read:src/**"),
        ("echo", "bus:publish:user.>"),
        ("notes-2", "vfs:write:notes/*.md"),
        ("notes-2", "mcp:call:github/*"),
        ("notes-2", "bus:subscribe:astrid.*"),
    ] {
        let g: Grant = ok(&c, grant(subject, resource)).await;
        assert_eq!(
            (g.subject.as_str(), g.resource.as_str()),
            (subject, resource)
        );
    }
    let all: Vec<Grant> = ok(&c, caps_of(None)).await;
    assert_eq!(all.len(), 6, "{all:?}");
    let echo: Vec<Grant> = ok(&c, caps_of(Some("echo"))).await;
    let mut resources: Vec<&str> = echo.iter().map(|g| g.resource.as_str()).collect();
    resources.sort_unstable();
    assert_eq!(resources, ["bus:publish:user.>", "kv", "vfs:read:src/**"]);
    assert!(echo.iter().all(|g| g.subject == "echo"));
    let nobody: Vec<Grant> = ok(&c, caps_of(Some("nobody"))).await;
    assert!(nobody.is_empty());

    let removed: Removed = ok(&c, revoke("echo", "kv")).await;
    assert_eq!(
        removed,
        Removed {
            target: "echo:kv".into(),
            removed: true
        }
    );
    let twice: Removed = ok(&c, revoke("echo", "kv")).await;
    assert!(!twice.removed);
    let never: Removed = ok(&c, revoke("echo", "vfs:read:other/**")).await;
    assert!(!never.removed);
    let echo: Vec<Grant> = ok(&c, caps_of(Some("echo"))).await;
    assert_eq!(echo.len(), 2);
    assert!(echo.iter().all(|g| g.resource != "kv"));
}

#[tokio::test]
async fn bad_subjects_and_resources_are_invalid_arguments() {
    let d = TestDaemon::builder().start();
    let c = d.client().await;
    for subject in ["BAD", "", "has space", "a/b", "x".repeat(65).as_str()] {
        refused_with(&c, grant(subject, "kv"), ErrorCode::InvalidArgument).await;
    }
    for resource in [
        "vfs:read:../x",
        "vfs:write:/etc/*",
        "vfs:read:",
        "net:x",
        "mcp:call:server",
        "bus:publish:a..b",
        "kvx",
        "",
    ] {
        let m = refused_with(&c, grant("echo", resource), ErrorCode::InvalidArgument).await;
        assert!(m.contains("invalid capability"), "{resource}: {m}");
    }
    let all: Vec<Grant> = ok(&c, caps_of(None)).await;
    assert!(all.is_empty(), "nothing was granted: {all:?}");
}

#[tokio::test]
async fn runtime_grants_persist_across_a_restart() {
    let d = TestDaemon::builder().start();
    let c = d.client().await;
    let kept: Grant = ok(&c, grant("echo", "vfs:read:src/**")).await;
    let _: Grant = ok(&c, grant("echo", "kv")).await;
    let _: Removed = ok(&c, revoke("echo", "kv")).await;
    drop(c);
    let d = restart(d, &[]);
    let c = d.client().await;
    let all: Vec<Grant> = ok(&c, caps_of(None)).await;
    assert_eq!(all, [kept], "the revoked grant stays revoked");
}

#[test]
fn caps_cli_grant_ls_revoke() {
    let d = TestDaemon::builder().start();
    assert_eq!(cli_ok(&d, &["caps", "ls"]), "no capabilities granted\n");
    assert_eq!(
        cli_ok(&d, &["caps", "grant", "echo", "vfs:read:src/**"]),
        "granted vfs:read:src/** to echo\n"
    );
    cli_ok(&d, &["caps", "grant", "other", "kv"]);
    let table = cli_ok(&d, &["caps", "ls"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("CAPSULE"), "{table}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["echo", "runtime", "vfs:read:src/**"]
    );
    let only = cli_ok(&d, &["caps", "ls", "other"]);
    assert_eq!(only.lines().count(), 2, "{only}");
    assert!(only.contains("other") && !only.contains("echo"), "{only}");
    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(&d, &["--json", "caps", "ls", "echo"])).unwrap();
    assert_eq!(json[0]["resource"], "vfs:read:src/**");
    assert_eq!(json[0]["source"], "runtime");
    assert_eq!(
        cli_ok(&d, &["caps", "revoke", "echo", "vfs:read:src/**"]),
        "revoked: echo:vfs:read:src/**\n"
    );
    assert_eq!(
        cli_ok(&d, &["caps", "revoke", "echo", "vfs:read:src/**"]),
        "not granted: echo:vfs:read:src/**\n"
    );
    let bad = cli_err(&d, &["caps", "grant", "BAD", "kv"]);
    assert!(bad.contains("invalid subject"), "{bad}");
    let bad = cli_err(&d, &["caps", "grant", "echo", "net:x"]);
    assert!(bad.contains("invalid capability `net:x`"), "{bad}");
}

#[tokio::test]
async fn a_namespace_at_its_quota_refuses_writes_without_writing_and_others_go_on() {
    let quota = ["--kv-max-keys", "3", "--kv-max-bytes", "1KiB"];
    let d = TestDaemon::builder().args(&quota).start();
    let c = d.client().await;
    for key in ["a", "b", "c"] {
        let _: Written = ok(&c, put(key, b"v")).await;
    }
    let message = refused_with(&c, put("d", b"v"), ErrorCode::QuotaExceeded).await;
    assert!(
        message.contains("3 keys") && message.contains("client"),
        "{message}"
    );
    let value: KvValue = ok(&c, get("d")).await;
    assert_eq!(value.value, None, "nothing was written");
    // Overwriting fits while the bytes do; growing past them does not.
    let _: Written = ok(&c, put("a", &[b'x'; 900])).await;
    let message = refused_with(&c, put("b", &[b'x'; 200]), ErrorCode::QuotaExceeded).await;
    assert!(message.contains("1024 bytes"), "{message}");
    let value: KvValue = ok(&c, get("b")).await;
    assert_eq!(
        value.value.as_deref(),
        Some(&b"v"[..]),
        "the old value stays"
    );
    // A delete frees room; another client is served all along.
    let other = d.client().await;
    other.ping().await.unwrap();
    let _: Removed = ok(&other, delete("c")).await;
    let _: Written = ok(&c, put("d", b"v")).await;

    // After a restart the namespace is counted again from disk: still full.
    drop((c, other));
    let d = restart(d, &quota);
    let c = d.client().await;
    refused_with(&c, put("e", b"v"), ErrorCode::QuotaExceeded).await;
    let _: Removed = ok(&c, delete("d")).await;
    let _: Written = ok(&c, put("e", b"v")).await;
}

// ---------------------------------------------------------------------------------------
// Audit log
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn audit_entries_are_chained_and_say_who_did_what_to_what() {
    let d = TestDaemon::builder().start();
    let c = d.client().await;
    c.ping().await.unwrap();
    let _ = c.status().await.unwrap();
    let _: Written = ok(&c, put("audited", b"v")).await;
    refused_with(&c, put("", b"v"), ErrorCode::InvalidArgument).await;
    let _: Grant = ok(&c, grant("echo", "kv")).await;
    let _: Removed = ok(
        &c,
        Request::RevokeCapability {
            subject: "echo".into(),
            resource: "kv".into(),
        },
    )
    .await;
    let me = audit_actor(&c);
    let entries = wait_audit(&c, |es| {
        es.iter()
            .any(|e| e.action == "RevokeCapability" && e.actor == me)
    })
    .await;
    let text = show(&entries);
    assert_eq!(entries[0].seq, 1, "{text}");
    assert_eq!(entries[0].prev_hash, GENESIS);
    assert_chained(&entries);

    // The kernel's own entries: children started by the supervisor, then the boot.
    let boot = entry(&entries, "boot", &boot_target(d.pid()));
    let boot = boot.unwrap_or_else(|| panic!("no boot entry: {text}"));
    assert_eq!(
        (boot.actor.as_str(), boot.outcome.as_str()),
        ("kernel", "ok")
    );
    for child in ["store", "capabilities", "vfs", "capsules", "listener"] {
        let start = entry(&entries, "start", child).unwrap_or_else(|| panic!("{child}: {text}"));
        assert_eq!(
            (start.actor.as_str(), start.outcome.as_str()),
            ("supervisor", "ok")
        );
        assert!(start.seq < boot.seq, "{text}");
    }
    // The client's requests, in order, with their outcomes; `Ping` is not audited, nor (by
    // the default policy) `GetStatus`, which only reads.
    let mine: Vec<&AuditEntry> = entries.iter().filter(|e| e.actor == me).collect();
    let summary: Vec<(&str, &str, &str)> = mine
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        summary[..4],
        [
            ("KvPut", "audited", "ok"),
            ("KvPut", "", "invalid_argument: invalid key: it is empty"),
            ("GrantCapability", "echo:kv", "ok"),
            ("RevokeCapability", "echo:kv", "ok"),
        ],
        "{text}"
    );
    assert!(
        entries
            .iter()
            .all(|e| e.action != "Ping" && e.action != "GetStatus"),
        "{text}"
    );

    let v: Verification = ok(&c, Request::AuditVerify).await;
    assert!(v.ok, "{v:?}");
    assert_eq!((v.first_bad, v.reason.as_deref()), (None, None));
    assert!(v.entries >= entries.len() as u64, "{v:?}");
    let later = all_entries(&c).await;
    let head = later.iter().find(|e| e.seq == v.entries).unwrap();
    assert_eq!(
        head.hash, v.head,
        "the head is the hash of the last verified entry"
    );
    let status = c.status().await.unwrap();
    assert!(status.audit.ok, "{:?}", status.audit);
}

#[tokio::test]
async fn the_chain_continues_across_a_restart_with_shutdown_and_boot_entries() {
    let d = TestDaemon::builder().start();
    let first_pid = d.pid();
    let c = d.client().await;
    let _: Written = ok(&c, put("before", b"1")).await;
    drop(c);
    let d = restart(d, &[]);
    let c = d.client().await;
    let _: Written = ok(&c, put("after", b"2")).await;
    let entries = all_entries(&c).await;
    let text = show(&entries);
    assert_eq!(entries[0].seq, 1, "{text}");
    assert_chained(&entries);
    let seq_of = |action: &str, target: &str| {
        entry(&entries, action, target)
            .unwrap_or_else(|| panic!("no {action} {target}: {text}"))
            .seq
    };
    let boot1 = seq_of("boot", &boot_target(first_pid));
    let before = seq_of("KvPut", "before");
    let shutdown = entries
        .iter()
        .find(|e| e.actor == "kernel" && e.action == "shutdown")
        .unwrap_or_else(|| panic!("no shutdown entry: {text}"));
    assert!(shutdown.target.contains("SIGTERM"), "{text}");
    assert_eq!(shutdown.outcome, "ok");
    let boot2 = seq_of("boot", &boot_target(d.pid()));
    let after = seq_of("KvPut", "after");
    assert!(boot1 < before && before < shutdown.seq, "{text}");
    assert!(shutdown.seq < boot2 && boot2 < after, "{text}");
    let v: Verification = ok(&c, Request::AuditVerify).await;
    assert!(v.ok, "{v:?}");

    // The CLI shows the same log.
    let lines = cli_ok(&d, &["audit", "tail", "-n", "3"]);
    assert_eq!(lines.lines().count(), 3, "{lines}");
    assert!(lines.lines().all(|l| l.starts_with('#')), "{lines}");
    let verified = cli_ok(&d, &["audit", "verify"]);
    assert!(verified.starts_with("audit chain intact: "), "{verified}");
}

#[tokio::test]
async fn a_handshake_with_a_wrong_token_is_audited() {
    let d = TestDaemon::builder().start();
    let mut raw = common::Raw::connect(&d.socket());
    let reply = raw.hello(&"0".repeat(64), 1);
    assert_eq!(common::error_code(&reply), Some("unauthorized"), "{reply}");
    assert!(raw.closed());
    let c = d.client().await;
    let entries = wait_audit(&c, |es| es.iter().any(|e| e.action == "handshake")).await;
    let e = entries.iter().find(|e| e.action == "handshake").unwrap();
    assert!(e.outcome.starts_with("unauthorized"), "{}", show(&entries));
    assert!(e.actor.starts_with("client:"), "{}", e.actor);
    assert!(
        e.actor.contains(&format!("pid {}", std::process::id())),
        "{}",
        e.actor
    );
    assert!(
        !e.actor.contains(&"0".repeat(64)),
        "the token is not logged"
    );
}

#[tokio::test]
async fn a_mutation_is_audited_before_its_reply_arrives() {
    let d = TestDaemon::builder().start();
    let writer = d.client().await;
    let reader = d.client().await;
    let me = audit_actor(&writer);
    let check = async |action: &str, target: &str, outcome: &str| {
        // No waiting: the entry must already be there when the reply is.
        let entries = tail(&reader, 200).await;
        let e = entry(&entries, action, target)
            .unwrap_or_else(|| panic!("no {action} {target:?} yet: {}", show(&entries)));
        assert!(e.outcome.starts_with(outcome), "{}", e.outcome);
        assert_eq!(e.actor, me);
    };
    for i in 0..20 {
        let key = format!("key-{i}");
        let _: Written = ok(&writer, put(&key, b"v")).await;
        check("KvPut", &key, "ok").await;
    }
    let _: Removed = ok(&writer, delete("key-3")).await;
    check("KvDelete", "key-3", "ok").await;
    refused_with(&writer, put("", b"v"), ErrorCode::InvalidArgument).await;
    check("KvPut", "", "invalid_argument").await;
    let _: Grant = ok(&writer, grant("echo", "kv")).await;
    check("GrantCapability", "echo:kv", "ok").await;
    let _: Removed = ok(&writer, revoke("echo", "kv")).await;
    check("RevokeCapability", "echo:kv", "ok").await;
    let _: Written = ok(
        &writer,
        Request::VfsWrite {
            path: "f.txt".into(),
            data: b"x".to_vec(),
            create_dirs: false,
        },
    )
    .await;
    check("VfsWrite", "f.txt", "ok").await;
}

#[tokio::test]
async fn a_tampered_entry_is_reported_at_boot_by_status_verify_and_the_log() {
    let mut d = TestDaemon::builder().start();
    let c = d.client().await;
    let _: Written = ok(&c, put("innocent", b"1")).await;
    let _: Written = ok(&c, put("after", b"2")).await;
    let entries = all_entries(&c).await;
    let victim = entry(&entries, "KvPut", "innocent").unwrap().seq;
    drop(c);
    d.signal(Signal::TERM);
    assert!(d.wait_exit(DEADLINE).unwrap().success());
    tamper(&d.layout.state().join("ledger.redb"), victim, "forged");

    let home = std::mem::replace(&mut d.home, short_tempdir());
    drop(d);
    let d = TestDaemon::builder().home(home).spawn();
    d.wait_ready();
    let c = d.client().await;
    let status = c.status().await.unwrap();
    assert!(!status.audit.ok, "{:?}", status.audit);
    assert_eq!(status.audit.first_bad, Some(victim), "{:?}", status.audit);
    let v: Verification = ok(&c, Request::AuditVerify).await;
    assert!(!v.ok);
    assert_eq!(v.first_bad, Some(victim));
    let reason = v.reason.unwrap();
    assert!(reason.contains(&format!("entry {victim}")), "{reason}");
    assert!(reason.contains("altered"), "{reason}");
    // The forged entry reads back as forged: the log does not hide it.
    let entries = all_entries(&c).await;
    assert_eq!(
        entries[usize::try_from(victim).unwrap() - 1].outcome,
        "forged"
    );

    let stderr = cli_err(&d, &["audit", "verify"]);
    assert!(
        stderr.contains(&format!("the audit chain is broken at entry {victim}")),
        "{stderr}"
    );
    assert!(
        common::wait_until(DEADLINE, || log_text(&d).lines().any(|l| {
            l.contains("ERROR")
                && l.contains("the audit chain is broken")
                && l.contains(&format!("first_bad=Some({victim})"))
        })),
        "{}",
        log_text(&d)
    );
    // The daemon keeps working, and keeps auditing.
    let _: Written = ok(&c, put("still", b"works")).await;
    let entries = tail(&c, 5).await;
    assert!(
        entry(&entries, "KvPut", "still").is_some(),
        "{}",
        show(&entries)
    );
}

// ---------------------------------------------------------------------------------------
// Workspace file system
// ---------------------------------------------------------------------------------------

fn vfs_write(path: &str, data: &[u8], create_dirs: bool) -> Request {
    Request::VfsWrite {
        path: path.into(),
        data: data.to_vec(),
        create_dirs,
    }
}

fn vfs_read(path: &str, offset: u64, len: Option<u64>) -> Request {
    Request::VfsRead {
        path: path.into(),
        offset,
        len,
    }
}

fn vfs_remove(path: &str, recursive: bool) -> Request {
    Request::VfsRemove {
        path: path.into(),
        recursive,
    }
}

fn vfs_mkdir(path: &str, parents: bool) -> Request {
    Request::VfsMkdir {
        path: path.into(),
        parents,
    }
}

fn vfs_list(path: &str) -> Request {
    Request::VfsList { path: path.into() }
}

fn vfs_stat(path: &str) -> Request {
    Request::VfsStat { path: path.into() }
}

#[tokio::test]
async fn vfs_writes_reads_and_lists_the_real_workspace() {
    let d = TestDaemon::builder().start();
    let ws = d.workspace.path();
    let c = d.client().await;
    let w: Written = ok(&c, vfs_write("hello.txt", b"hello, world", false)).await;
    assert_eq!((w.target.as_str(), w.bytes), ("hello.txt", 12));
    assert_eq!(
        std::fs::read(ws.join("hello.txt")).unwrap(),
        b"hello, world"
    );
    // Overwrite replaces the whole content.
    let _: Written = ok(&c, vfs_write("hello.txt", b"bye", false)).await;
    assert_eq!(std::fs::read(ws.join("hello.txt")).unwrap(), b"bye");
    // A file written outside the API is read through it, in parts.
    std::fs::write(ws.join("digits"), b"0123456789").unwrap();
    let all: ReadResult = ok(&c, vfs_read("digits", 0, None)).await;
    assert_eq!((all.data.as_slice(), all.size), (&b"0123456789"[..], 10));
    let part: ReadResult = ok(&c, vfs_read("digits", 3, Some(4))).await;
    assert_eq!((part.data.as_slice(), part.size), (&b"3456"[..], 10));
    let rest: ReadResult = ok(&c, vfs_read("digits", 8, Some(100))).await;
    assert_eq!(rest.data, b"89");
    let beyond: ReadResult = ok(&c, vfs_read("digits", 50, None)).await;
    assert!(beyond.data.is_empty());
    let binary: Vec<u8> = (0..=255u8).rev().collect();
    let _: Written = ok(&c, vfs_write("./bin//blob", &binary, true)).await;
    assert_eq!(std::fs::read(ws.join("bin/blob")).unwrap(), binary);

    // Missing parents: refused without create_dirs, created with it.
    refused_with(&c, vfs_write("a/b/c.txt", b"x", false), ErrorCode::NotFound).await;
    assert!(!ws.join("a").exists());
    let _: Written = ok(&c, vfs_write("a/b/c.txt", b"deep", true)).await;
    assert_eq!(std::fs::read(ws.join("a/b/c.txt")).unwrap(), b"deep");

    let listing: Vec<DirEntry> = ok(&c, vfs_list(".")).await;
    let names: Vec<(&str, EntryKind)> = listing.iter().map(|e| (e.name.as_str(), e.kind)).collect();
    assert_eq!(
        names,
        [
            ("a", EntryKind::Dir),
            ("bin", EntryKind::Dir),
            ("digits", EntryKind::File),
            ("hello.txt", EntryKind::File),
        ],
        "no temporary files are left behind"
    );
    assert_eq!(listing[2].size, 10);
    let sub: Vec<DirEntry> = ok(&c, vfs_list("a/b")).await;
    assert_eq!(sub.len(), 1);
    assert_eq!((sub[0].name.as_str(), sub[0].size), ("c.txt", 4));
    let stat: FileStat = ok(&c, vfs_stat("digits")).await;
    assert_eq!((stat.kind, stat.size), (EntryKind::File, 10));
    assert!(stat.modified_ms.is_some());
    let stat: FileStat = ok(&c, vfs_stat("a")).await;
    assert_eq!(stat.kind, EntryKind::Dir);
}

#[tokio::test]
async fn vfs_mkdir_remove_and_missing_paths() {
    let d = TestDaemon::builder().start();
    let ws = d.workspace.path();
    let c = d.client().await;
    let _: Written = ok(&c, vfs_mkdir("one", false)).await;
    assert!(ws.join("one").is_dir());
    refused_with(&c, vfs_mkdir("one", false), ErrorCode::IoError).await;
    let _: Written = ok(&c, vfs_mkdir("one", true)).await;
    refused_with(&c, vfs_mkdir("x/y/z", false), ErrorCode::NotFound).await;
    let _: Written = ok(&c, vfs_mkdir("x/y/z", true)).await;
    assert!(ws.join("x/y/z").is_dir());
    std::fs::write(ws.join("x/y/z/file"), b"f").unwrap();
    std::fs::write(ws.join("x/top"), b"t").unwrap();

    // A non-empty directory needs `recursive`.
    refused_with(&c, vfs_remove("x", false), ErrorCode::IoError).await;
    assert!(ws.join("x/y/z/file").exists());
    let r: Removed = ok(&c, vfs_remove("x/top", false)).await;
    assert_eq!((r.target.as_str(), r.removed), ("x/top", true));
    assert!(!ws.join("x/top").exists());
    let _: Removed = ok(&c, vfs_remove("x", true)).await;
    assert!(!ws.join("x").exists());
    let _: Removed = ok(&c, vfs_remove("one", false)).await;
    assert!(
        common::files_in(ws).is_empty(),
        "{:?}",
        common::files_in(ws)
    );

    for request in [
        vfs_read("nope", 0, None),
        vfs_stat("nope"),
        vfs_list("nope"),
        vfs_remove("nope", true),
        vfs_read("nope/deeper", 0, None),
    ] {
        refused_with(&c, request, ErrorCode::NotFound).await;
    }
    // The root itself cannot be removed or written.
    refused_with(&c, vfs_remove(".", true), ErrorCode::InvalidArgument).await;
    refused_with(&c, vfs_write(".", b"x", false), ErrorCode::InvalidArgument).await;
    refused_with(&c, vfs_read("", 0, None), ErrorCode::InvalidArgument).await;
    assert!(ws.is_dir());
}

#[tokio::test]
async fn vfs_escapes_are_refused_audited_and_leave_the_outside_untouched() {
    let d = TestDaemon::builder().start();
    let ws = d.workspace.path();
    let outside = short_tempdir();
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    symlink(outside.path(), ws.join("out")).unwrap();
    symlink(outside.path().join("secret"), ws.join("secret-link")).unwrap();
    symlink("../../..", ws.join("up")).unwrap();
    let c = d.client().await;

    let lexical = ErrorCode::InvalidArgument;
    let escape = ErrorCode::PathEscape;
    let cases = [
        (vfs_read("../x", 0, None), lexical),
        (vfs_read("/etc/passwd", 0, None), lexical),
        (vfs_read("a/../../x", 0, None), lexical),
        (vfs_write("../escaped", b"x", true), lexical),
        (vfs_read("out/secret", 0, None), escape),
        (vfs_read("secret-link", 0, None), escape),
        (vfs_read("up/etc/passwd", 0, None), escape),
        (vfs_stat("out/secret"), escape),
        (vfs_list("out"), escape),
        (vfs_write("out/secret", b"pwned", false), escape),
        (vfs_write("secret-link", b"pwned", false), escape),
        (vfs_write("out/new", b"pwned", true), escape),
        (vfs_mkdir("out/dir", true), escape),
        (vfs_remove("out/secret", false), escape),
    ];
    let mut expected = Vec::new();
    for (request, code) in cases {
        let (action, target) = (request.name(), request.target());
        // Writes are recorded, and so is every escape through a link (a denial, whatever
        // the audit policy); a read refused for its spelling alone is not.
        let recorded = request.mutates() || code == escape;
        refused_with(&c, request, code).await;
        if recorded {
            expected.push((action, target, code));
        }
    }
    // Nothing outside changed.
    assert_eq!(
        std::fs::read(outside.path().join("secret")).unwrap(),
        b"secret"
    );
    assert_eq!(common::files_in(outside.path()), ["secret"]);
    assert!(!ws.parent().unwrap().join("escaped").exists());
    // The links themselves are still there (the refused remove did not follow them).
    assert!(ws.join("out").symlink_metadata().unwrap().is_symlink());

    // Every write and every escape is in the audit log with its outcome.
    let me = audit_actor(&c);
    let entries = wait_audit(&c, |es| {
        expected
            .iter()
            .all(|(a, t, _)| es.iter().any(|e| e.action == *a && e.target == *t))
    })
    .await;
    for (action, target, code) in &expected {
        let e = entries
            .iter()
            .find(|e| e.action == *action && e.target == *target)
            .unwrap();
        assert!(
            e.outcome.starts_with(&format!("{code}: ")),
            "{action} {target}: {}",
            e.outcome
        );
        assert_eq!(e.actor, me);
    }
}

#[tokio::test]
async fn vfs_oversize_reads_and_writes_are_too_large() {
    // A larger frame limit lets a write over the VFS limit (16 MiB) reach the VFS at all.
    let d = TestDaemon::builder()
        .args(&["--max-frame", "40000000"])
        .start();
    let ws = d.workspace.path();
    let c = d.client().await;
    let limit = 16 << 20;
    let over = vec![7u8; limit + 1];
    let m = refused_with(&c, vfs_write("big", &over, false), ErrorCode::TooLarge).await;
    assert!(m.contains(&(limit + 1).to_string()), "{m}");
    assert!(!ws.join("big").exists());
    assert!(
        common::files_in(ws).is_empty(),
        "{:?}",
        common::files_in(ws)
    );

    std::fs::write(ws.join("big"), &over).unwrap();
    refused_with(&c, vfs_read("big", 0, None), ErrorCode::TooLarge).await;
    refused_with(
        &c,
        vfs_read("big", 0, Some(limit as u64 + 1)),
        ErrorCode::TooLarge,
    )
    .await;
    // Parts within the limit are fine.
    let part: ReadResult = ok(&c, vfs_read("big", 100, Some(1000))).await;
    assert_eq!((part.data.len(), part.size), (1000, limit as u64 + 1));
    let small: ReadResult = ok(&c, vfs_read("big", 1 << 20, Some(1 << 20))).await;
    assert_eq!(small.data.len(), 1 << 20);
}

/// Reads the length prefix of the next frame on `raw`.
fn next_frame_len(raw: &mut common::Raw) -> usize {
    use std::io::Read as _;
    let mut prefix = [0u8; 4];
    raw.stream.read_exact(&mut prefix).unwrap();
    usize::try_from(u32::from_be_bytes(prefix)).unwrap()
}

#[tokio::test]
async fn a_read_of_exactly_the_read_limit_reaches_the_client() {
    // The VFS returns up to 16 MiB per read; the reply carrying them must still be a frame
    // the client accepts (the frame limit is 16 MiB in both directions).
    let d = TestDaemon::builder().start();
    let limit: usize = 16 << 20;
    std::fs::write(d.workspace.path().join("max"), vec![1u8; limit]).unwrap();
    let mut raw = d.raw();
    raw.request(1, vfs_read("max", 0, None));
    let len = next_frame_len(&mut raw);
    assert!(
        len <= DEFAULT_MAX_FRAME_LEN,
        "the daemon sent a reply frame of {len} bytes, over the {DEFAULT_MAX_FRAME_LEN}-byte \
         frame limit that clients enforce"
    );
    drop(raw);
    let c = d.client().await;
    match c.call::<ReadResult>(vfs_read("max", 0, None)).await {
        Ok(read) => assert_eq!(read.data.len(), limit),
        // Refusing it cleanly is acceptable too; a connection torn down is not.
        Err(ClientError::Remote(body)) => assert_eq!(body.code, ErrorCode::TooLarge, "{body}"),
        Err(e) => panic!("a read at the limit broke the connection: {e}"),
    }
    c.ping().await.unwrap();
}

#[tokio::test]
async fn the_audit_tail_fits_in_a_frame_whatever_was_requested() {
    // A refused write is audited with its target; two huge (refused) keys must not make
    // the log unreadable through the API.
    let d = TestDaemon::builder().start();
    let c = d.client().await;
    let huge = "k".repeat(9 << 20);
    for _ in 0..2 {
        refused_with(&c, put(&huge, b"v"), ErrorCode::InvalidArgument).await;
    }
    let _: Written = ok(&c, put("small", b"v")).await;
    let mut raw = d.raw();
    raw.request(
        1,
        Request::AuditTail {
            n: Some(5),
            from: None,
        },
    );
    let len = next_frame_len(&mut raw);
    assert!(
        len <= DEFAULT_MAX_FRAME_LEN,
        "the daemon sent an AuditTail reply of {len} bytes, over the \
         {DEFAULT_MAX_FRAME_LEN}-byte frame limit that clients enforce"
    );
    drop(raw);
    let entries: Vec<AuditEntry> = c
        .call(Request::AuditTail {
            n: Some(5),
            from: None,
        })
        .await
        .unwrap_or_else(|e| panic!("AuditTail after huge refused keys: {e}"));
    assert!(entry(&entries, "KvPut", "small").is_some());
    // The refusals are recorded, without copying megabytes into the log.
    let all = all_entries(&c).await;
    let refusals: Vec<&AuditEntry> = all
        .iter()
        .filter(|e| e.action == "KvPut" && e.outcome.starts_with("invalid_argument"))
        .collect();
    assert_eq!(refusals.len(), 2, "{}", show(&all));
    assert!(refusals.iter().all(|e| e.target.len() < 64 * 1024));
    let out = d.cli(&["audit", "tail", "-n", "5"]);
    assert!(out.status.success(), "{out:?}");
}

// ---------------------------------------------------------------------------------------
// Supervision of the service actors
// ---------------------------------------------------------------------------------------

fn json_node<'a>(node: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    if node["name"] == name {
        return Some(node);
    }
    node["children"]
        .as_array()?
        .iter()
        .find_map(|c| json_node(c, name))
}

#[test]
fn ps_lists_the_service_actors_running() {
    let d = TestDaemon::builder().start();
    let tree: serde_json::Value = serde_json::from_str(&cli_ok(&d, &["--json", "ps"])).unwrap();
    for name in ["audit", "store", "capabilities", "vfs"] {
        let node = json_node(&tree, name).unwrap_or_else(|| panic!("no {name}: {tree:#}"));
        assert_eq!(node["state"], "running", "{node}");
        assert_eq!(node["kind"], "worker", "{node}");
        assert_eq!(node["restart"], "permanent", "{node}");
        assert_eq!(node["restarts"], 0, "{node}");
    }
    let text = cli_ok(&d, &["ps"]);
    for name in ["audit", "store", "capabilities", "vfs"] {
        assert!(
            text.lines()
                .any(|l| l.contains(name) && l.contains("running")),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_panicking_store_is_restarted_and_keeps_its_data() {
    let d = TestDaemon::builder().fault_injection().start();
    let c = d.client().await;
    for i in 0..10 {
        let _: Written = ok(&c, put(&format!("before-{i}"), format!("v{i}").as_bytes())).await;
    }
    inject(&c, "store", Fault::Panic).await;
    let store = wait_node(&c, "store", |n| {
        n.restarts == 1 && n.state == ChildState::Running
    })
    .await;
    let failure = store.last_failure.unwrap();
    assert!(failure.reason.contains("panicked"), "{failure:?}");
    for i in 0..10 {
        let got = value_of(&c, &format!("before-{i}")).await;
        assert_eq!(got.unwrap(), format!("v{i}").as_bytes());
    }
    let _: Written = ok(&c, put("after", b"new")).await;
    assert_eq!(value_of(&c, "after").await.unwrap(), b"new");
    // The restart is in the audit log, and the chain is intact.
    let entries = wait_audit(&c, |es| entry(es, "restart", "store").is_some()).await;
    let restart = entry(&entries, "restart", "store").unwrap();
    assert_eq!(restart.actor, "supervisor");
    assert_eq!(restart.outcome, "ok (restart 1)");
    let v: Verification = ok(&c, Request::AuditVerify).await;
    assert!(v.ok, "{v:?}");
}

#[tokio::test]
async fn a_panicking_audit_actor_keeps_the_chain_going() {
    let d = TestDaemon::builder().fault_injection().start();
    let c = d.client().await;
    let _: Written = ok(&c, put("one", b"1")).await;
    inject(&c, "audit", Fault::Panic).await;
    wait_node(&c, "audit", |n| {
        n.restarts == 1 && n.state == ChildState::Running
    })
    .await;
    let _: Written = ok(&c, put("two", b"2")).await;
    let entries = all_entries(&c).await;
    assert_chained(&entries);
    assert!(entry(&entries, "KvPut", "one").is_some());
    assert!(
        entry(&entries, "KvPut", "two").is_some(),
        "{}",
        show(&entries)
    );
    let v: Verification = ok(&c, Request::AuditVerify).await;
    assert!(v.ok, "{v:?}");
}

#[tokio::test]
async fn a_hung_store_times_out_puts_without_half_writes() {
    let d = TestDaemon::builder()
        .args(&["--allow-fault-injection", "--call-timeout", "200ms"])
        .start();
    let c = d.client().await;
    let _: Written = ok(&c, put("h", b"old")).await;
    inject(&c, "store", Fault::Hang { millis: 1500 }).await;
    let started = Instant::now();
    let m = refused_with(&c, put("h", b"new"), ErrorCode::Timeout).await;
    assert!(started.elapsed() < Duration::from_millis(1200), "{m}");
    refused_with(&c, get("h"), ErrorCode::Timeout).await;
    // Other services are unaffected.
    c.ping().await.unwrap();
    let _: Vec<Grant> = ok(&c, caps_of(None)).await;
    // The timed-out put is audited as such, before its reply.
    let entries = tail(&c, 50).await;
    let e = entry(&entries, "KvPut", "h").unwrap();
    assert!(e.outcome.starts_with("timeout"), "{}", show(&entries));

    // Once the store wakes up it serves again without a restart.
    let back = poll_async(DEADLINE, async || c.call::<KvValue>(get("h")).await).await;
    back.unwrap_or_else(|e| panic!("the store never came back: {e}"));
    // A later acknowledged write commits anything still queued before it.
    let _: Written = ok(&c, put("fence", b"f")).await;
    let value = value_of(&c, "h").await.unwrap();
    assert!(
        value == b"old" || value == b"new",
        "a timed-out put left {value:?}"
    );
    assert_eq!(
        value_of(&c, "h").await.unwrap(),
        value,
        "the value is stable"
    );
    assert_eq!(c.tree().await.unwrap().find("store").unwrap().restarts, 0);
}

#[test]
fn a_corrupted_database_file_fails_boot_with_a_clear_error_and_leaves_nothing() {
    let home = short_tempdir();
    let state = home.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("ledger.redb"), vec![0x5a_u8; 64 * 1024]).unwrap();
    let mut d = TestDaemon::builder().home(home).spawn();
    let status = d
        .wait_exit(DEADLINE)
        .expect("boot fails instead of serving");
    assert_eq!(status.code(), Some(1), "{status}");
    let stderr = d.stderr();
    assert!(
        stderr.contains("cannot open the database") && stderr.contains("ledger.redb"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    // Nothing was bound or written for clients, and the damaged file is left for inspection.
    assert!(d.leftover_files().is_empty(), "{:?}", d.leftover_files());
    assert_eq!(
        std::fs::read(d.layout.state().join("ledger.redb"))
            .unwrap()
            .len(),
        64 * 1024
    );
}
