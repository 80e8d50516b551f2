//! The capability store: which capsule may touch which resource. Grants come from capsule
//! manifests (in memory, replaced on each load) and from the API (persisted in redb until
//! revoked). [`Check`] answers every host call; anything not granted is denied, and every
//! denial is written to the audit log (with those the VFS decides, sent as [`Refused`]).
//!
//! A capsule that keeps being denied (a loop of host calls) cannot fill the disk or the
//! log with it: each capsule's denials are recorded one by one up to [`DENIAL_BURST`] at
//! once, then [`DENIAL_PER_SECOND`] a second; beyond that they are counted, and every
//! second one entry (and one log line) says how many were not recorded one by one. That
//! summing runs only while some capsule's budget is not whole again: a store that denies
//! nothing has no timer.
//!
//! Handles: [`GrantCapability`], [`RevokeCapability`], [`ListCapabilities`] (router),
//! [`SetManifestGrants`] (capsule loader), [`Check`] and [`Refused`] (host functions),
//! [`Terminate`], [`Inject`].

mod messages;
pub mod resource;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, MessageResult, SpawnHandle};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

pub use self::messages::{
    CapsError, Check, Grant, GrantCapability, GrantSource, ListCapabilities, Refused,
    RevokeCapability, SetManifestGrants, Verdict,
};
use self::resource::{Access, GrantPattern, ResourcePattern};
use crate::audit::{AuditActor, Record};
use crate::clock::unix_millis;
use crate::db::Db;
use crate::rate::RateBudget;
use crate::supervisor::{ChildRef, Inject, Terminate, apply_fault};

/// `subject NUL resource` → grant (MessagePack).
const GRANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("grants");

/// Denials of one capsule recorded one by one at once.
pub const DENIAL_BURST: u32 = 100;
/// Denials of one capsule recorded one by one a second, after the first [`DENIAL_BURST`].
pub const DENIAL_PER_SECOND: u32 = 10;

/// How often denials over a budget are summed up, while there are budgets to watch.
const SUM_UP_EVERY: Duration = Duration::from_secs(1);

/// Creates the table if the database is new.
///
/// # Errors
///
/// When the database cannot be written.
pub fn prepare(db: &Database) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    tx.open_table(GRANTS)?;
    tx.commit()?;
    Ok(())
}

fn valid_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.len() <= 64
        && subject
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[derive(Debug)]
struct Held {
    grant: Grant,
    pattern: ResourcePattern,
    /// An `ask:` grant: each use waits for the user.
    ask: bool,
    /// How long the user has to approve a use (manifest grants only).
    approval_timeout: Option<Duration>,
}

impl Held {
    fn new(grant: Grant, parsed: GrantPattern) -> Self {
        Self {
            grant,
            pattern: parsed.pattern,
            ask: parsed.ask,
            approval_timeout: None,
        }
    }
}

/// The capability store actor.
#[derive(Debug)]
pub struct CapabilitiesActor {
    db: Arc<Db>,
    audit: ChildRef<AuditActor>,
    held: Vec<Held>,
    /// Each subject's budget of denials recorded one by one.
    denials: HashMap<String, RateBudget>,
    /// The timer that sums up denials, while `denials` has budgets.
    summing: Option<SpawnHandle>,
}

impl CapabilitiesActor {
    /// A store over `db` (prepared with [`prepare`]); runtime grants are loaded from it, and
    /// manifest grants arrive with [`SetManifestGrants`]. Denials go to `audit`.
    ///
    /// # Errors
    ///
    /// When the stored grants cannot be read.
    pub fn new(db: Arc<Db>, audit: ChildRef<AuditActor>) -> Result<Self, String> {
        let held = db
            .handle()
            .and_then(|h| load(&h))
            .map_err(|e| format!("cannot read the capability database: {e}"))?;
        Ok(Self {
            db,
            audit,
            held,
            denials: HashMap::new(),
            summing: None,
        })
    }

    /// Records that `subject` was denied `access` (`reason` starts with `denied`), within
    /// its budget; the summing timer runs from now until the budgets are whole again.
    fn deny(&mut self, subject: &str, access: &Access, reason: &str, ctx: &mut Context<Self>) {
        if self.summing.is_none() {
            self.summing = Some(ctx.run_interval(SUM_UP_EVERY, |act, ctx| {
                act.sum_up_denials();
                if act.denials.is_empty()
                    && let Some(timer) = act.summing.take()
                {
                    ctx.cancel_future(timer);
                }
            }));
        }
        let now = Instant::now();
        let budget = self
            .denials
            .entry(subject.to_owned())
            .or_insert_with(|| RateBudget::new(DENIAL_BURST, DENIAL_PER_SECOND, now));
        if !budget.admit(now) {
            return;
        }
        tracing::warn!(%subject, %access, "capability denied: {reason}");
        self.record(Record::new(
            format!("capsule:{subject}"),
            "deny",
            access.to_string(),
            reason,
        ));
    }

    /// One entry for each subject whose denials went over its budget since the last time.
    fn sum_up_denials(&mut self) {
        let mut over: Vec<(String, u64)> = self
            .denials
            .iter_mut()
            .map(|(subject, budget)| (subject.clone(), budget.take_dropped()))
            .filter(|(_, n)| *n > 0)
            .collect();
        over.sort();
        for (subject, n) in over {
            tracing::warn!(%subject, not_recorded = n, "capability denials over the budget");
            self.record(Record::new(
                format!("capsule:{subject}"),
                "deny",
                "(repeated)",
                format!(
                    "denied {n} more times, not recorded one by one (a capsule's denials are \
                     recorded {DENIAL_BURST} at once, then {DENIAL_PER_SECOND} a second)"
                ),
            ));
        }
        // Forget full budgets of subjects that are quiet: they start full anyway.
        self.denials.retain(|_, b| !b.is_full(Instant::now()));
    }

    fn record(&self, record: Record) {
        if let Some(audit) = self.audit.get() {
            audit.do_send(record);
        }
    }

    fn persist(&self, key: &str, grant: Option<&Grant>) -> Result<(), redb::Error> {
        let result = self.db.handle().and_then(|db| write_grant(&db, key, grant));
        if result.is_err() {
            self.db.discard();
        }
        result
    }

    /// The grant of `subject` on `resource` that came from `source`.
    fn find(&self, subject: &str, resource: &str, source: GrantSource) -> Option<&Held> {
        self.held.iter().find(|h| {
            h.grant.subject == subject && h.grant.resource == resource && h.grant.source == source
        })
    }
}

fn write_grant(db: &Database, key: &str, grant: Option<&Grant>) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    {
        let mut table = tx.open_table(GRANTS)?;
        match grant {
            Some(g) => {
                let bytes = rmp_serde::to_vec_named(g)
                    .map_err(|e| redb::Error::Io(std::io::Error::other(e)))?;
                table.insert(key, bytes.as_slice())?;
            }
            None => {
                table.remove(key)?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

fn key(subject: &str, resource: &str) -> String {
    format!("{subject}\0{resource}")
}

fn load(db: &Database) -> Result<Vec<Held>, redb::Error> {
    let tx = db.begin_read()?;
    let table = tx.open_table(GRANTS)?;
    let mut held = Vec::new();
    for item in table.iter()? {
        let (k, v) = item?;
        let grant = match rmp_serde::from_slice::<Grant>(v.value()) {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(key = %k.value().replace('\0', " "), "unreadable grant skipped: {e}");
                continue;
            }
        };
        match GrantPattern::parse(&grant.resource) {
            Ok(parsed) => held.push(Held::new(grant, parsed)),
            Err(e) => tracing::error!("stored grant skipped: {e}"),
        }
    }
    Ok(held)
}

impl Actor for CapabilitiesActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        // No timer: the first denial starts the one that sums them up.
    }
}

impl Handler<GrantCapability> for CapabilitiesActor {
    type Result = Result<Grant, CapsError>;

    fn handle(&mut self, msg: GrantCapability, _: &mut Context<Self>) -> Self::Result {
        if !valid_subject(&msg.subject) {
            return Err(CapsError::InvalidSubject(msg.subject));
        }
        let parsed = GrantPattern::parse(&msg.resource)?;
        // A manifest grant of the same resource does not count: it goes with the manifest,
        // while the operator's grant must stay.
        if let Some(existing) = self.find(&msg.subject, &msg.resource, GrantSource::Runtime) {
            return Ok(existing.grant.clone());
        }
        let grant = Grant {
            subject: msg.subject,
            resource: msg.resource,
            source: GrantSource::Runtime,
            granted_ms: unix_millis(),
        };
        self.persist(&key(&grant.subject, &grant.resource), Some(&grant))
            .map_err(|source| CapsError::Storage {
                op: "grant",
                source,
            })?;
        tracing::info!(subject = %grant.subject, resource = %grant.resource, "capability granted");
        self.held.push(Held::new(grant.clone(), parsed));
        Ok(grant)
    }
}

impl Handler<RevokeCapability> for CapabilitiesActor {
    type Result = Result<bool, CapsError>;

    fn handle(&mut self, msg: RevokeCapability, _: &mut Context<Self>) -> Self::Result {
        if self
            .find(&msg.subject, &msg.resource, GrantSource::Runtime)
            .is_none()
        {
            return match self.find(&msg.subject, &msg.resource, GrantSource::Manifest) {
                Some(_) => Err(CapsError::FromManifest {
                    subject: msg.subject,
                    resource: msg.resource,
                }),
                None => Ok(false),
            };
        }
        self.persist(&key(&msg.subject, &msg.resource), None)
            .map_err(|source| CapsError::Storage {
                op: "revoke",
                source,
            })?;
        // Only the runtime grant goes; a manifest grant of the same resource stays.
        self.held.retain(|h| {
            !(h.grant.subject == msg.subject
                && h.grant.resource == msg.resource
                && h.grant.source == GrantSource::Runtime)
        });
        tracing::info!(subject = %msg.subject, resource = %msg.resource, "capability revoked");
        Ok(true)
    }
}

impl Handler<ListCapabilities> for CapabilitiesActor {
    type Result = MessageResult<ListCapabilities>;

    fn handle(&mut self, msg: ListCapabilities, _: &mut Context<Self>) -> Self::Result {
        let mut grants: Vec<Grant> = self
            .held
            .iter()
            .filter(|h| msg.subject.as_ref().is_none_or(|s| *s == h.grant.subject))
            .map(|h| h.grant.clone())
            .collect();
        grants.sort_by(|a, b| (&a.subject, &a.resource).cmp(&(&b.subject, &b.resource)));
        MessageResult(grants)
    }
}

impl Handler<SetManifestGrants> for CapabilitiesActor {
    type Result = Result<(), CapsError>;

    fn handle(&mut self, msg: SetManifestGrants, _: &mut Context<Self>) -> Self::Result {
        if !valid_subject(&msg.subject) {
            return Err(CapsError::InvalidSubject(msg.subject));
        }
        let parsed = msg
            .resources
            .iter()
            .map(|r| GrantPattern::parse(r).map(|p| (r.clone(), p)))
            .collect::<Result<Vec<_>, _>>()?;
        self.held.retain(|h| {
            !(h.grant.subject == msg.subject && h.grant.source == GrantSource::Manifest)
        });
        let now = unix_millis();
        for (resource, parsed) in parsed {
            if let Some(audit) = self.audit.get() {
                audit.do_send(Record::new(
                    "kernel",
                    "grant",
                    format!("{}:{resource}", msg.subject),
                    "ok (manifest)",
                ));
            }
            let approval_timeout = msg.approval_timeouts.get(&resource).copied();
            let grant = Grant {
                subject: msg.subject.clone(),
                resource,
                source: GrantSource::Manifest,
                granted_ms: now,
            };
            self.held.push(Held {
                approval_timeout,
                ..Held::new(grant, parsed)
            });
        }
        Ok(())
    }
}

impl Handler<Check> for CapabilitiesActor {
    type Result = MessageResult<Check>;

    /// A grant given outright wins over an `ask:` one; among `ask:` grants, the first given.
    fn handle(&mut self, msg: Check, ctx: &mut Context<Self>) -> Self::Result {
        let mut ask = None;
        for held in &self.held {
            if held.grant.subject != msg.subject || !held.pattern.allows(&msg.access) {
                continue;
            }
            if !held.ask {
                return MessageResult(Verdict::Allowed);
            }
            ask.get_or_insert(held);
        }
        if let Some(held) = ask {
            return MessageResult(Verdict::Ask {
                grant: held.grant.resource.clone(),
                timeout: held.approval_timeout,
            });
        }
        self.deny(
            &msg.subject,
            &msg.access,
            "denied: no capability allows it",
            ctx,
        );
        MessageResult(Verdict::Denied)
    }
}

impl Handler<Refused> for CapabilitiesActor {
    type Result = ();

    fn handle(&mut self, msg: Refused, ctx: &mut Context<Self>) {
        self.deny(&msg.subject, &msg.access, &msg.reason, ctx);
    }
}

impl Handler<Terminate> for CapabilitiesActor {
    type Result = ();

    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Inject> for CapabilitiesActor {
    type Result = ();

    fn handle(&mut self, msg: Inject, ctx: &mut Context<Self>) {
        apply_fault(&msg.0, ctx);
    }
}
