//! Opening the kernel's databases under `<home>/state/` at boot, before any actor runs: the
//! key-value store, the capability grants and the audit log, each in its own redb file so a
//! damaged one never takes the others with it. The audit chain is verified here; a broken
//! chain is reported, not fatal.

use std::path::Path;
use std::sync::Arc;

use redb::Database;

use super::BootError;
use crate::audit::{self, AuditHealth};
use crate::db::Db;

/// The opened databases, shared by every incarnation of the actors that use them.
#[derive(Debug)]
pub(crate) struct Stores {
    pub(crate) kv: Arc<Db>,
    pub(crate) caps: Arc<Db>,
    pub(crate) audit: Arc<Db>,
    pub(crate) audit_health: Arc<AuditHealth>,
}

fn open(
    path: &Path,
    prepare: fn(&Database) -> Result<(), redb::Error>,
) -> Result<Arc<Db>, BootError> {
    let file = path.to_owned();
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    Db::open(name, move || {
        let db = Database::create(&file)?;
        prepare(&db)?;
        Ok(db)
    })
    .map_err(|source| BootError::Store {
        path: path.to_owned(),
        source,
    })
}

/// Opens (creating if needed) the three databases in `state`.
pub(crate) fn open_all(state: &Path) -> Result<Stores, BootError> {
    let kv = open(&state.join("kv.redb"), crate::store::prepare)?;
    let caps = open(&state.join("caps.redb"), crate::caps::prepare)?;
    let audit_path = state.join("audit.redb");
    let audit = open(&audit_path, audit::prepare)?;
    let verification = audit
        .handle()
        .and_then(|db| audit::verify_db(&db))
        .map_err(|source| BootError::Store {
            path: audit_path,
            source,
        })?;
    if verification.ok {
        tracing::info!(entries = verification.entries, "audit chain verified");
    } else {
        tracing::error!(
            first_bad = ?verification.first_bad,
            reason = ?verification.reason,
            "the audit chain is broken; the daemon continues, `astrid audit verify` shows where"
        );
    }
    Ok(Stores {
        kv,
        caps,
        audit,
        audit_health: Arc::new(AuditHealth::new(verification)),
    })
}
