//! The one place where a request becomes work: `Ping` is answered here, everything else is
//! sent to the actor that owns it, under the call deadline, as a future spawned into the
//! session so replies leave in completion order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::{ActorFutureExt, AsyncContext, Context};
use serde::Serialize;

use super::{SessionActor, SessionDeps};
use crate::bus::{BusError, GetBusStats, Publish, topic::validate_topic};
use crate::capsules::{GetCapsuleMetadata, GetCommands, ListCapsules, ReloadCapsules};
use crate::error::KernelError;
use crate::protocol::{
    ErrorBody, FaultInjected, PROTOCOL_VERSION, ProtocolError, Request, ShutdownAck, Status,
};
use crate::supervisor::{GetTree, InjectFault, SupervisorActor};

impl SessionActor {
    pub(super) fn dispatch(&mut self, id: u64, request: Request, ctx: &mut Context<Self>) {
        let deps = Arc::clone(&self.deps);
        let t = deps.limits.call_timeout;
        match request {
            Request::Ping => self.reply_ok(id, "pong"),
            Request::GetStatus => self.call(id, ctx, status(deps)),
            Request::Shutdown { reason } => {
                let reason = if reason.is_empty() {
                    format!("requested by {}", self.source())
                } else {
                    reason
                };
                let reason = deps.shutdown.request(reason);
                self.reply_ok(
                    id,
                    &ShutdownAck {
                        shutting_down: true,
                        reason,
                    },
                );
            }
            Request::ListCapsules => {
                self.call(
                    id,
                    ctx,
                    async move { deps.capsules.call(ListCapsules, t).await },
                );
            }
            Request::ReloadCapsules => {
                self.call(id, ctx, async move {
                    deps.capsules.call(ReloadCapsules, t).await
                });
            }
            Request::GetCommands => {
                self.call(
                    id,
                    ctx,
                    async move { deps.capsules.call(GetCommands, t).await },
                );
            }
            Request::GetCapsuleMetadata { name } => self.call(id, ctx, async move {
                Ok(deps.capsules.call(GetCapsuleMetadata { name }, t).await??)
            }),
            Request::GetSupervisionTree => {
                self.call(id, ctx, ask_supervisor(&deps.supervisor, GetTree, t));
            }
            Request::Subscribe { pattern } => self.subscribe(id, pattern, ctx),
            Request::Unsubscribe { pattern } => self.unsubscribe(id, pattern, ctx),
            Request::Publish { topic, payload } => {
                if let Err(e) = check_publish(&deps, &topic) {
                    return self.reply_err(Some(id), &ErrorBody::from(&e));
                }
                let source = self.source();
                self.call(id, ctx, async move {
                    let msg = Publish {
                        topic,
                        payload,
                        source,
                    };
                    Ok(deps.bus.call(msg, t).await??)
                });
            }
            Request::InjectFault { target, fault } => {
                if !deps.info.fault_injection {
                    let error = KernelError::FaultInjectionDisabled;
                    return self.reply_err(Some(id), &ErrorBody::from(&error));
                }
                tracing::warn!(connection = self.id, %target, %fault, "fault injection requested");
                let msg = InjectFault {
                    target: target.clone(),
                    fault,
                };
                let ask = ask_supervisor(&deps.supervisor, msg, t);
                self.call(id, ctx, async move {
                    ask.await??;
                    Ok(FaultInjected { target, fault })
                });
            }
        }
    }

    /// Runs `work` concurrently with the session and replies with its outcome.
    pub(super) fn call<T, F>(&mut self, id: u64, ctx: &mut Context<Self>, work: F)
    where
        T: Serialize + 'static,
        F: Future<Output = Result<T, KernelError>> + 'static,
    {
        let limit = self.deps.limits.max_in_flight;
        if self.in_flight >= limit {
            let error = ProtocolError::TooManyRequests(limit);
            return self.reply_err(Some(id), &ErrorBody::from(&error));
        }
        self.in_flight += 1;
        ctx.spawn(
            actix::fut::wrap_future(work).map(move |result, act: &mut Self, ctx| {
                act.in_flight -= 1;
                match result {
                    Ok(value) => act.reply_ok(id, &value),
                    Err(error) => act.reply_err(Some(id), &ErrorBody::from(&error)),
                }
                act.apply_backpressure(ctx);
                act.close_if_done(ctx);
            }),
        );
    }
}

fn ask_supervisor<M>(
    supervisor: &actix::Addr<SupervisorActor>,
    msg: M,
    timeout: Duration,
) -> impl Future<Output = Result<M::Result, KernelError>> + 'static
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
    SupervisorActor: actix::Handler<M>,
{
    let request = supervisor.send(msg).timeout(timeout);
    async move {
        request
            .await
            .map_err(|e| KernelError::mailbox("supervisor", timeout, e))
    }
}

fn check_publish(deps: &SessionDeps, topic: &str) -> Result<(), KernelError> {
    validate_topic(topic).map_err(|rule| BusError::InvalidTopic {
        topic: topic.to_owned(),
        rule,
    })?;
    if deps.client_publish.iter().any(|p| p.matches(topic)) {
        Ok(())
    } else {
        Err(KernelError::PublishForbidden {
            topic: topic.to_owned(),
            allowed: deps
                .client_publish
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

async fn status(deps: Arc<SessionDeps>) -> Result<Status, KernelError> {
    let t = deps.limits.call_timeout;
    let (bus, capsules) = tokio::join!(
        deps.bus.call(GetBusStats, t),
        deps.capsules.call(ListCapsules, t)
    );
    let mut unavailable = Vec::new();
    let bus = bus
        .inspect_err(|_| unavailable.push(deps.bus.name().to_owned()))
        .ok();
    let capsules = capsules
        .inspect_err(|_| unavailable.push(deps.capsules.name().to_owned()))
        .unwrap_or_default();
    let info = &deps.info;
    Ok(Status {
        pid: info.pid,
        version: info.version.clone(),
        protocol: PROTOCOL_VERSION,
        session: info.session_name.clone(),
        session_id: info.session_id.to_string(),
        workspace: info.workspace.display().to_string(),
        socket: info.socket.display().to_string(),
        ephemeral: info.ephemeral,
        idle_grace_ms: info
            .ephemeral
            .then(|| u64::try_from(info.idle_grace.as_millis()).unwrap_or(u64::MAX)),
        uptime_ms: u64::try_from(info.started_at.elapsed().as_millis()).unwrap_or(u64::MAX),
        connected_clients: deps.connections.authenticated(),
        capsules,
        bus,
        unavailable,
        fault_injection: info.fault_injection,
    })
}
