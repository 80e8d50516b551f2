//! Refusals before authentication (a wrong token, another uid, a connection cap, no
//! handshake in time, ...), counted rather than recorded one by one, so that a peer refused
//! thousands of times costs a handful of audit entries and log lines, not thousands.
//!
//! The first refusal after a quiet spell is recorded on its own, as it happens, naming the
//! peer and the error. It opens a window: refusals within it are only counted, by reason, and
//! when it ends one entry records how many there were; a window that saw refusals opens the
//! next one, so a steady stream of them makes one entry per window. A timer armed by the
//! refusal that opens a window ends it (`tick`), and the windows after it while they see
//! refusals, then stops: a quiet daemon has no timer (see `Connections::refuse`). The
//! listener flushes the last window at shutdown. The counts live in the connection table, so
//! they survive a listener restart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::audit::{AuditActor, Record};
use crate::protocol::{ErrorBody, ProtocolError};
use crate::supervisor::ChildRef;

/// What to record about refusals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// One refusal, the first after a quiet spell.
    One {
        /// The peer, as audit entries name connections.
        who: String,
        /// Why it was refused.
        error: ErrorBody,
    },
    /// The refusals counted during a window.
    Counted {
        /// How many.
        total: u64,
        /// How long the window lasted.
        over: Duration,
        /// How many of each reason, by reason.
        reasons: Vec<(&'static str, u64)>,
    },
}

impl Refused {
    /// The audit entry: `handshake` by the peer with the error as outcome for one refusal;
    /// `handshake` by `listener`, target `refused`, for a count, with an outcome such as
    /// `1999 refused in 10.0 s: unauthorized 1990, handshake_timeout 9`.
    pub fn record(&self) -> Record {
        match self {
            Self::One { who, error } => {
                Record::new(who.clone(), "handshake", "", error.to_string())
            }
            Self::Counted { .. } => Record::new("listener", "handshake", "refused", self.summary()),
        }
    }

    fn summary(&self) -> String {
        match self {
            Self::One { who, error } => format!("refused {who}: {error}"),
            Self::Counted {
                total,
                over,
                reasons,
            } => {
                let mut text = format!("{total} refused in {:.1} s:", over.as_secs_f64());
                for (i, (reason, n)) in reasons.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    let _ = write!(text, "{sep}{reason} {n}");
                }
                text
            }
        }
    }

    /// Writes the log line and sends the audit entry (not awaited).
    pub fn report(&self, audit: &ChildRef<AuditActor>) {
        match self {
            Self::One { .. } => tracing::info!("{}", self.summary()),
            Self::Counted { .. } => tracing::warn!("connections {}", self.summary()),
        }
        if let Some(audit) = audit.get() {
            audit.do_send(self.record());
        }
    }
}

/// The label a refusal is counted under: its error code, except that a peer of another uid
/// (`peer_uid`) or of an unknown one (`peer_unknown`) is told apart from a wrong token.
pub fn reason(error: &ProtocolError) -> &'static str {
    match error {
        ProtocolError::PeerUid { .. } => "peer_uid",
        ProtocolError::PeerUnknown(_) => "peer_unknown",
        other => ErrorBody::from(other).code.as_str(),
    }
}

#[derive(Debug, Default)]
struct Window {
    /// When the current window opened; `None` in a quiet spell.
    opened: Option<Instant>,
    counts: BTreeMap<&'static str, u64>,
    /// Every refusal since boot, by reason (for the metrics; bounded by the reasons).
    totals: BTreeMap<&'static str, u64>,
}

impl Window {
    fn take(&mut self, now: Instant) -> Option<Refused> {
        let opened = self.opened?;
        if self.counts.is_empty() {
            return None;
        }
        let reasons: Vec<(&'static str, u64)> =
            std::mem::take(&mut self.counts).into_iter().collect();
        Some(Refused::Counted {
            total: reasons.iter().map(|(_, n)| n).sum(),
            over: now.saturating_duration_since(opened),
            reasons,
        })
    }
}

/// Refusals of the current window (see the module docs).
#[derive(Debug, Default)]
pub struct Refusals(Mutex<Window>);

impl Refusals {
    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that `who` was refused with `error`: what to record now (the first refusal
    /// after a quiet spell), or nothing (it is counted).
    pub fn refuse(&self, now: Instant, who: &str, error: &ProtocolError) -> Option<Refused> {
        let mut window = self.lock();
        *window.totals.entry(reason(error)).or_default() += 1;
        if window.opened.is_some() {
            *window.counts.entry(reason(error)).or_default() += 1;
            return None;
        }
        window.opened = Some(now);
        Some(Refused::One {
            who: who.to_owned(),
            error: ErrorBody::from(error),
        })
    }

    /// Ends the window if it is `window` old: the count of what it saw, if anything (then
    /// the next window opens), or nothing (and a quiet spell begins).
    pub fn tick(&self, now: Instant, window: Duration) -> Option<Refused> {
        let mut state = self.lock();
        let opened = state.opened?;
        if now.saturating_duration_since(opened) < window {
            return None;
        }
        let counted = state.take(now);
        state.opened = counted.is_some().then_some(now);
        counted
    }

    /// When the current window (`window` long) ends; `None` in a quiet spell.
    pub fn ends_at(&self, window: Duration) -> Option<Instant> {
        self.lock().opened.map(|opened| opened + window)
    }

    /// Every refusal since boot, by reason.
    pub fn totals(&self) -> Vec<(&'static str, u64)> {
        self.lock().totals.iter().map(|(&r, &n)| (r, n)).collect()
    }

    /// The count of the current window, whatever its age (at shutdown).
    pub fn flush(&self, now: Instant) -> Option<Refused> {
        let mut state = self.lock();
        let counted = state.take(now);
        state.opened = None;
        counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    fn total(refused: &Refused) -> u64 {
        match refused {
            Refused::One { .. } => 1,
            Refused::Counted { total, .. } => *total,
        }
    }

    #[test]
    fn a_lone_refusal_is_recorded_at_once_with_the_peer_and_the_error() {
        let refusals = Refusals::default();
        let t0 = Instant::now();
        let one = refusals.refuse(t0, "client:3 (pid 42)", &ProtocolError::Unauthorized);
        let record = one.unwrap().record();
        assert_eq!(record.actor, "client:3 (pid 42)");
        assert_eq!(record.action, "handshake");
        assert_eq!(record.outcome, "unauthorized: authentication failed");
        // Nothing else was refused: the window closes without an entry.
        assert!(refusals.tick(t0 + WINDOW, WINDOW).is_none());
        // The next refusal is again the first of a quiet spell.
        assert!(matches!(
            refusals.refuse(t0 + WINDOW * 2, "x", &ProtocolError::Unauthorized),
            Some(Refused::One { .. })
        ));
    }

    #[test]
    fn a_flood_makes_one_entry_per_window_with_every_refusal_counted() {
        let refusals = Refusals::default();
        let t0 = Instant::now();
        let mut entries = Vec::new();
        let mut now = t0;
        // 2000 refusals over 25 s, ticked every 100 ms.
        for i in 0..2000u32 {
            now = t0 + Duration::from_millis(u64::from(i) * 12);
            let error = if i % 4 == 0 {
                ProtocolError::HandshakeTimeout(Duration::from_secs(5))
            } else {
                ProtocolError::Unauthorized
            };
            entries.extend(refusals.refuse(now, "x", &error));
            if i % 8 == 0 {
                entries.extend(refusals.tick(now, WINDOW));
            }
        }
        entries.extend(refusals.flush(now));
        assert!(entries.len() <= 4, "{entries:#?}");
        let sum: u64 = entries.iter().map(total).sum();
        assert_eq!(sum, 2000);
        let Refused::Counted { reasons, .. } = &entries[1] else {
            panic!("{entries:#?}");
        };
        assert_eq!(reasons[0].0, "handshake_timeout");
        assert_eq!(reasons[1].0, "unauthorized");
        let outcome = entries[1].record().outcome;
        assert!(
            outcome.contains(" refused in 10.") && outcome.contains(" s: handshake_timeout "),
            "{outcome}"
        );
    }

    #[test]
    fn peers_of_another_or_unknown_uid_are_told_apart_from_wrong_tokens() {
        assert_eq!(reason(&ProtocolError::Unauthorized), "unauthorized");
        let uid = ProtocolError::PeerUid { peer: 1, daemon: 2 };
        assert_eq!(reason(&uid), "peer_uid");
        assert_eq!(
            reason(&ProtocolError::PeerUnknown("x".into())),
            "peer_unknown"
        );
        assert_eq!(
            reason(&ProtocolError::TooManyUnauthenticated(64)),
            "too_many_connections"
        );
    }
}
