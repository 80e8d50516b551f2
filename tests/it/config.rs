//! `<home>/config.toml` and the audit policy, through a real daemon: the file's settings
//! reach the daemon below its flags, `GetConfig` and `astrid config show` say where each came
//! from, a bad file stops the daemon naming the key, and the audit log records what the
//! policy says (by default what changes state; with the file what it sets; denials always).

use std::time::Duration;

use astrid::client::Client;
use astrid::protocol::{
    AuditEntry, AuditLevel, ConfigReport, ErrorCode, RawValue, Request, Setting,
};

use crate::common::{TestDaemon, audit_tail, failure, wait_audit};

fn config_file(text: &'static str) -> impl FnOnce(&std::path::Path, &std::path::Path) {
    move |home, _| std::fs::write(home.join("config.toml"), text).unwrap()
}

fn setting<'a>(report: &'a ConfigReport, name: &str) -> &'a Setting {
    report
        .settings
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no setting {name} in {report:?}"))
}

/// Entries recorded for `action` (by a client, not the kernel).
fn of(entries: &[AuditEntry], action: &str) -> usize {
    entries.iter().filter(|e| e.action == action).count()
}

/// Sends six kinds of reads, `n` times each, then one `KvPut`, then a `ReloadCapsules` as a
/// barrier; returns the audit log. `ReloadCapsules` is answered once its entry, sent
/// through the audit actor after every entry of the reads, is durable: whatever the reads
/// were to record is in the log by then.
async fn reads_then_a_put(client: &Client, n: usize) -> Vec<AuditEntry> {
    for _ in 0..n {
        let _: rmpv::Value = client.call(Request::GetStatus).await.unwrap();
        let _: rmpv::Value = client.call(Request::GetConfig).await.unwrap();
        let _: rmpv::Value = client.call(Request::ListCapsules).await.unwrap();
        let _: rmpv::Value = client
            .call(Request::KvGet { key: "k".into() })
            .await
            .unwrap_or(rmpv::Value::Nil);
        let _: rmpv::Value = client
            .call(Request::VfsList { path: ".".into() })
            .await
            .unwrap();
        let _: rmpv::Value = client
            .call(Request::AuditTail {
                n: Some(1),
                from: None,
            })
            .await
            .unwrap();
    }
    let _: rmpv::Value = client
        .call(Request::KvPut {
            key: "k".into(),
            value: b"v".to_vec(),
        })
        .await
        .unwrap();
    let _: rmpv::Value = client.call(Request::ReloadCapsules).await.unwrap();
    audit_tail(client, 1000).await
}

#[tokio::test]
async fn the_file_sets_what_no_flag_does_and_config_show_says_where_each_came_from() {
    let d = TestDaemon::builder()
        .prepare(config_file(
            "# a comment\ncall_timeout = \"3s\"\nmax_connections = 100\ndb_cache = \"2MiB\"\n\
             capsule_linger = \"250ms\"\n[audit_policy]\nGetStatus = \"metadata\"\n",
        ))
        .args(&["--call-timeout", "2s"])
        .start();
    let client = d.client().await;
    let report = client.config().await.unwrap();
    assert!(report.file.ends_with("config.toml"), "{}", report.file);
    let source = |name| {
        let s = setting(&report, name);
        (s.value.clone(), s.source.clone())
    };
    assert_eq!(source("call_timeout"), ("2s".into(), "flag".into()));
    assert_eq!(source("max_connections"), ("100".into(), "config".into()));
    assert_eq!(source("db_cache"), ("2MiB".into(), "config".into()));
    assert_eq!(source("max_frame").1, "default");
    let status = report
        .audit_policy
        .iter()
        .find(|r| r.request == "GetStatus")
        .unwrap();
    assert_eq!(
        (status.level, status.source.as_str()),
        (AuditLevel::Metadata, "config")
    );

    let out = d.cli(&["config", "show"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{text}"))
            .to_owned()
    };
    assert!(line("call_timeout").contains("2s") && line("call_timeout").contains("(flag)"));
    assert!(
        line("max_connections").contains("100") && line("max_connections").contains("(config)")
    );
    assert!(line("idle_grace").contains("(default)"), "{text}");
    assert!(text.contains("GetStatus = \"metadata\""), "{text}");

    let out = d.cli(&["audit", "policy"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let kv_put = text.lines().find(|l| l.starts_with("KvPut ")).unwrap();
    assert!(
        kv_put.contains("metadata") && kv_put.contains("default"),
        "{kv_put}"
    );
    let get = text.lines().find(|l| l.starts_with("GetStatus ")).unwrap();
    assert!(get.contains("metadata") && get.contains("config"), "{get}");
    let ping = text.lines().find(|l| l.starts_with("Ping ")).unwrap();
    assert!(ping.contains("none"), "{ping}");
}

#[test]
fn a_bad_file_stops_the_daemon_with_the_key_named() {
    let cases: [(&'static str, &str); 5] = [
        ("call_timout = \"3s\"\n", "unknown key `call_timout`"),
        ("max_connections = \"many\"\n", "max-connections"),
        ("ephemeral = 1\n", "`ephemeral` takes true or false"),
        (
            "[audit_policy]\nGetStatsu = \"metadata\"\n",
            "`GetStatsu` is not a request kind",
        ),
        (
            "[audit_policy]\nPing = \"metadata\"\n",
            "`Ping` is never recorded itself",
        ),
    ];
    for (text, expected) in cases {
        let mut d = TestDaemon::builder().prepare(config_file(text)).spawn();
        let status = d
            .wait_exit(Duration::from_secs(10))
            .expect("the daemon exits");
        assert_eq!(status.code(), Some(2), "{text}");
        let stderr = d.stderr();
        assert!(stderr.contains("config.toml"), "{text}: {stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
    }
}

#[tokio::test]
async fn by_default_reads_are_not_recorded_but_writes_and_denials_are() {
    let d = TestDaemon::builder().start();
    let client = d.client().await;
    let entries = reads_then_a_put(&client, 20).await;
    for read in [
        "GetStatus",
        "GetConfig",
        "ListCapsules",
        "KvGet",
        "VfsList",
        "AuditTail",
    ] {
        assert_eq!(of(&entries, read), 0, "{read} was recorded");
    }
    assert_eq!(of(&entries, "KvPut"), 1);
    // Of the client's requests, the put and the barrier were recorded, nothing else.
    let from_client: Vec<&str> = entries
        .iter()
        .filter(|e| e.actor.starts_with("client:"))
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(from_client, ["KvPut", "ReloadCapsules"], "{entries:#?}");
}

#[tokio::test]
async fn the_file_raises_reads_and_lowers_writes() {
    let d = TestDaemon::builder()
        .prepare(config_file(
            "[audit_policy]\nGetStatus = \"metadata\"\nKvGet = \"metadata\"\nKvPut = \"none\"\n\
             Publish = \"none\"\n",
        ))
        .start();
    let client = d.client().await;
    let entries = reads_then_a_put(&client, 5).await;
    assert_eq!(of(&entries, "GetStatus"), 5);
    assert_eq!(of(&entries, "KvGet"), 5);
    assert_eq!(of(&entries, "ListCapsules"), 0);
    assert_eq!(of(&entries, "KvPut"), 0, "KvPut is set to none");
    let value: astrid::protocol::KvValue = client
        .call(Request::KvGet { key: "k".into() })
        .await
        .unwrap();
    assert_eq!(
        value.value.as_deref(),
        Some(&b"v"[..]),
        "the put itself happened"
    );

    // A request refused as forbidden is a denial: recorded whatever its level.
    let publish = |topic: &str| Request::Publish {
        topic: topic.into(),
        payload: RawValue::nil(),
    };
    let _: rmpv::Value = client.call(publish("user.allowed")).await.unwrap();
    let (code, _) = failure(client.call::<rmpv::Value>(publish("system.x")).await);
    assert_eq!(code, ErrorCode::Forbidden);
    let denial = wait_audit(&client, "the denied publish", |e| e.action == "Publish").await;
    assert_eq!(denial.target, "system.x");
    assert!(denial.outcome.contains("forbidden"), "{denial:?}");
    let _: rmpv::Value = client.call(Request::ReloadCapsules).await.unwrap();
    let entries = audit_tail(&client, 1000).await;
    assert_eq!(of(&entries, "Publish"), 1, "only the denial: {entries:#?}");
}
