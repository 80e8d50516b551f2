//! Per-namespace quotas of the key-value store: at most so many keys, and so many bytes of
//! keys and values, in each namespace (the client's, and each capsule's). A write that would
//! go past either is refused with `quota_exceeded` before anything is staged; deleting, or
//! overwriting with a smaller value, always fits.
//!
//! The store counts what each namespace holds as it accepts writes, so a check costs no scan:
//! the counts are taken from the database when the store starts (every restart recounts, so a
//! count can never drift for longer than an incarnation), and each accepted write updates
//! them at once. To know what a write replaces, the size a key has *after the writes already
//! accepted* is needed: the store's own record of keys whose writes are accepted but not yet
//! durable (`pending`, each tagged with the batch that carries it, and forgotten when that
//! batch is answered), else the ledger's durable view. A batch that fails takes its changes
//! back from the counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::{Database, ReadableDatabase, ReadableTable};

use super::StoreError;
use crate::ledger::KV;

/// What one namespace may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Keys.
    pub max_keys: u64,
    /// Bytes of keys and values.
    pub max_bytes: u64,
}

impl Quota {
    /// 100,000 keys and 64 MiB per namespace.
    pub const DEFAULT: Self = Self {
        max_keys: 100_000,
        max_bytes: 64 * 1024 * 1024,
    };
}

impl Default for Quota {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What one namespace holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Keys.
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

/// A change to the counts, to take back if its batch fails.
#[derive(Debug, Clone)]
struct Change {
    namespace: String,
    keys: i64,
    bytes: i64,
}

#[derive(Debug, Default)]
struct State {
    usage: HashMap<String, Usage>,
    /// Physical key → (batch, size after the accepted writes; `None`: deleted).
    pending: HashMap<Vec<u8>, (u64, Option<u64>)>,
}

impl State {
    fn apply(&mut self, change: &Change, sign: i64) {
        let usage = self.usage.entry(change.namespace.clone()).or_default();
        usage.keys = usage.keys.saturating_add_signed(change.keys * sign);
        usage.bytes = usage.bytes.saturating_add_signed(change.bytes * sign);
    }
}

/// The counts and the writes in flight, shared with the answers of the batches.
#[derive(Debug)]
pub(super) struct Quotas {
    quota: Quota,
    state: Arc<Mutex<State>>,
    /// The batch writes are accepted into now.
    batch: u64,
    /// The changes of that batch.
    changes: Vec<Change>,
}

/// The end of a batch: call [`Settle::done`] with its outcome.
#[derive(Debug)]
pub(super) struct Settle {
    batch: u64,
    changes: Vec<Change>,
    state: Arc<Mutex<State>>,
}

impl Settle {
    /// The batch is durable (`ok`) or failed: its keys are the ledger's to tell from now
    /// on, and a failed batch's changes leave the counts.
    pub(super) fn done(self, ok: bool) {
        let mut state = lock(&self.state);
        state.pending.retain(|_, (batch, _)| *batch != self.batch);
        if !ok {
            for change in &self.changes {
                state.apply(change, -1);
            }
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The namespace of a physical key (namespace, NUL, key) and the bytes it counts for.
fn split(physical: &[u8]) -> Option<(&str, u64)> {
    let at = physical.iter().position(|&b| b == 0)?;
    let namespace = std::str::from_utf8(&physical[..at]).ok()?;
    Some((namespace, (physical.len() - at - 1) as u64))
}

/// Counts what every namespace of `db` holds.
///
/// # Errors
///
/// When the database cannot be read.
pub(super) fn count(db: &Database) -> Result<HashMap<String, Usage>, redb::Error> {
    let tx = db.begin_read()?;
    let table = tx.open_table(KV)?;
    let mut usage: HashMap<String, Usage> = HashMap::new();
    for item in table.iter()? {
        let (key, value) = item?;
        if let Some((namespace, key_len)) = split(key.value()) {
            let u = usage.entry(namespace.to_owned()).or_default();
            u.keys += 1;
            u.bytes += key_len + value.value().len() as u64;
        }
    }
    Ok(usage)
}

impl Quotas {
    /// Quotas of `quota` over namespaces holding `usage`.
    pub(super) fn new(quota: Quota, usage: HashMap<String, Usage>) -> Self {
        Self {
            quota,
            state: Arc::new(Mutex::new(State {
                usage,
                pending: HashMap::new(),
            })),
            batch: 0,
            changes: Vec::new(),
        }
    }

    /// What `namespace` holds, counting the writes accepted so far.
    #[cfg(test)]
    pub(super) fn usage(&self, namespace: &str) -> Usage {
        lock(&self.state)
            .usage
            .get(namespace)
            .copied()
            .unwrap_or_default()
    }

    /// Accepts writing `size` bytes (`None`: a delete) under `physical`, whose durable size
    /// `durable` tells (asked only when no accepted write says it), or refuses it.
    ///
    /// # Errors
    ///
    /// [`StoreError::QuotaExceeded`], or the durable read's error.
    pub(super) fn admit(
        &mut self,
        physical: &[u8],
        size: Option<u64>,
        durable: impl FnOnce() -> Result<Option<u64>, StoreError>,
    ) -> Result<(), StoreError> {
        let Some((namespace, _)) = split(physical) else {
            return Ok(());
        };
        let mut state = lock(&self.state);
        let before = match state.pending.get(physical) {
            Some((_, size)) => *size,
            None => durable()?,
        };
        let keys = i64::from(size.is_some()) - i64::from(before.is_some());
        let bytes = signed(size.unwrap_or(0)) - signed(before.unwrap_or(0));
        let now = state.usage.get(namespace).copied().unwrap_or_default();
        let after_keys = now.keys.saturating_add_signed(keys);
        let after_bytes = now.bytes.saturating_add_signed(bytes);
        let refused = if keys > 0 && after_keys > self.quota.max_keys {
            Some(("keys", self.quota.max_keys))
        } else if bytes > 0 && after_bytes > self.quota.max_bytes {
            Some(("bytes", self.quota.max_bytes))
        } else {
            None
        };
        if let Some((what, limit)) = refused {
            return Err(StoreError::QuotaExceeded {
                namespace: namespace.to_owned(),
                what,
                limit,
            });
        }
        let change = Change {
            namespace: namespace.to_owned(),
            keys,
            bytes,
        };
        state.apply(&change, 1);
        state.pending.insert(physical.to_vec(), (self.batch, size));
        drop(state);
        self.changes.push(change);
        Ok(())
    }

    /// Closes the batch being accepted (it goes to the ledger now) and starts the next.
    pub(super) fn seal(&mut self) -> Settle {
        let settle = Settle {
            batch: self.batch,
            changes: std::mem::take(&mut self.changes),
            state: Arc::clone(&self.state),
        };
        self.batch += 1;
        settle
    }
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: &str, key: &str) -> Vec<u8> {
        super::super::physical(namespace, key)
    }

    fn small() -> Quotas {
        Quotas::new(
            Quota {
                max_keys: 2,
                max_bytes: 100,
            },
            HashMap::new(),
        )
    }

    #[test]
    fn keys_and_bytes_are_bounded_per_namespace() {
        let mut q = small();
        let none = || Ok(None);
        q.admit(&key("client", "a"), Some(10), none).unwrap();
        q.admit(&key("client", "b"), Some(10), none).unwrap();
        let err = q.admit(&key("client", "c"), Some(10), none).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::QuotaExceeded {
                    what: "keys",
                    limit: 2,
                    ..
                }
            ),
            "{err}"
        );
        // Another namespace has its own.
        q.admit(&key("capsule:x", "c"), Some(10), none).unwrap();
        // Overwriting a key fits while the bytes do; growing past them does not.
        q.admit(&key("client", "a"), Some(80), none).unwrap();
        let err = q.admit(&key("client", "a"), Some(91), none).unwrap_err();
        assert!(
            matches!(err, StoreError::QuotaExceeded { what: "bytes", .. }),
            "{err}"
        );
        assert_eq!(q.usage("client"), Usage { keys: 2, bytes: 90 });
        // A delete always fits, and frees room.
        q.admit(&key("client", "b"), None, none).unwrap();
        q.admit(&key("client", "c"), Some(10), none).unwrap();
        assert_eq!(q.usage("client"), Usage { keys: 2, bytes: 90 });
    }

    #[test]
    fn what_a_write_replaces_is_read_from_the_ledger_once_no_accepted_write_says() {
        let mut q = small();
        // The ledger holds `a` (30 bytes); overwriting it with 20 frees 10.
        q.admit(&key("client", "a"), Some(20), || Ok(Some(30)))
            .unwrap();
        assert_eq!(q.usage("client"), Usage { keys: 0, bytes: 0 });
        let settle = q.seal();
        // Until its batch is answered, the accepted write says what `a` is.
        q.admit(&key("client", "a"), None, || panic!("not asked"))
            .unwrap();
        settle.done(true);
        // Answered: the ledger is asked again.
        q.seal().done(true);
        q.admit(&key("client", "a"), Some(5), || Ok(None)).unwrap();
    }

    #[test]
    fn a_failed_batch_takes_its_changes_back() {
        let mut q = small();
        q.admit(&key("client", "a"), Some(10), || Ok(None)).unwrap();
        q.admit(&key("client", "b"), Some(10), || Ok(None)).unwrap();
        q.seal().done(false);
        assert_eq!(q.usage("client"), Usage::default());
        q.admit(&key("client", "c"), Some(10), || Ok(None)).unwrap();
        q.admit(&key("client", "d"), Some(10), || Ok(None)).unwrap();
    }
}
