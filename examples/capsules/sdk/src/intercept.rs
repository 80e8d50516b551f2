//! What an interceptor decides about an event, and the reply `astrid_intercept` gives for it.

use crate::msgpack::Value;

/// An interceptor's decision on one event (`astrid_intercept`'s reply).
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Pass the event on to the next interceptor (or deliver it, after the last), with this
    /// payload instead of the one received if given.
    Continue(Option<Value>),
    /// Deliver the event now, with this payload if given; later interceptors are skipped.
    Finish(Option<Value>),
    /// Do not deliver the event; the publisher gets this reason (error code `forbidden`).
    Deny(String),
}

impl Verdict {
    /// The reply map: `{"action": "continue" | "finish" | "deny", "payload"?: any,
    /// "reason"?: str}`.
    #[must_use]
    pub fn to_value(&self) -> Value {
        let (action, extra) = match self {
            Verdict::Continue(payload) => ("continue", payload.clone().map(|p| ("payload", p))),
            Verdict::Finish(payload) => ("finish", payload.clone().map(|p| ("payload", p))),
            Verdict::Deny(reason) => ("deny", Some(("reason", Value::Str(reason.clone())))),
        };
        let mut entries = vec![("action".to_owned(), Value::from(action))];
        entries.extend(extra.map(|(key, value)| (key.to_owned(), value)));
        Value::Map(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, Value)]) -> Value {
        Value::Map(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn verdicts_become_reply_maps() {
        assert_eq!(
            Verdict::Continue(None).to_value(),
            map(&[("action", "continue".into())])
        );
        assert_eq!(
            Verdict::Continue(Some(Value::Nil)).to_value(),
            map(&[("action", "continue".into()), ("payload", Value::Nil)])
        );
        assert_eq!(
            Verdict::Finish(Some("x".into())).to_value(),
            map(&[("action", "finish".into()), ("payload", "x".into())])
        );
        assert_eq!(
            Verdict::Finish(None).to_value(),
            map(&[("action", "finish".into())])
        );
        assert_eq!(
            Verdict::Deny("no".into()).to_value(),
            map(&[("action", "deny".into()), ("reason", "no".into())])
        );
    }
}
