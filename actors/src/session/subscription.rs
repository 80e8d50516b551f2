//! A session's link to the event bus. The session owns its list of patterns (at most
//! [`MAX_PATTERNS`]); the bus holds a copy in a subscriber registered on the first
//! `Subscribe`. When the bus restarts the event stream ends, and the session registers again
//! with its patterns, retrying with backoff while the bus is down, so a bus crash costs
//! events in flight but never a subscription. Events are written to the client around their
//! payload's bytes ([`raw::encode_event_frame`]).

use std::sync::Arc;
use std::time::Duration;

use actix::{ActorFutureExt, AsyncContext, Context, StreamHandler};

use super::route::AuditNote;
use super::{Phase, SessionActor};
use crate::bus::{self, BusError, Event, MAX_PATTERNS, Pattern, Register, SubscriberId};
use crate::error::KernelError;
use crate::metrics::Timer;
use crate::protocol::{ErrorBody, Subscribed, Unsubscribed, raw};

/// Longest wait between attempts to reach a restarting bus.
const MAX_RELINK_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(super) struct BusLink {
    state: LinkState,
    patterns: Vec<String>,
    /// `Subscribe` requests answered once the link is up.
    waiting: Vec<(u64, String, AuditNote, Option<Timer>)>,
    attempts: u32,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    #[default]
    Unlinked,
    Linking,
    Linked(SubscriberId),
}

impl BusLink {
    pub(super) fn subscriber(&self) -> Option<SubscriberId> {
        match self.state {
            LinkState::Linked(id) => Some(id),
            _ => None,
        }
    }
}

impl SessionActor {
    pub(super) fn subscribe(
        &mut self,
        id: u64,
        pattern: String,
        note: AuditNote,
        ctx: &mut Context<Self>,
    ) {
        if let Err(rule) = Pattern::parse(&pattern) {
            let error = KernelError::Bus(BusError::InvalidPattern { pattern, rule });
            return self.refuse_request(id, note, &error);
        }
        let known = self.link.patterns.contains(&pattern);
        if !known && self.link.patterns.len() >= MAX_PATTERNS {
            let error = KernelError::Bus(BusError::TooManyPatterns(MAX_PATTERNS));
            return self.refuse_request(id, note, &error);
        }
        if !known {
            self.link.patterns.push(pattern.clone());
        }
        match self.link.state {
            LinkState::Linked(subscriber) => {
                let bus = self.deps.services.bus.clone();
                let timeout = self.deps.limits.call_timeout;
                let patterns = self.link.patterns.clone();
                self.run(id, ctx, note, async move {
                    let msg = bus::Subscribe {
                        subscriber,
                        pattern: pattern.clone(),
                    };
                    bus.call(msg, timeout).await??;
                    Ok(Subscribed { pattern, patterns })
                });
            }
            LinkState::Linking => {
                let timer = self.current.take();
                self.link.waiting.push((id, pattern, note, timer));
            }
            LinkState::Unlinked => {
                let timer = self.current.take();
                self.link.waiting.push((id, pattern, note, timer));
                self.relink(ctx);
            }
        }
    }

    pub(super) fn unsubscribe(
        &mut self,
        id: u64,
        pattern: String,
        note: AuditNote,
        ctx: &mut Context<Self>,
    ) {
        let before = self.link.patterns.len();
        self.link.patterns.retain(|p| *p != pattern);
        let removed = self.link.patterns.len() != before;
        let patterns = self.link.patterns.clone();
        match self.link.state {
            LinkState::Linked(subscriber) if removed => {
                let bus = self.deps.services.bus.clone();
                let timeout = self.deps.limits.call_timeout;
                self.run(id, ctx, note, async move {
                    let msg = bus::Unsubscribe {
                        subscriber,
                        pattern: pattern.clone(),
                    };
                    bus.call(msg, timeout).await??;
                    Ok(Unsubscribed {
                        pattern,
                        removed,
                        patterns,
                    })
                });
            }
            // Not linked: the next registration uses the updated list.
            _ => {
                note.ok();
                self.reply_ok(
                    id,
                    &Unsubscribed {
                        pattern,
                        removed,
                        patterns,
                    },
                );
            }
        }
    }

    /// Registers with the (current) bus, with every pattern, and answers waiting requests.
    fn relink(&mut self, ctx: &mut Context<Self>) {
        self.link.state = LinkState::Linking;
        let bus = self.deps.services.bus.clone();
        let timeout = self.deps.limits.call_timeout;
        let sent = self.link.patterns.clone();
        let label = format!(
            "client:{} ({})",
            self.id,
            self.client.as_deref().unwrap_or("?")
        );
        let register = async move {
            bus.call(
                Register {
                    label,
                    patterns: sent.clone(),
                },
                timeout,
            )
            .await?
            .map_err(KernelError::from)
            .map(|reg| (reg, sent))
        };
        ctx.spawn(actix::fut::wrap_future(register).map(
            |result, act: &mut Self, ctx| match result {
                Ok((reg, sent)) => act.linked(reg, &sent, ctx),
                Err(error) => act.link_failed(&error, ctx),
            },
        ));
    }

    fn linked(&mut self, reg: bus::Registration, sent: &[String], ctx: &mut Context<Self>) {
        if matches!(self.phase, Phase::Closing) {
            if let Some(bus) = self.deps.services.bus.get() {
                bus.do_send(bus::Deregister(reg.id));
            }
            return;
        }
        self.link.state = LinkState::Linked(reg.id);
        self.link.attempts = 0;
        ctx.add_stream(reg.events);
        // Patterns added or removed while registering.
        if let Some(bus) = self.deps.services.bus.get() {
            for pattern in self.link.patterns.iter().filter(|p| !sent.contains(p)) {
                bus.do_send(bus::Subscribe {
                    subscriber: reg.id,
                    pattern: pattern.clone(),
                });
            }
            for pattern in sent.iter().filter(|p| !self.link.patterns.contains(p)) {
                bus.do_send(bus::Unsubscribe {
                    subscriber: reg.id,
                    pattern: pattern.clone(),
                });
            }
        }
        for (id, pattern, note, timer) in std::mem::take(&mut self.link.waiting) {
            note.ok();
            let patterns = self.link.patterns.clone();
            self.current = timer;
            self.reply_ok(id, &Subscribed { pattern, patterns });
        }
    }

    fn link_failed(&mut self, error: &KernelError, ctx: &mut Context<Self>) {
        self.link.state = LinkState::Unlinked;
        // Requests waiting on the link fail and their patterns are dropped; patterns from
        // before (a bus that crashed) are kept, and the link is retried for them.
        let body = ErrorBody::from(error);
        for (id, pattern, note, timer) in std::mem::take(&mut self.link.waiting) {
            note.refused(&body);
            self.link.patterns.retain(|p| *p != pattern);
            self.current = timer;
            self.reply_err(Some(id), &body);
        }
        self.schedule_relink(ctx);
    }

    fn schedule_relink(&mut self, ctx: &mut Context<Self>) {
        if self.link.patterns.is_empty() || matches!(self.phase, Phase::Closing) {
            return;
        }
        self.link.attempts = self.link.attempts.saturating_add(1);
        let delay = Duration::from_millis(10)
            .saturating_mul(1 << self.link.attempts.min(7))
            .min(MAX_RELINK_DELAY);
        tracing::debug!(
            connection = self.id,
            ?delay,
            "bus link lost; registering again"
        );
        ctx.run_later(delay, |act, ctx| {
            if act.link.state == LinkState::Unlinked {
                act.relink(ctx);
            }
        });
    }
}

impl StreamHandler<Arc<Event>> for SessionActor {
    fn handle(&mut self, event: Arc<Event>, ctx: &mut Context<Self>) {
        if matches!(self.phase, Phase::Open | Phase::Draining) {
            let written = self
                .out
                .frame_with(|buf| raw::encode_event_frame(buf, &event));
            if let Err(e) = written {
                tracing::error!(connection = self.id, "cannot encode an event: {e}");
            }
            self.apply_backpressure(ctx);
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The bus stopped: its incarnation dropped our queue.
        if let LinkState::Linked(_) = self.link.state {
            self.link.state = LinkState::Unlinked;
            self.link.attempts = 0;
            self.schedule_relink(ctx);
        }
    }
}
