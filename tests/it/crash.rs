//! The crash test: a real daemon is killed with SIGKILL in the middle of a storm of
//! concurrent clients writing to the key-value store, and a new daemon started on the same
//! home must boot (reclaiming the dead one's lock, socket and files), still hold every write
//! that was acknowledged, with its value, and have an intact audit chain holding an `ok`
//! `KvPut` entry for each of them (mutations are acknowledged only once their audit entry
//! is durable). The kill is repeated at several moments of the storm on the same home.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::common::{DEADLINE, TestDaemon, poll_async_every};
use astrid::client::{Client, ClientError};
use astrid::protocol::{
    AuditEntry, ErrorCode, Grant, KvValue, Listing, Request, Verification, Written,
};
use rustix::process::Signal;

/// Concurrent clients, each on its own connection.
const CLIENTS: usize = 20;

/// One round per entry: the daemon is killed once this many puts have been acknowledged.
const KILL_AFTER: [usize; 4] = [1, 60, 250, 800];

/// The value stored under `key`: derived from it, with a non-UTF-8 byte, so a value that
/// was torn or mixed up with another key's is noticed.
fn value_for(key: &str) -> Vec<u8> {
    let mut value = format!("{key}=").repeat(8).into_bytes();
    value.push(0xff);
    value
}

/// What the storm's clients saw.
#[derive(Debug, Default)]
struct Tally {
    /// Keys whose put was answered with success.
    acked: Mutex<Vec<String>>,
    /// Puts sent and not yet answered.
    in_flight: AtomicUsize,
    /// Puts whose connection died before the answer.
    interrupted: AtomicUsize,
}

impl Tally {
    fn acked(&self) -> usize {
        self.acked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One client of the storm: puts distinct keys, each followed by a request that is audited
/// without changing anything, until the connection dies.
async fn storm_client(client: Client, round: usize, id: usize, tally: Arc<Tally>) {
    for i in 0.. {
        let key = format!("r{round}/c{id:02}/{i:05}");
        tally.in_flight.fetch_add(1, Ordering::SeqCst);
        let put = client
            .call::<Written>(Request::KvPut {
                key: key.clone(),
                value: value_for(&key),
            })
            .await;
        tally.in_flight.fetch_sub(1, Ordering::SeqCst);
        match put {
            Ok(written) => {
                assert_eq!(written.target, key);
                tally
                    .acked
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(key);
            }
            Err(ClientError::Remote(body)) => panic!("put {key} refused: {body}"),
            Err(_) => {
                tally.interrupted.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        let other = match i % 3 {
            0 => client.status().await.map(drop),
            1 => client
                .call::<Vec<Grant>>(Request::ListCapabilities { subject: None })
                .await
                .map(drop),
            _ => match client
                .call::<KvValue>(Request::KvGet { key: "\0".into() })
                .await
            {
                Err(ClientError::Remote(body)) => {
                    assert_eq!(body.code, ErrorCode::InvalidArgument, "{body}");
                    Ok(())
                }
                Ok(value) => panic!("an invalid key was read: {value:?}"),
                Err(e) => Err(e),
            },
        };
        match other {
            Ok(()) => {}
            Err(ClientError::Remote(body)) => panic!("{body}"),
            // The daemon is gone.
            Err(_) => return,
        }
    }
}

/// Checks the store and the audit log of the daemon that followed round `round`'s crash.
async fn check_after_crash(d: &TestDaemon, round: usize, acked: &[String], earlier: &[String]) {
    let c = d.client().await;
    let listing: Listing = c
        .call(Request::KvList {
            prefix: format!("r{round}/"),
            limit: Some(10_000),
        })
        .await
        .unwrap();
    assert!(!listing.truncated);
    let present: BTreeSet<&str> = listing.keys.iter().map(String::as_str).collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|k| !present.contains(k.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "round {round}: {} of {} acknowledged puts were lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    // Every key there, acknowledged or not, holds exactly its own value.
    for key in &listing.keys {
        let got: KvValue = c.call(Request::KvGet { key: key.clone() }).await.unwrap();
        assert_eq!(
            got.value.as_deref(),
            Some(value_for(key).as_slice()),
            "{key}"
        );
    }
    // Earlier rounds' acknowledged keys survived this crash too.
    let everything: Listing = c
        .call(Request::KvList {
            prefix: String::new(),
            limit: Some(10_000),
        })
        .await
        .unwrap();
    let all: BTreeSet<&str> = everything.keys.iter().map(String::as_str).collect();
    assert!(earlier.iter().all(|k| all.contains(k.as_str())));

    let verification: Verification = c.call(Request::AuditVerify).await.unwrap();
    assert!(verification.ok, "round {round}: {verification:?}");
    let status = c.status().await.unwrap();
    assert!(
        status.audit.ok,
        "the chain verified at boot: {:?}",
        status.audit
    );
    // Page through the whole log, 1000 entries at a time.
    let mut entries: Vec<AuditEntry> = Vec::new();
    loop {
        let from = entries.last().map_or(1, |e| e.seq + 1);
        let page: Vec<AuditEntry> = c
            .call(Request::AuditTail {
                n: Some(1000),
                from: Some(from),
            })
            .await
            .unwrap();
        // A short page is the end (every page request is itself recorded, so waiting for an
        // empty one would chase the log's own tail).
        let short = page.len() < 1000;
        entries.extend(page);
        if short {
            break;
        }
    }
    assert_eq!(entries[0].seq, 1, "the pages cover the whole log");
    assert!(
        entries.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "no gaps between pages"
    );
    let audited: BTreeSet<&str> = entries
        .iter()
        .filter(|e| e.action == "KvPut" && e.outcome == "ok")
        .map(|e| e.target.as_str())
        .collect();
    let unaudited: Vec<&String> = acked
        .iter()
        .chain(earlier)
        .filter(|k| !audited.contains(k.as_str()))
        .collect();
    assert!(
        unaudited.is_empty(),
        "round {round}: {} acknowledged puts have no audit entry, e.g. {:?}",
        unaudited.len(),
        &unaudited[..unaudited.len().min(5)]
    );
    // Nobody shut down: every stop so far was a kill.
    assert!(entries.iter().all(|e| e.action != "shutdown"));
    let boots = entries.iter().filter(|e| e.action == "boot").count();
    assert_eq!(boots, round + 2, "one boot entry per daemon started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_storm_loses_no_acknowledged_write_or_its_audit_entry() {
    let started = Instant::now();
    let mut d = TestDaemon::builder().start();
    let mut earlier: Vec<String> = Vec::new();
    let mut interrupted = 0;
    for (round, kill_after) in KILL_AFTER.into_iter().enumerate() {
        let tally = Arc::new(Tally::default());
        let mut clients = Vec::new();
        for id in 0..CLIENTS {
            let client = d.client().await;
            clients.push(tokio::spawn(storm_client(
                client,
                round,
                id,
                Arc::clone(&tally),
            )));
        }
        let storm = async || (tally.acked() >= kill_after).then_some(()).ok_or(());
        poll_async_every(DEADLINE, Duration::from_millis(1), storm)
            .await
            .unwrap_or_else(|()| panic!("round {round}: the storm stalled"));
        let in_flight = tally.in_flight.load(Ordering::SeqCst);
        d = tokio::task::block_in_place(|| d.kill_and_restart(&[]));
        for client in clients {
            tokio::time::timeout(DEADLINE, client)
                .await
                .expect("every client notices the dead daemon")
                .unwrap();
        }
        let acked = std::mem::take(&mut *tally.acked.lock().unwrap());
        let cut = tally.interrupted.load(Ordering::SeqCst);
        interrupted += cut;
        eprintln!(
            "round {round}: killed after {} acknowledged puts, {in_flight} in flight, \
             {cut} interrupted ({:?})",
            acked.len(),
            started.elapsed()
        );
        check_after_crash(&d, round, &acked, &earlier).await;
        earlier.extend(acked);
    }
    assert!(
        interrupted > 0,
        "no kill caught a put in flight; the test did not test anything"
    );
    // After all that, the daemon still stops cleanly.
    d.signal(Signal::TERM);
    let status = tokio::task::block_in_place(|| d.wait_exit(DEADLINE));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_mins(1),
        "{:?}",
        started.elapsed()
    );
}
