//! The imports of ABI 1.1 that reach past the kernel's services, through a real daemon and
//! the CLI: `clock_now`, `random_fill` (and its bounds), and `config_get` with the settings
//! of `[[config]]`: defaults, values set with `astrid settings`, a secret read only from
//! standard input and never shown back, logged or audited, a missing required setting
//! failing the call with the command that sets it (the capsule is not restarted for it),
//! and bad names and values refused with clear errors.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::time::{SystemTime, UNIX_EPOCH};

use astrid::client::Client;
use astrid::protocol::{CapsuleSetting, ErrorCode, Request};
use rmpv::Value;
use rustix::process::Signal;

use crate::common::{
    DEADLINE, TestDaemon, audit_tail, failure, invoke, one_command_manifest, output_text,
    short_tempdir, write_capsule,
};

/// A guest whose commands each call one import; `$bin` replies a MessagePack bin of memory,
/// `$code` replies a negative import result as a positive integer.
const GUEST: &str = r#"(module
  (import "astrid" "clock_now" (func $now (result i64)))
  (import "astrid" "random_fill" (func $rand (param i32 i32) (result i32)))
  (import "astrid" "config_get" (func $cfg (param i32 i32) (result i64)))
  (memory (export "memory") 2 2)
  (global $bump (mut i32) (i32.const 32768))
  (data (i32.const 0) "region")
  (data (i32.const 16) "token")
  (data (i32.const 32) "nope")
  (func (export "astrid_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $len)))
    (local.get $p))
  (func $bin (param $src i32) (param $len i32) (result i64)
    (i32.store8 (i32.const 1024) (i32.const 0xc4))
    (i32.store8 (i32.const 1025) (local.get $len))
    (memory.copy (i32.const 1026) (local.get $src) (local.get $len))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32))
            (i64.extend_i32_u (i32.add (local.get $len) (i32.const 2)))))
  (func $code (param $c i64) (result i64)
    (i32.store8 (i32.const 1024) (i32.wrap_i64 (i64.sub (i64.const 0) (local.get $c))))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 1)))
  (func $get (param $k i32) (param $kl i32) (result i64)
    (local $r i64)
    (local.set $r (call $cfg (local.get $k) (local.get $kl)))
    (if (result i64) (i64.lt_s (local.get $r) (i64.const 0))
      (then (call $code (local.get $r)))
      (else (call $bin
        (i32.wrap_i64 (i64.shr_u (local.get $r) (i64.const 32)))
        (i32.wrap_i64 (i64.and (local.get $r) (i64.const 0xffffffff)))))))
  (func (export "astrid_command") (param $p i32) (param $l i32) (result i64)
    (local $c i32)
    ;; {"command": "<name>", ...}: the name's first letter.
    (local.set $c (i32.load8_u (i32.add (local.get $p) (i32.const 10))))
    (if (i32.eq (local.get $c) (i32.const 110)) ;; n: now
      (then (i64.store (i32.const 2048) (call $now))
            (return (call $bin (i32.const 2048) (i32.const 8)))))
    (if (i32.eq (local.get $c) (i32.const 114)) ;; r: rand
      (then (drop (call $rand (i32.const 2048) (i32.const 32)))
            (return (call $bin (i32.const 2048) (i32.const 32)))))
    (if (i32.eq (local.get $c) (i32.const 104)) ;; h: huge
      (then (return (call $code (i64.extend_i32_s
        (call $rand (i32.const 0) (i32.const 1048577)))))))
    (if (i32.eq (local.get $c) (i32.const 111)) ;; o: outside
      (then (return (call $code (i64.extend_i32_s
        (call $rand (i32.const 131068) (i32.const 8)))))))
    (if (i32.eq (local.get $c) (i32.const 103)) ;; g: geo
      (then (return (call $get (i32.const 0) (i32.const 6)))))
    (if (i32.eq (local.get $c) (i32.const 116)) ;; t: token
      (then (return (call $get (i32.const 16) (i32.const 5)))))
    (call $get (i32.const 32) (i32.const 4))))"#;

const SECRET: &str = "s3cret-Value-42";

fn manifest() -> String {
    let mut extra = String::new();
    for command in ["rand", "huge", "outside", "geo", "token", "undeclared"] {
        let _ = write!(extra, "[[command]]\nname = \"{command}\"\n\n");
    }
    extra.push_str(
        "[[config]]\nname = \"region\"\ndescription = \"Where to reach\"\ndefault = \"eu\"\n\n\
         [[config]]\nname = \"token\"\ndescription = \"The service's API token\"\nsecret = true\n",
    );
    one_command_manifest("now", &extra)
        .replace("name = \"now\"\nversion", "name = \"cfg\"\nversion")
}

async fn output(client: &Client, name: &str) -> Value {
    invoke(client, name, &[])
        .await
        .unwrap_or_else(|e| panic!("/{name}: {e}"))
        .output
}

fn bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::Binary(b) => b.clone(),
        other => panic!("expected bytes, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_and_randomness_need_no_grant_and_random_fill_is_bounded() {
    let d = daemon();
    let client = d.client().await;
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let now = bytes(&output(&client, "now").await);
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let now = u128::from(u64::from_le_bytes(now.try_into().unwrap()));
    assert!(
        before <= now && now <= after,
        "{before} <= {now} <= {after}"
    );

    let a = bytes(&output(&client, "rand").await);
    let b = bytes(&output(&client, "rand").await);
    assert_eq!((a.len(), b.len()), (32, 32));
    assert_ne!(a, b, "two draws of 32 random bytes are equal");
    assert!(a.iter().any(|&x| x != 0));
    // Over 1 MiB: too large (-4); past the end of its memory: invalid (-3).
    assert_eq!(output(&client, "huge").await, Value::from(4));
    assert_eq!(output(&client, "outside").await, Value::from(3));
}

/// A daemon whose home holds the capsule `cfg`.
fn daemon() -> TestDaemon {
    TestDaemon::builder()
        .prepare(|home, _| {
            write_capsule(
                &home.join("capsules"),
                "cfg",
                &manifest(),
                &[("m.wat", GUEST.as_bytes())],
            );
        })
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_apply_and_a_missing_required_setting_fails_the_call_not_the_capsule() {
    let d = daemon();
    let client = d.client().await;

    // Defaults, an undeclared key, and a required setting that is missing.
    assert_eq!(bytes(&output(&client, "geo").await), b"eu");
    assert_eq!(output(&client, "undeclared").await, Value::from(3));
    let (code, message) = failure(invoke(&client, "token", &[]).await);
    assert_eq!(code, ErrorCode::CapsuleError, "{message}");
    assert!(
        message.contains("astrid settings set cfg token")
            && message.contains("The service's API token"),
        "{message}"
    );
    // Not the capsule's fault: it was not restarted, and it still answers.
    assert_eq!(bytes(&output(&client, "geo").await), b"eu");
    let info = client.capsules().await.unwrap();
    let cfg = info.iter().find(|c| c.name == "cfg").unwrap();
    assert_eq!(cfg.restarts, 0, "{cfg:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_comes_from_stdin_and_is_never_shown_back_logged_or_audited() {
    let mut d = daemon();
    let client = d.client().await;

    // A secret is refused on the command line, and taken from standard input.
    let refused = d.cli(&["settings", "set", "cfg", "token", SECRET]);
    assert_eq!(refused.status.code(), Some(1), "{}", output_text(&refused));
    assert!(
        output_text(&refused).contains("is a secret"),
        "{}",
        output_text(&refused)
    );
    let set = d.cli_fed(
        &["settings", "set", "cfg", "token"],
        format!("{SECRET}\n").as_bytes(),
    );
    assert!(set.status.success(), "{}", output_text(&set));
    let plain = d.cli(&["settings", "set", "cfg", "region", "us"]);
    assert!(plain.status.success(), "{}", output_text(&plain));
    assert_eq!(bytes(&output(&client, "token").await), SECRET.as_bytes());
    assert_eq!(bytes(&output(&client, "geo").await), b"us");

    // Listed without the secret's value, as JSON and as text.
    let listed: Vec<CapsuleSetting> = client
        .call(Request::ListSettings {
            capsule: "cfg".into(),
        })
        .await
        .unwrap();
    let token = listed.iter().find(|s| s.name == "token").unwrap();
    assert!(token.set && token.secret && token.required && token.value.is_none());
    let region = listed.iter().find(|s| s.name == "region").unwrap();
    assert_eq!(region.value.as_deref(), Some("us"));
    for args in [
        &["settings", "ls", "cfg"][..],
        &["--json", "settings", "ls", "cfg"],
    ] {
        let out = d.cli(args);
        assert!(out.status.success(), "{}", output_text(&out));
        assert!(!output_text(&out).contains(SECRET), "{}", output_text(&out));
        assert!(output_text(&out).contains("token"), "{}", output_text(&out));
    }

    // `astrid metadata` tells only whether each is set.
    let meta = d.cli(&["metadata", "cfg"]);
    assert!(meta.status.success(), "{}", output_text(&meta));
    assert!(
        output_text(&meta).contains("setting token (set, secret)"),
        "{}",
        output_text(&meta)
    );
    assert!(
        output_text(&meta).contains("setting region (set)"),
        "{}",
        output_text(&meta)
    );
    let meta = d.cli(&["--json", "metadata", "cfg"]);
    assert!(
        !output_text(&meta).contains(SECRET) && !output_text(&meta).contains("\"us\""),
        "{}",
        output_text(&meta)
    );

    // Kept private in the home; audited by name only; never in the logs.
    let file = d.home.path().join("settings/cfg.toml");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let entries = audit_tail(&client, 200).await;
    let changes: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "SetSetting")
        .collect();
    assert!(
        changes.iter().any(|e| e.target == "cfg/token"),
        "{changes:?}"
    );
    let all = format!("{entries:?}");
    assert!(!all.contains(SECRET), "the audit log holds the secret");
    for log in std::fs::read_dir(d.home.path().join("logs")).unwrap() {
        let log = std::fs::read(log.unwrap().path()).unwrap();
        assert!(
            !String::from_utf8_lossy(&log).contains(SECRET),
            "a log file holds the secret"
        );
    }

    // The values outlive the daemon.
    drop(client);
    d.signal(Signal::TERM);
    assert!(d.wait_exit(DEADLINE).unwrap().success());
    let home = std::mem::replace(&mut d.home, short_tempdir());
    drop(d);
    let d = TestDaemon::builder().home(home).start();
    let client = d.client().await;
    assert_eq!(bytes(&output(&client, "token").await), SECRET.as_bytes());
    assert_eq!(bytes(&output(&client, "geo").await), b"us");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_and_values_are_refused_and_unset_brings_the_default_back() {
    let d = daemon();
    let client = d.client().await;
    let file = d.home.path().join("settings/cfg.toml");
    let set = d.cli_fed(&["settings", "set", "cfg", "token"], SECRET.as_bytes());
    assert!(set.status.success(), "{}", output_text(&set));
    let set = d.cli(&["settings", "set", "cfg", "region", "us"]);
    assert!(set.status.success(), "{}", output_text(&set));

    // Bad names and values.
    let unknown = d.cli(&["settings", "set", "cfg", "nope", "x"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        output_text(&unknown).contains("declares: region, token"),
        "{}",
        output_text(&unknown)
    );
    let nobody = d.cli(&["settings", "ls", "nosuch"]);
    assert!(
        output_text(&nobody).contains("not_found"),
        "{}",
        output_text(&nobody)
    );
    let huge = d.cli_fed(&["settings", "set", "cfg", "region"], &vec![b'a'; 70_000]);
    assert!(
        output_text(&huge).contains("bad_request"),
        "{}",
        output_text(&huge)
    );

    // Unset: the default applies again, and the secret is required again.
    let unset = d.cli(&["settings", "unset", "cfg", "token"]);
    assert!(unset.status.success(), "{}", output_text(&unset));
    let (code, _) = failure(invoke(&client, "token", &[]).await);
    assert_eq!(code, ErrorCode::CapsuleError);
    let unset = d.cli(&["settings", "unset", "cfg", "region"]);
    assert!(unset.status.success(), "{}", output_text(&unset));
    assert_eq!(bytes(&output(&client, "geo").await), b"eu");
    assert!(
        !file.exists(),
        "no settings left, but {} remains",
        file.display()
    );
}
