//! Opening the kernel's databases under `<home>/state/` at boot, before any actor runs: the
//! ledger (the key-value store and the audit log, `ledger.redb`, with its write-ahead journal
//! `ledger.journal.0` and `.1`, replayed here) and the capability grants (`caps.redb`), in separate
//! files so a damaged one never takes the other with it. The audit chain is verified here; a
//! broken chain is reported, not fatal. When any of these files is created, `state/` and the
//! home above it are synced before the daemon serves, so that a crash cannot take away a
//! file whose content was acknowledged as durable; boot fails if that sync fails.

use std::path::Path;
use std::sync::Arc;

use redb::Database;

use super::BootError;
use crate::audit::{self, AuditHealth};
use crate::db::Db;
use crate::ledger::journal::JournalFile;
use crate::ledger::retention::Retention;
use crate::ledger::{self, Ledger, LedgerError};

/// The opened databases, shared by every incarnation of the actors that use them.
#[derive(Debug)]
pub(crate) struct Stores {
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) caps: Arc<Db>,
    pub(crate) audit_health: Arc<AuditHealth>,
}

fn open(
    path: &Path,
    cache: usize,
    prepare: fn(&Database) -> Result<(), redb::Error>,
) -> Result<Arc<Db>, BootError> {
    let file = path.to_owned();
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    Db::open(name, move || {
        let db = Database::builder().set_cache_size(cache).create(&file)?;
        prepare(&db)?;
        Ok(db)
    })
    .map_err(|source| BootError::Store {
        path: path.to_owned(),
        source,
    })
}

/// Opens (creating if needed) the databases in `state`, each with `cache` bytes of page
/// cache; audit entries are written for daemon session `session`, and the log is kept
/// within `retention` (applied here first).
pub(crate) fn open_all(
    state: &Path,
    session: &str,
    cache: usize,
    retention: Retention,
) -> Result<Stores, BootError> {
    let created = FILES.iter().any(|name| !state.join(name).exists());
    let stores = open_files(state, session, cache, retention)?;
    if created {
        let sync = |dir: &Path| {
            crate::files::sync_dir(dir).map_err(|source| BootError::SyncDir {
                path: dir.to_owned(),
                source,
            })
        };
        sync(state)?;
        if let Some(home) = state.parent() {
            sync(home)?;
        }
    }
    Ok(stores)
}

/// The files of `state/` that hold acknowledged data.
const FILES: [&str; 4] = [
    "ledger.redb",
    "ledger.journal.0",
    "ledger.journal.1",
    "caps.redb",
];

fn open_files(
    state: &Path,
    session: &str,
    cache: usize,
    retention: Retention,
) -> Result<Stores, BootError> {
    let ledger_path = state.join("ledger.redb");
    let ledger_db = open(&ledger_path, cache, ledger::prepare)?;
    let ledger_error = |source| BootError::Ledger {
        path: ledger_path.clone(),
        source,
    };
    let journal = |name: &str| -> Result<Box<dyn JournalFile>, BootError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(state.join(name))
            .map_err(|source| ledger_error(LedgerError::Journal { op: "open", source }))?;
        Ok(Box::new(file))
    };
    let journal = [journal("ledger.journal.0")?, journal("ledger.journal.1")?];
    let ledger = Ledger::open_with(ledger_db, journal, session, retention).map_err(ledger_error)?;
    ledger.prune().map_err(ledger_error)?;
    let caps = open(&state.join("caps.redb"), cache, crate::caps::prepare)?;
    let verification = ledger.read(audit::verify_db).map_err(ledger_error)?;
    if verification.ok {
        tracing::info!(
            entries = verification.entries,
            pruned = ?verification.pruned,
            "audit chain verified"
        );
    } else {
        tracing::error!(
            first_bad = ?verification.first_bad,
            reason = ?verification.reason,
            "the audit chain is broken; the daemon continues, `astrid audit verify` shows where"
        );
    }
    Ok(Stores {
        ledger: Arc::new(ledger),
        caps,
        audit_health: Arc::new(AuditHealth::new(verification)),
    })
}
