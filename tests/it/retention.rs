//! What keeps a persistent daemon's disk bounded, through a real daemon: the audit log's
//! retention by size and by age, at checkpoints and on `AuditPrune` (`astrid audit prune`),
//! with an anchor entry in place of what was removed, the chain verifying from it, continuing
//! across a restart, and a tampered entry after it still detected; and the journal shrinking
//! back after a burst.

use astrid::client::Client;
use astrid::protocol::{AuditEntry, PruneReport, PrunedRange, Request, Verification, Written};
use rustix::process::Signal;

use crate::common::{DEADLINE, TestDaemon, poll_async, short_tempdir, tamper};

async fn put(client: &Client, key: &str) {
    let _: Written = client
        .call(Request::KvPut {
            key: key.into(),
            value: vec![b'v'; 64],
        })
        .await
        .unwrap();
}

async fn verify(client: &Client) -> Verification {
    client.call(Request::AuditVerify).await.unwrap()
}

async fn oldest(client: &Client) -> AuditEntry {
    let page: Vec<AuditEntry> = client
        .call(Request::AuditTail {
            n: Some(1),
            from: Some(0),
        })
        .await
        .unwrap();
    page.into_iter().next().expect("an entry")
}

/// The sequence number of the entry about key `target`.
async fn oldest_of(client: &Client, target: &str) -> u64 {
    let page: Vec<AuditEntry> = client
        .call(Request::AuditTail {
            n: Some(1000),
            from: Some(0),
        })
        .await
        .unwrap();
    page.iter()
        .find(|e| e.target == target)
        .expect("the entry")
        .seq
}

#[tokio::test]
async fn past_its_size_the_log_is_pruned_at_checkpoints_and_verifies_from_the_anchor() {
    let d = TestDaemon::builder()
        .args(&["--audit-max-size", "64KiB"])
        .start();
    let client = d.client().await;
    // About 400 bytes each on disk: 500 entries are three times the limit.
    for i in 0..500 {
        put(&client, &format!("key-{i}")).await;
    }
    // The checkpoint that follows the writes (within a second) prunes the log.
    let v = poll_async(DEADLINE, async || {
        let v = verify(&client).await;
        if v.pruned.is_some() { Ok(v) } else { Err(v) }
    })
    .await
    .unwrap_or_else(|v| panic!("never pruned: {v:?}"));
    assert!(v.ok, "{v:?}");
    let range = v.pruned.unwrap();
    assert_eq!(range.first, 1);
    assert!(v.entries < 250, "{v:?}");
    let anchor = oldest(&client).await;
    assert_eq!(
        (anchor.seq, anchor.actor.as_str(), anchor.action.as_str()),
        (range.last, "kernel", "pruned")
    );
    assert_eq!(anchor.target, format!("1..={}", range.last));
    assert!(anchor.outcome.contains("(size)"), "{}", anchor.outcome);

    // The newest entries are all there.
    let tail: Vec<AuditEntry> = client
        .call(Request::AuditTail {
            n: Some(1),
            from: None,
        })
        .await
        .unwrap();
    assert_eq!(tail[0].target, "key-499");

    // `astrid audit verify` says where it checked from; `astrid audit prune` has nothing to do.
    let out = d.cli(&["audit", "verify"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("entries 1..={} were pruned", range.last)),
        "{text}"
    );
    let out = d.cli(&["audit", "prune"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("nothing to prune"), "{text}");
}

#[tokio::test]
async fn by_age_on_request_and_the_chain_continues_across_a_restart_and_detects_tampering() {
    let mut d = TestDaemon::builder()
        .args(&["--audit-max-age", "300ms"])
        .start();
    let client = d.client().await;
    for i in 0..20 {
        put(&client, &format!("old-{i}")).await;
    }
    let old = oldest_of(&client, "old-19").await;
    // Once they are older than 300 ms, they are pruned (with the boot entries), by a
    // checkpoint or by the prune asked here, whichever comes first.
    let report: PruneReport = poll_async(DEADLINE, async || {
        let r: PruneReport = client.call(Request::AuditPrune).await.unwrap();
        if r.pruned.is_some_and(|p| p.last >= old) {
            Ok(r)
        } else {
            Err(r)
        }
    })
    .await
    .unwrap_or_else(|r| panic!("never pruned by age: {r:?}"));
    assert!(
        ["age", "nothing"].contains(&report.reason.as_str()),
        "{report:?}"
    );
    let PrunedRange { first, last } = report.pruned.unwrap();
    assert_eq!(first, 1);
    let anchor = oldest(&client).await;
    assert!(anchor.outcome.contains("(age)"), "{}", anchor.outcome);
    let v = verify(&client).await;
    assert!(v.ok, "{v:?}");
    assert_eq!(v.pruned, Some(PrunedRange { first, last }));

    // New entries link to the anchor, across a restart too.
    put(&client, "new").await;
    drop(client);
    d.signal(Signal::TERM);
    assert!(d.wait_exit(DEADLINE).unwrap().success());
    let home = std::mem::replace(&mut d.home, short_tempdir());
    drop(d);
    let mut d = TestDaemon::builder()
        .home(home)
        .args(&["--audit-max-age", "1h"])
        .start();
    let client = d.client().await;
    put(&client, "after-restart").await;
    let v = verify(&client).await;
    assert!(v.ok, "{v:?}");
    assert_eq!(v.pruned.map(|p| p.first), Some(1));
    let newest: Vec<AuditEntry> = client
        .call(Request::AuditTail {
            n: Some(100),
            from: None,
        })
        .await
        .unwrap();
    let victim = newest.iter().find(|e| e.target == "new").unwrap().seq;
    assert!(victim > last);

    // An entry after the anchor, altered while the daemon is down, is found at boot.
    drop(client);
    d.signal(Signal::TERM);
    assert!(d.wait_exit(DEADLINE).unwrap().success());
    tamper(&d.layout.state().join("ledger.redb"), victim, "forged");
    let home = std::mem::replace(&mut d.home, short_tempdir());
    drop(d);
    let d = TestDaemon::builder()
        .home(home)
        .args(&["--audit-max-age", "1h"])
        .start();
    let client = d.client().await;
    let status = client.status().await.unwrap();
    assert!(!status.audit.ok, "{:?}", status.audit);
    assert_eq!(status.audit.first_bad, Some(victim));
    let v = verify(&client).await;
    assert_eq!((v.ok, v.first_bad), (false, Some(victim)), "{v:?}");
}

#[tokio::test]
async fn the_journal_shrinks_back_after_a_burst() {
    let d = TestDaemon::builder().start();
    let client = d.client().await;
    let journal = |n: u8| {
        std::fs::metadata(d.layout.state().join(format!("ledger.journal.{n}")))
            .map_or(0, |m| m.len())
    };
    // A burst of 8 MiB of values, in flight together: the active journal file grows past it.
    let burst = (0..8).map(|i| {
        let client = &client;
        async move {
            let _: Written = client
                .call(Request::KvPut {
                    key: format!("big-{i}"),
                    value: vec![b'x'; 1000 * 1024],
                })
                .await
                .unwrap();
        }
    });
    futures_util::future::join_all(burst).await;
    let grown = journal(0).max(journal(1));
    assert!(grown > 4 << 20, "the journal grew to {grown} bytes only");
    // The checkpoint a second later empties it, and the file that held the burst is cut back.
    let sizes = poll_async(DEADLINE, async || {
        let sizes = (journal(0), journal(1));
        if sizes.0.max(sizes.1) <= 1 << 20 {
            Ok(sizes)
        } else {
            Err(sizes)
        }
    })
    .await;
    assert!(sizes.is_ok(), "the journal stayed at {sizes:?}");
    // What the burst wrote is all there.
    let value: astrid::protocol::KvValue = client
        .call(Request::KvGet {
            key: "big-7".into(),
        })
        .await
        .unwrap();
    assert_eq!(value.value.map(|v| v.len()), Some(1000 * 1024));
}
