//! Interceptors: hooks that see an event before its subscribers do. Capsules declare them
//! (`[[interceptor]]` topic pattern and priority); the registry puts them in this table,
//! which the bus consults on every publish. Matching hooks run one after another, lowest
//! priority first (ties by owner name). Each may let the event continue (possibly with a
//! new payload), finish the chain (deliver now, skipping later hooks), or deny it (it is not
//! delivered and the publisher gets the reason). A hook that fails (its capsule crashed or
//! did not answer in time) is skipped: one broken capsule does not stop the bus.
//!
//! The table outlives the bus actor (the registry fills it, the bus only reads it), so a
//! restarted bus keeps every hook.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};

use super::topic::Pattern;
use crate::protocol::RawValue;

/// What an interceptor decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Go on to the next hook, with this payload if given.
    Continue(Option<RawValue>),
    /// Deliver now, with this payload if given; later hooks are skipped.
    Finish(Option<RawValue>),
    /// Do not deliver; the publisher gets the reason.
    Deny(String),
}

/// The answer of one hook: a verdict, or why there is none.
pub type Decision = Pin<Box<dyn Future<Output = Result<Verdict, String>>>>;

/// Something that can decide on events.
pub trait Interceptor: Send + Sync + fmt::Debug {
    /// Decides on an event about to be published.
    fn intercept(&self, topic: &str, payload: &RawValue) -> Decision;
}

#[derive(Debug)]
struct Hook {
    pattern: Pattern,
    priority: i32,
    owner: String,
    handler: Arc<dyn Interceptor>,
}

/// Every hook, by owner.
#[derive(Debug, Default)]
pub struct Interceptors(RwLock<Vec<Hook>>);

impl Interceptors {
    /// Replaces `owner`'s hooks with `hooks` (pattern and priority), all served by
    /// `handler`.
    pub fn set(&self, owner: &str, hooks: Vec<(Pattern, i32)>, handler: &Arc<dyn Interceptor>) {
        let mut all = self.0.write().unwrap_or_else(PoisonError::into_inner);
        all.retain(|h| h.owner != owner);
        all.extend(hooks.into_iter().map(|(pattern, priority)| Hook {
            pattern,
            priority,
            owner: owner.to_owned(),
            handler: Arc::clone(handler),
        }));
        all.sort_by(|a, b| (a.priority, &a.owner).cmp(&(b.priority, &b.owner)));
    }

    /// Removes `owner`'s hooks.
    pub fn remove(&self, owner: &str) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|h| h.owner != owner);
    }

    /// Removes every hook (a new `capsules` supervisor starts with no capsule loaded).
    pub fn clear(&self) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The hooks for `topic`, in the order they run: `(owner, handler)`.
    pub fn matching(&self, topic: &str) -> Vec<(String, Arc<dyn Interceptor>)> {
        let all = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let mut chain: Vec<(String, Arc<dyn Interceptor>)> = Vec::new();
        for hook in all.iter().filter(|h| h.pattern.matches(topic)) {
            // One call per owner, at its first (lowest) matching priority.
            if !chain.iter().any(|(owner, _)| *owner == hook.owner) {
                chain.push((hook.owner.clone(), Arc::clone(&hook.handler)));
            }
        }
        chain
    }
}

/// Runs `chain` over an event: the payload to deliver, or who denied it and why.
pub(crate) async fn run(
    chain: Vec<(String, Arc<dyn Interceptor>)>,
    topic: String,
    mut payload: RawValue,
) -> Result<RawValue, (String, String)> {
    for (owner, handler) in chain {
        match handler.intercept(&topic, &payload).await {
            Ok(Verdict::Continue(new)) => payload = new.unwrap_or(payload),
            Ok(Verdict::Finish(new)) => return Ok(new.unwrap_or(payload)),
            Ok(Verdict::Deny(reason)) => return Err((owner, reason)),
            Err(error) => {
                tracing::warn!(interceptor = %owner, %topic, "skipped: {error}");
            }
        }
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Result<Verdict, String>);

    impl Interceptor for Fixed {
        fn intercept(&self, _: &str, _: &RawValue) -> Decision {
            let answer = self.0.clone();
            Box::pin(async move { answer })
        }
    }

    fn hook(verdict: Result<Verdict, String>) -> Arc<dyn Interceptor> {
        Arc::new(Fixed(verdict))
    }

    fn pattern(p: &str) -> Pattern {
        Pattern::parse(p).unwrap()
    }

    fn raw(value: impl Into<rmpv::Value>) -> RawValue {
        RawValue::from_value(&value.into()).unwrap()
    }

    #[tokio::test]
    async fn hooks_run_by_priority_and_can_rewrite_finish_or_deny() {
        let table = Interceptors::default();
        let upper = hook(Ok(Verdict::Continue(Some(raw("B")))));
        let first = hook(Ok(Verdict::Continue(Some(raw("A")))));
        table.set("second", vec![(pattern("user.>"), 20)], &upper);
        table.set("first", vec![(pattern("user.*"), 10)], &first);
        let chain = table.matching("user.x");
        let owners: Vec<&str> = chain.iter().map(|(o, _)| o.as_str()).collect();
        assert_eq!(owners, ["first", "second"]);
        let out = run(chain, "user.x".into(), raw("z")).await;
        assert_eq!(out, Ok(raw("B")));

        table.set(
            "first",
            vec![(pattern("user.*"), 10)],
            &hook(Ok(Verdict::Finish(None))),
        );
        assert_eq!(
            run(table.matching("user.x"), "user.x".into(), raw("z")).await,
            Ok(raw("z"))
        );

        let deny = hook(Ok(Verdict::Deny("no".into())));
        table.set("first", vec![(pattern("user.*"), 10)], &deny);
        assert_eq!(
            run(table.matching("user.x"), "user.x".into(), raw("z")).await,
            Err(("first".into(), "no".into()))
        );
        assert!(table.matching("other").is_empty());
        table.remove("first");
        table.remove("second");
        assert!(table.matching("user.x").is_empty());
    }

    #[tokio::test]
    async fn a_failing_hook_is_skipped() {
        let table = Interceptors::default();
        table.set(
            "broken",
            vec![(pattern(">"), 1)],
            &hook(Err("crashed".into())),
        );
        table.set(
            "fine",
            vec![(pattern(">"), 2)],
            &hook(Ok(Verdict::Continue(Some(raw(1))))),
        );
        assert_eq!(
            run(table.matching("a"), "a".into(), raw(0)).await,
            Ok(raw(1))
        );
    }
}
