//! A redb database file that survives I/O failures.
//!
//! redb refuses every write after one failed write or fsync ("previous I/O error; close and
//! reopen the database"). A full disk that frees up again must not leave the store, the audit
//! log or the grants read-only until the daemon restarts, so the owner of a database (the
//! ledger, the capability actor) calls [`Db::discard`] after a failed commit, and the next
//! [`Db::handle`] opens the file again. The handle is shared by every incarnation of the
//! actors that use it.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use redb::Database;

type Opener = Box<dyn Fn() -> Result<Database, redb::Error> + Send + Sync>;

/// A database and how to open it again.
pub struct Db {
    name: String,
    opener: Opener,
    current: Mutex<Option<Arc<Database>>>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Opens a database with `opener` (which also prepares its tables), keeping `opener` to
    /// reopen it after a failure. `name` appears in logs.
    ///
    /// # Errors
    ///
    /// The opener's error.
    pub fn open(
        name: impl Into<String>,
        opener: impl Fn() -> Result<Database, redb::Error> + Send + Sync + 'static,
    ) -> Result<Arc<Self>, redb::Error> {
        let db = opener()?;
        Ok(Arc::new(Self {
            name: name.into(),
            opener: Box::new(opener),
            current: Mutex::new(Some(Arc::new(db))),
        }))
    }

    /// The open database, reopening it if it was discarded.
    ///
    /// # Errors
    ///
    /// When reopening fails (the failure that discarded it may persist).
    pub fn handle(&self) -> Result<Arc<Database>, redb::Error> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(db) = &*current {
            return Ok(Arc::clone(db));
        }
        let db = Arc::new((self.opener)()?);
        tracing::info!(db = %self.name, "database reopened");
        *current = Some(Arc::clone(&db));
        Ok(db)
    }

    /// Drops the database after a failed write so the next [`Db::handle`] reopens it. The
    /// caller must not keep its own handle.
    pub fn discard(&self) {
        let dropped = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if dropped.is_some() {
            tracing::warn!(db = %self.name, "database closed after a write failure; it will be reopened");
        }
    }
}
