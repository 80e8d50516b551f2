//! The capability store: which capsule may touch which resource. Grants come from capsule
//! manifests (in memory, replaced on each load) and from the API (persisted in redb until
//! revoked). [`Check`] answers every host call; anything not granted is denied, and every
//! denial is written to the audit log.
//!
//! Handles: [`GrantCapability`], [`RevokeCapability`], [`ListCapabilities`] (router),
//! [`SetManifestGrants`] (capsule loader), [`Check`] (host functions), [`Terminate`],
//! [`Inject`].

mod messages;
pub mod resource;

use std::sync::Arc;

use actix::{Actor, ActorContext, Context, Handler, MessageResult};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

pub use self::messages::{
    CapsError, Check, Grant, GrantCapability, GrantSource, ListCapabilities, RevokeCapability,
    SetManifestGrants,
};
use self::resource::ResourcePattern;
use crate::audit::{AuditActor, Record};
use crate::bus::unix_millis;
use crate::db::Db;
use crate::supervisor::{ChildRef, Inject, Terminate, apply_fault};

/// `subject NUL resource` → grant (MessagePack).
const GRANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("grants");

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
}

/// The capability store actor.
#[derive(Debug)]
pub struct CapabilitiesActor {
    db: Arc<Db>,
    audit: ChildRef<AuditActor>,
    held: Vec<Held>,
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
        Ok(Self { db, audit, held })
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
        match ResourcePattern::parse(&grant.resource) {
            Ok(pattern) => held.push(Held { grant, pattern }),
            Err(e) => tracing::error!("stored grant skipped: {e}"),
        }
    }
    Ok(held)
}

impl Actor for CapabilitiesActor {
    type Context = Context<Self>;
}

impl Handler<GrantCapability> for CapabilitiesActor {
    type Result = Result<Grant, CapsError>;

    fn handle(&mut self, msg: GrantCapability, _: &mut Context<Self>) -> Self::Result {
        if !valid_subject(&msg.subject) {
            return Err(CapsError::InvalidSubject(msg.subject));
        }
        let pattern = ResourcePattern::parse(&msg.resource)?;
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
        self.held.push(Held {
            grant: grant.clone(),
            pattern,
        });
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
            .map(|r| ResourcePattern::parse(r).map(|p| (r.clone(), p)))
            .collect::<Result<Vec<_>, _>>()?;
        self.held.retain(|h| {
            !(h.grant.subject == msg.subject && h.grant.source == GrantSource::Manifest)
        });
        let now = unix_millis();
        for (resource, pattern) in parsed {
            if let Some(audit) = self.audit.get() {
                audit.do_send(Record::new(
                    "kernel",
                    "grant",
                    format!("{}:{resource}", msg.subject),
                    "ok (manifest)",
                ));
            }
            self.held.push(Held {
                grant: Grant {
                    subject: msg.subject.clone(),
                    resource,
                    source: GrantSource::Manifest,
                    granted_ms: now,
                },
                pattern,
            });
        }
        Ok(())
    }
}

impl Handler<Check> for CapabilitiesActor {
    type Result = bool;

    fn handle(&mut self, msg: Check, _: &mut Context<Self>) -> bool {
        let allowed = self
            .held
            .iter()
            .any(|h| h.grant.subject == msg.subject && h.pattern.allows(&msg.access));
        if !allowed {
            tracing::warn!(subject = %msg.subject, access = %msg.access, "capability denied");
            if let Some(audit) = self.audit.get() {
                audit.do_send(Record::new(
                    format!("capsule:{}", msg.subject),
                    "deny",
                    msg.access.to_string(),
                    "denied: no capability allows it",
                ));
            }
        }
        allowed
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
        apply_fault(msg.0, ctx);
    }
}
