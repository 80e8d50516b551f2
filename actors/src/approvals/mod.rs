//! Approvals: a capsule's use of an `ask:` grant waits for the user's answer. The actor
//! keeps the requests waiting (`table.rs`: numbered, bounded), publishes each on the bus as
//! `approval.requested` for connected frontends to show, and settles it with the answer a
//! client gives (`AnswerApproval`: `once`, `always`, which gives the grant outright as a
//! persisted runtime grant, or `deny`), or denies it when no frontend listens
//! (`approval.>` reached no subscriber), when its time is up, or when a bound is reached.
//! Each request and how it was settled is audited (action `approval`) and announced as
//! `approval.answered`.
//!
//! A capsule waits for the answer on its own thread, within the time its grant allows; if
//! this actor stops, every waiting capsule is denied (its channel closes).
//!
//! Handles: [`AskApproval`] (host imports), [`ListApprovals`] and [`AnswerApproval`]
//! (sessions), [`Terminate`], [`Inject`].

mod messages;
pub mod table;

use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, MessageResult, ResponseFuture};
use actix::{ActorFutureExt, WrapFuture};
use tokio::sync::oneshot;

pub use self::messages::{AnswerApproval, ApprovalError, AskApproval, ListApprovals};
use self::table::Table;
pub use self::table::{Decision, MAX_PENDING, MAX_PENDING_PER_CAPSULE};
use crate::audit::{AuditActor, Record};
use crate::bus::{BusActor, Publish};
use crate::caps::resource::ASK_PREFIX;
use crate::caps::{CapabilitiesActor, GrantCapability};
use crate::clock::unix_millis;
use crate::protocol::{
    APPROVAL_ANSWERED, APPROVAL_REQUESTED, ApprovalAnswer, ApprovalSettled, PendingApproval,
    RawValue,
};
use crate::supervisor::{ChildRef, Inject, Terminate, apply_fault};

/// How long the bus and the capability store get to answer.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(2);

/// The approvals actor.
#[derive(Debug)]
pub struct ApprovalsActor {
    table: Table,
    bus: ChildRef<BusActor>,
    caps: ChildRef<CapabilitiesActor>,
    audit: ChildRef<AuditActor>,
}

impl ApprovalsActor {
    /// An actor that asks through `bus`, gives `always` grants through `caps`, and records
    /// every decision in `audit`.
    pub fn new(
        bus: ChildRef<BusActor>,
        caps: ChildRef<CapabilitiesActor>,
        audit: ChildRef<AuditActor>,
    ) -> Self {
        Self {
            table: Table::default(),
            bus,
            caps,
            audit,
        }
    }

    fn record(&self, request: &PendingApproval, outcome: impl Into<String>) {
        if let Some(audit) = self.audit.get() {
            audit.do_send(Record::new(
                format!("capsule:{}", request.capsule),
                "approval",
                format!(
                    "#{} {} (grant {})",
                    request.id, request.access, request.grant
                ),
                outcome,
            ));
        }
    }

    fn announce(&self, topic: &str, payload: RawValue) {
        if let Some(bus) = self.bus.get() {
            bus.do_send(Publish {
                topic: topic.to_owned(),
                payload,
                source: "kernel".to_owned(),
            });
        }
    }

    /// Settles request `id` if it still waits: `decision` to its capsule, recorded and
    /// announced with `outcome`.
    fn settle(&mut self, id: u64, decision: Decision, outcome: &str) -> Option<ApprovalSettled> {
        let (request, reply) = self.table.settle(id)?;
        let approved = decision == Decision::Approved;
        let delivered = reply.send(decision).is_ok();
        let outcome = if delivered {
            outcome.to_owned()
        } else {
            format!("{outcome} (too late: its call had ended)")
        };
        tracing::info!(capsule = %request.capsule, id, %outcome, "approval settled");
        self.record(&request, outcome.clone());
        let settled = ApprovalSettled {
            id,
            capsule: request.capsule,
            approved: approved && delivered,
            outcome,
        };
        if let Ok(payload) = RawValue::encode(&settled) {
            self.announce(APPROVAL_ANSWERED, payload);
        }
        Some(settled)
    }
}

impl Actor for ApprovalsActor {
    type Context = Context<Self>;
}

impl Handler<AskApproval> for ApprovalsActor {
    type Result = ResponseFuture<Decision>;

    fn handle(&mut self, msg: AskApproval, ctx: &mut Context<Self>) -> Self::Result {
        let now = unix_millis();
        let shown = PendingApproval {
            id: 0,
            capsule: msg.capsule,
            access: msg.access,
            grant: msg.grant,
            asked_ms: now,
            expires_ms: now
                .saturating_add(u64::try_from(msg.timeout.as_millis()).unwrap_or(u64::MAX)),
        };
        let (reply, answer) = oneshot::channel();
        let request = match self.table.open(shown.clone(), reply) {
            Ok(request) => request,
            Err((why, _)) => {
                tracing::warn!(capsule = %shown.capsule, "approval refused: {why}");
                self.record(&shown, format!("denied: {why}"));
                return Box::pin(std::future::ready(Decision::Denied(why)));
            }
        };
        self.record(
            &request,
            format!(
                "asked; expires in {}",
                humantime::format_duration(msg.timeout)
            ),
        );
        let id = request.id;
        ctx.run_later(msg.timeout, move |act, _| {
            let waited = humantime::format_duration(msg.timeout);
            act.settle(
                id,
                Decision::Denied(format!("no answer within {waited}")),
                &format!("expired: no answer within {waited}"),
            );
        });
        // Announced to frontends; with none listening, nobody can answer: denied at once.
        let bus = self.bus.clone();
        let payload = RawValue::encode(&request);
        let publish = async move {
            let payload = payload.map_err(|e| e.to_string())?;
            let publish = Publish {
                topic: APPROVAL_REQUESTED.to_owned(),
                payload,
                source: "kernel".to_owned(),
            };
            match bus.call(publish, SERVICE_TIMEOUT).await {
                Ok(Ok(published)) => Ok(published.delivered),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        ctx.spawn(publish.into_actor(self).map(move |delivered, act, _| {
            let why = match delivered {
                Ok(0) => {
                    "no frontend is listening for approvals (subscribed to `approval.>`)".to_owned()
                }
                Ok(_) => return,
                Err(e) => format!("cannot ask: {e}"),
            };
            act.settle(id, Decision::Denied(why.clone()), &format!("denied: {why}"));
        }));
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Decision::Denied("the approvals actor stopped".into()))
        })
    }
}

impl Handler<ListApprovals> for ApprovalsActor {
    type Result = MessageResult<ListApprovals>;

    fn handle(&mut self, _: ListApprovals, _: &mut Context<Self>) -> Self::Result {
        for gone in self.table.forget_abandoned() {
            self.record(&gone, "abandoned: its call ended before an answer");
        }
        MessageResult(self.table.list())
    }
}

impl Handler<AnswerApproval> for ApprovalsActor {
    type Result = ResponseFuture<Result<ApprovalSettled, ApprovalError>>;

    fn handle(&mut self, msg: AnswerApproval, ctx: &mut Context<Self>) -> Self::Result {
        let Some(request) = self.table.list().into_iter().find(|r| r.id == msg.id) else {
            return Box::pin(std::future::ready(Err(ApprovalError::Unknown(msg.id))));
        };
        let by = msg.by;
        match msg.answer {
            ApprovalAnswer::Once => {
                let settled = self.settle(
                    msg.id,
                    Decision::Approved,
                    &format!("approved once by {by}"),
                );
                Box::pin(std::future::ready(
                    settled.ok_or(ApprovalError::Unknown(msg.id)),
                ))
            }
            ApprovalAnswer::Deny => {
                let settled = self.settle(
                    msg.id,
                    Decision::Denied(format!("denied by {by}")),
                    &format!("denied by {by}"),
                );
                Box::pin(std::future::ready(
                    settled.ok_or(ApprovalError::Unknown(msg.id)),
                ))
            }
            ApprovalAnswer::Always => {
                // The grant is given outright first (persisted), then the use goes ahead.
                let resource = request
                    .grant
                    .strip_prefix(ASK_PREFIX)
                    .unwrap_or(&request.grant)
                    .to_owned();
                let grant = GrantCapability {
                    subject: request.capsule.clone(),
                    resource: resource.clone(),
                };
                let caps = self.caps.clone();
                let (tx, rx) = oneshot::channel();
                let give = async move { caps.call(grant, SERVICE_TIMEOUT).await };
                ctx.spawn(give.into_actor(self).map(move |given, act, _| {
                    let reason = match given {
                        Ok(Ok(_)) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(e) => Some(e.to_string()),
                    };
                    let answer = match reason {
                        None => act
                            .settle(msg.id, Decision::Approved, &format!("approved always by {by}; granted {resource}"))
                            .ok_or(ApprovalError::Unknown(msg.id)),
                        Some(reason) => {
                            act.settle(
                                msg.id,
                                Decision::Denied(format!("the grant could not be given: {reason}")),
                                &format!("denied: `always` by {by}, but the grant could not be given: {reason}"),
                            );
                            Err(ApprovalError::Grant {
                                grant: resource,
                                reason,
                            })
                        }
                    };
                    let _ = tx.send(answer);
                }));
                Box::pin(async move { rx.await.unwrap_or(Err(ApprovalError::Unknown(msg.id))) })
            }
        }
    }
}

impl Handler<Terminate> for ApprovalsActor {
    type Result = ();

    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Inject> for ApprovalsActor {
    type Result = ();

    fn handle(&mut self, msg: Inject, ctx: &mut Context<Self>) {
        apply_fault(&msg.0, ctx);
    }
}
