//! Actor-level tests of the event bus (no socket): wildcard delivery, bounded subscriber
//! queues and their drop counters, topic and pattern validation, subscription management,
//! and what subscribers see when the bus stops or crashes under a supervisor.
//!
//! Publishing is synchronous inside the bus (`try_send` into each queue), so once a
//! `Publish` has been answered its deliveries are already queued and `try_recv` sees them.

use crate::common::{DEADLINE, poll_async};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, MailboxError};
use astrid_actors::bus::topic::TopicRule;
use astrid_actors::bus::{
    BusActor, BusError, BusStats, Deregister, Event, Events, GetBusStats, Publish, Published,
    Register, Registration, Subscribe, SubscriberStats, Unsubscribe,
};
use astrid_actors::protocol::RawValue;
use astrid_actors::supervisor::{
    ChildRef, ChildSpec, ChildState, Fault, GetTree, Inject, InjectFault, RestartPolicy,
    RestartType, ShutdownTree, SupervisorActor, SupervisorExit,
};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::oneshot;

async fn register(bus: &Addr<BusActor>, label: &str, patterns: &[&str]) -> Registration {
    bus.send(Register {
        label: label.into(),
        patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
    })
    .await
    .unwrap()
    .unwrap()
}

async fn publish(bus: &Addr<BusActor>, topic: &str, n: i64) -> Result<Published, BusError> {
    bus.send(Publish {
        topic: topic.into(),
        payload: RawValue::encode(&n).unwrap(),
        source: "test".into(),
    })
    .await
    .unwrap()
}

/// Everything queued for a subscriber right now, without waiting.
fn drain(events: &mut Events) -> Vec<Arc<Event>> {
    let mut out = Vec::new();
    loop {
        match events.try_recv() {
            Ok(event) => out.push(event),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => return out,
        }
    }
}

fn topics(events: &[Arc<Event>]) -> Vec<&str> {
    events.iter().map(|e| e.topic.as_str()).collect()
}

fn seqs(events: &[Arc<Event>]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

fn stats_of<'a>(stats: &'a BusStats, label: &str) -> &'a SubscriberStats {
    stats.subscribers.iter().find(|s| s.label == label).unwrap()
}

/// Waits for the next event, or for the stream to end (`None`), with a deadline.
async fn next(events: &mut Events) -> Option<Arc<Event>> {
    tokio::time::timeout(DEADLINE, events.recv())
        .await
        .expect("the subscriber stream neither yielded nor ended in time")
}

// ---------------------------------------------------------------------------------------
// Delivery and wildcards
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn star_matches_one_segment_rest_matches_one_or_more_and_literals_match_exactly() {
    let bus = BusActor::new(16).start();
    let mut star = register(&bus, "star", &["user.*"]).await;
    let mut rest = register(&bus, "rest", &["user.>"]).await;
    let mut exact = register(&bus, "exact", &["user.prompt"]).await;
    let mut all = register(&bus, "all", &[">"]).await;
    assert_eq!([star.id, rest.id, exact.id, all.id], [1, 2, 3, 4]);

    let mut delivered = Vec::new();
    for (n, topic) in [
        "user.prompt",
        "user.a.b",
        "user",
        "other.prompt",
        "user.reply",
    ]
    .into_iter()
    .enumerate()
    {
        let published = publish(&bus, topic, i64::try_from(n).unwrap())
            .await
            .unwrap();
        assert_eq!(
            published.seq,
            u64::try_from(n).unwrap() + 1,
            "seq counts every event"
        );
        delivered.push(published.delivered);
    }
    assert_eq!(delivered, [4, 2, 1, 1, 3]);

    assert_eq!(
        topics(&drain(&mut star.events)),
        ["user.prompt", "user.reply"]
    );
    assert_eq!(
        topics(&drain(&mut rest.events)),
        ["user.prompt", "user.a.b", "user.reply"]
    );
    assert_eq!(topics(&drain(&mut exact.events)), ["user.prompt"]);
    let everything = drain(&mut all.events);
    assert_eq!(
        topics(&everything),
        [
            "user.prompt",
            "user.a.b",
            "user",
            "other.prompt",
            "user.reply"
        ]
    );
    assert_eq!(seqs(&everything), [1, 2, 3, 4, 5]);
    let first = &everything[0];
    assert_eq!(first.payload.to_value(), rmpv::Value::from(0));
    assert_eq!(first.source, "test");
    assert!(first.time_ms > 0);

    let stats = bus.send(GetBusStats).await.unwrap();
    assert_eq!(stats.published, 5);
    assert_eq!(stats.delivered, 11);
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats_of(&stats, "rest").patterns, ["user.>"]);
    assert_eq!(stats_of(&stats, "rest").delivered, 3);
}

#[actix_rt::test]
async fn one_event_is_delivered_once_to_a_subscriber_with_several_matching_patterns() {
    let bus = BusActor::new(16).start();
    let mut sub = register(
        &bus,
        "multi",
        &["user.*", "user.>", "user.prompt", "user.*"],
    )
    .await;
    let stats = bus.send(GetBusStats).await.unwrap();
    assert_eq!(
        stats_of(&stats, "multi").patterns,
        ["user.*", "user.>", "user.prompt"],
        "duplicate patterns are kept once"
    );

    assert_eq!(publish(&bus, "user.prompt", 1).await.unwrap().delivered, 1);
    assert_eq!(topics(&drain(&mut sub.events)), ["user.prompt"]);
}

#[actix_rt::test]
async fn subscribe_and_unsubscribe_change_what_a_subscriber_receives() {
    let bus = BusActor::new(16).start();
    let mut sub = register(&bus, "s", &[]).await;
    assert_eq!(publish(&bus, "a.b", 1).await.unwrap().delivered, 0);

    let now = bus
        .send(Subscribe {
            subscriber: sub.id,
            pattern: "a.*".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now, ["a.*"]);
    let again = bus
        .send(Subscribe {
            subscriber: sub.id,
            pattern: "a.*".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, ["a.*"], "subscribing twice is harmless");
    bus.send(Subscribe {
        subscriber: sub.id,
        pattern: "b.>".into(),
    })
    .await
    .unwrap()
    .unwrap();
    publish(&bus, "a.b", 2).await.unwrap();
    publish(&bus, "b.c.d", 3).await.unwrap();
    assert_eq!(topics(&drain(&mut sub.events)), ["a.b", "b.c.d"]);

    let (removed, left) = bus
        .send(Unsubscribe {
            subscriber: sub.id,
            pattern: "a.*".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert!(removed);
    assert_eq!(left, ["b.>"]);
    let (removed, left) = bus
        .send(Unsubscribe {
            subscriber: sub.id,
            pattern: "never.subscribed".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert!(!removed);
    assert_eq!(left, ["b.>"]);
    publish(&bus, "a.b", 4).await.unwrap();
    publish(&bus, "b.c", 5).await.unwrap();
    assert_eq!(topics(&drain(&mut sub.events)), ["b.c"]);

    let unknown = bus
        .send(Subscribe {
            subscriber: 99,
            pattern: "a".into(),
        })
        .await
        .unwrap();
    assert!(
        matches!(unknown, Err(BusError::UnknownSubscriber(99))),
        "{unknown:?}"
    );
    let unknown = bus
        .send(Unsubscribe {
            subscriber: 99,
            pattern: "a".into(),
        })
        .await
        .unwrap();
    assert!(
        matches!(unknown, Err(BusError::UnknownSubscriber(99))),
        "{unknown:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Bounded queues
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn a_full_queue_drops_and_counts_while_other_subscribers_get_everything() {
    let bus = BusActor::new(2).start();
    let mut slow = register(&bus, "slow", &["tick.>"]).await;
    let mut fast = register(&bus, "fast", &["tick.>"]).await;

    let mut fast_got = Vec::new();
    let mut delivered = Vec::new();
    for n in 1..=5 {
        delivered.push(publish(&bus, "tick.now", n).await.unwrap().delivered);
        // The fast subscriber keeps up; the slow one never reads.
        fast_got.extend(drain(&mut fast.events));
    }
    assert_eq!(delivered, [2, 2, 1, 1, 1]);
    assert_eq!(seqs(&fast_got), [1, 2, 3, 4, 5]);

    let stats = bus.send(GetBusStats).await.unwrap();
    assert_eq!(stats.published, 5);
    assert_eq!(stats.delivered, 7);
    assert_eq!(stats.dropped, 3);
    let s = stats_of(&stats, "slow");
    assert_eq!((s.queued, s.delivered, s.dropped), (2, 2, 3));
    let f = stats_of(&stats, "fast");
    assert_eq!((f.queued, f.delivered, f.dropped), (0, 5, 0));

    // The slow subscriber kept the oldest events; the newest were dropped.
    assert_eq!(seqs(&drain(&mut slow.events)), [1, 2]);
    // Once it has caught up, it receives again.
    assert_eq!(publish(&bus, "tick.now", 6).await.unwrap().delivered, 2);
    assert_eq!(seqs(&drain(&mut slow.events)), [6]);
    let stats = bus.send(GetBusStats).await.unwrap();
    let s = stats_of(&stats, "slow");
    assert_eq!((s.queued, s.delivered, s.dropped), (0, 3, 3));
    assert_eq!(stats.dropped, 3);
}

#[actix_rt::test]
async fn a_zero_capacity_bus_still_queues_one_event() {
    let bus = BusActor::new(0).start();
    let mut sub = register(&bus, "s", &["x"]).await;
    assert_eq!(publish(&bus, "x", 1).await.unwrap().delivered, 1);
    assert_eq!(publish(&bus, "x", 2).await.unwrap().delivered, 0);
    assert_eq!(seqs(&drain(&mut sub.events)), [1]);
    assert_eq!(bus.send(GetBusStats).await.unwrap().dropped, 1);
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn invalid_topics_are_refused_and_not_counted() {
    let bus = BusActor::new(4).start();
    let mut sub = register(&bus, "s", &[">"]).await;

    for (topic, rule) in [
        ("user.*", TopicRule::WildcardInTopic),
        ("user.>", TopicRule::WildcardInTopic),
        ("", TopicRule::Empty),
        ("user..x", TopicRule::EmptySegment),
        ("user.", TopicRule::EmptySegment),
        ("a b", TopicRule::BadCharacter),
        ("user.pro*", TopicRule::PartialWildcard),
    ] {
        let refused = publish(&bus, topic, 0).await;
        assert!(
            matches!(
                &refused,
                Err(BusError::InvalidTopic { topic: t, rule: r }) if t == topic && *r == rule
            ),
            "{topic:?}: {refused:?}"
        );
    }
    let too_long = "a".repeat(256);
    assert!(matches!(
        publish(&bus, &too_long, 0).await,
        Err(BusError::InvalidTopic {
            rule: TopicRule::TooLong,
            ..
        })
    ));

    let stats = bus.send(GetBusStats).await.unwrap();
    assert_eq!((stats.published, stats.delivered, stats.dropped), (0, 0, 0));
    assert!(drain(&mut sub.events).is_empty());
    // The next valid event gets the first sequence number.
    assert_eq!(publish(&bus, "ok", 0).await.unwrap().seq, 1);
}

#[actix_rt::test]
async fn invalid_patterns_are_refused_and_leave_nothing_behind() {
    let bus = BusActor::new(4).start();

    let refused = bus
        .send(Register {
            label: "bad".into(),
            patterns: vec!["ok.>".into(), "bad..x".into()],
        })
        .await
        .unwrap();
    assert!(
        matches!(
            &refused,
            Err(BusError::InvalidPattern { pattern, rule: TopicRule::EmptySegment })
                if pattern == "bad..x"
        ),
        "{refused:?}"
    );
    assert!(bus.send(GetBusStats).await.unwrap().subscribers.is_empty());

    let sub = register(&bus, "good", &["ok"]).await;
    for (pattern, rule) in [
        (">.a", TopicRule::RestNotLast),
        ("a.>.b", TopicRule::RestNotLast),
        ("a*", TopicRule::PartialWildcard),
        ("", TopicRule::Empty),
        ("a.b c", TopicRule::BadCharacter),
    ] {
        let refused = bus
            .send(Subscribe {
                subscriber: sub.id,
                pattern: pattern.into(),
            })
            .await
            .unwrap();
        assert!(
            matches!(
                &refused,
                Err(BusError::InvalidPattern { pattern: p, rule: r }) if p == pattern && *r == rule
            ),
            "{pattern:?}: {refused:?}"
        );
    }
    let stats = bus.send(GetBusStats).await.unwrap();
    assert_eq!(stats_of(&stats, "good").patterns, ["ok"]);
    assert!(
        BusError::InvalidPattern {
            pattern: ">.a".into(),
            rule: TopicRule::RestNotLast
        }
        .to_string()
        .contains("'>' may only be the last segment")
    );
}

// ---------------------------------------------------------------------------------------
// Leaving
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn deregister_removes_the_subscriber_and_ends_its_stream() {
    let bus = BusActor::new(4).start();
    let mut gone = register(&bus, "gone", &["x.>"]).await;
    let mut stays = register(&bus, "stays", &["x.>"]).await;
    publish(&bus, "x.1", 1).await.unwrap();

    bus.send(Deregister(gone.id)).await.unwrap();

    let stats = bus.send(GetBusStats).await.unwrap();
    let labels: Vec<_> = stats.subscribers.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, ["stays"]);
    // Already queued events can still be read; then the stream ends.
    assert_eq!(next(&mut gone.events).await.unwrap().topic, "x.1");
    assert!(next(&mut gone.events).await.is_none());
    assert_eq!(publish(&bus, "x.2", 2).await.unwrap().delivered, 1);
    assert_eq!(topics(&drain(&mut stays.events)), ["x.1", "x.2"]);
    let unknown = bus
        .send(Subscribe {
            subscriber: gone.id,
            pattern: "y".into(),
        })
        .await
        .unwrap();
    assert!(matches!(unknown, Err(BusError::UnknownSubscriber(id)) if id == gone.id));
    // Deregistering twice, or an unknown id, is harmless.
    bus.send(Deregister(gone.id)).await.unwrap();
    bus.send(Deregister(12345)).await.unwrap();
}

#[actix_rt::test]
async fn a_subscriber_that_dropped_its_receiver_is_removed_on_the_next_matching_publish() {
    let bus = BusActor::new(4).start();
    let quitter = register(&bus, "quitter", &["x"]).await;
    let mut stays = register(&bus, "stays", &["x"]).await;
    drop(quitter.events);

    assert_eq!(publish(&bus, "x", 1).await.unwrap().delivered, 1);
    let stats = bus.send(GetBusStats).await.unwrap();
    let labels: Vec<_> = stats.subscribers.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, ["stays"]);
    assert_eq!(stats.dropped, 0, "a closed queue is not a drop");
    assert_eq!(seqs(&drain(&mut stays.events)), [1]);
}

// ---------------------------------------------------------------------------------------
// Under a supervisor
// ---------------------------------------------------------------------------------------

struct Supervised {
    sup: Addr<SupervisorActor>,
    bus: ChildRef<BusActor>,
    exit: oneshot::Receiver<SupervisorExit>,
}

async fn supervised_bus() -> Supervised {
    let bus = ChildRef::new("bus");
    let (tx, exit) = oneshot::channel();
    let policy = RestartPolicy {
        intensity: 3,
        period: Duration::from_secs(10),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
    };
    let spec = ChildSpec::worker("bus", RestartType::Permanent, bus.clone(), || {
        Ok(BusActor::new(8))
    });
    let sup = SupervisorActor::new("kernel", policy, vec![spec])
        .on_exit(tx)
        .start();
    sup.send(GetTree).await.unwrap();
    Supervised { sup, bus, exit }
}

impl Supervised {
    fn addr(&self) -> Addr<BusActor> {
        self.bus.get().unwrap()
    }

    async fn bus_restarted(&self, restarts: u32) {
        let restarted = poll_async(DEADLINE, async || {
            let tree = self.sup.send(GetTree).await.unwrap();
            let node = tree.find("bus").unwrap().clone();
            let done = node.restarts == restarts && node.state == ChildState::Running;
            done.then_some(()).ok_or(node)
        })
        .await;
        restarted.unwrap_or_else(|node| panic!("bus not restarted: {node:#?}"));
    }
}

#[actix_rt::test]
async fn when_the_supervised_bus_crashes_streams_end_and_subscribers_can_register_again() {
    let s = supervised_bus().await;
    let old = s.addr();
    let mut sub = register(&old, "session:1", &["user.>"]).await;
    publish(&old, "user.hello", 1).await.unwrap();

    s.sup
        .send(InjectFault {
            target: "bus".into(),
            fault: Fault::Panic,
            dry_run: false,
        })
        .await
        .unwrap()
        .unwrap();

    // What was queued before the crash is still readable; then the stream ends.
    assert_eq!(next(&mut sub.events).await.unwrap().topic, "user.hello");
    assert!(
        next(&mut sub.events).await.is_none(),
        "the stream ends when the bus dies"
    );
    assert!(matches!(
        old.send(GetBusStats).await,
        Err(MailboxError::Closed)
    ));

    // The session re-registers with the new incarnation, which starts from scratch.
    s.bus_restarted(1).await;
    let new = s.addr();
    let stale = new
        .send(Subscribe {
            subscriber: sub.id,
            pattern: "x".into(),
        })
        .await
        .unwrap();
    assert!(
        matches!(stale, Err(BusError::UnknownSubscriber(_))),
        "{stale:?}"
    );
    let mut again = register(&new, "session:1", &["user.>"]).await;
    assert_eq!(again.id, 1, "ids restart with the new incarnation");
    let published = publish(&new, "user.hello", 2).await.unwrap();
    assert_eq!((published.seq, published.delivered), (1, 1));
    assert_eq!(
        next(&mut again.events).await.unwrap().payload.to_value(),
        rmpv::Value::from(2)
    );
    assert_eq!(new.send(GetBusStats).await.unwrap().published, 1);
}

#[actix_rt::test]
async fn when_the_supervised_bus_stops_itself_streams_end_and_it_is_restarted() {
    let s = supervised_bus().await;
    let mut sub = register(&s.addr(), "session:1", &["user.>"]).await;

    s.addr().send(Inject(Fault::Stop)).await.unwrap();

    assert!(next(&mut sub.events).await.is_none());
    s.bus_restarted(1).await;
    let mut again = register(&s.addr(), "session:1", &["user.>"]).await;
    publish(&s.addr(), "user.x", 1).await.unwrap();
    assert_eq!(next(&mut again.events).await.unwrap().topic, "user.x");
}

#[actix_rt::test]
async fn when_the_tree_shuts_down_the_bus_streams_end() {
    let s = supervised_bus().await;
    let mut a = register(&s.addr(), "a", &[">"]).await;
    let mut b = register(&s.addr(), "b", &["nothing.matches"]).await;

    s.sup.do_send(ShutdownTree {
        reason: "bye".into(),
    });

    let exit = tokio::time::timeout(DEADLINE, s.exit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        exit,
        SupervisorExit::Normal {
            reason: "bye".into()
        }
    );
    assert!(next(&mut a.events).await.is_none());
    assert!(next(&mut b.events).await.is_none());
}
