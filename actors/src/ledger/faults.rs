//! Storage faults (`astrid fault store storage:fsync`): the ledger's next journal writes,
//! journal syncs or checkpoints fail as if the disk had failed them. Journal files are
//! wrapped at open (`Faulty`), so an injected failure takes exactly the path a real one
//! takes; the checkpointer asks [`StorageFaults::take`] before it writes to the database.
//! Unarmed, each check is one atomic load.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use astrid_protocol::{Fault, StorageOp};

use super::journal::JournalFile;

/// How many of each operation are still to fail.
#[derive(Debug, Default)]
pub struct StorageFaults {
    left: [AtomicU32; 3],
}

fn slot(op: StorageOp) -> usize {
    match op {
        StorageOp::JournalWrite => 0,
        StorageOp::Fsync => 1,
        StorageOp::Checkpoint => 2,
    }
}

impl StorageFaults {
    /// The next `times` operations `op` fail (added to any still armed).
    pub fn arm(&self, op: StorageOp, times: u32) {
        let _ = self.left[slot(op)].fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            Some(n.saturating_add(times))
        });
    }

    /// Nothing fails any more.
    pub fn disarm(&self) {
        for left in &self.left {
            left.store(0, Ordering::Release);
        }
    }

    /// Applies `fault` if it is a storage fault (arming it) or `clear` (disarming all);
    /// answers whether it was one of those.
    pub fn inject(&self, fault: &Fault) -> bool {
        match fault {
            Fault::Storage { op, times } => {
                tracing::warn!(%fault, "injected fault");
                self.arm(*op, *times);
                true
            }
            Fault::Clear => {
                self.disarm();
                true
            }
            _ => false,
        }
    }

    /// Whether this operation `op` is to fail (counting it if so).
    pub fn take(&self, op: StorageOp) -> bool {
        let left = &self.left[slot(op)];
        left.load(Ordering::Acquire) > 0
            && left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
    }

    /// The error an injected failure of `op` gives.
    pub fn error(op: StorageOp) -> io::Error {
        io::Error::other(format!("injected fault: {}", op.as_str()))
    }
}

/// A journal file whose writes and syncs fail while a fault is armed.
pub(super) struct Faulty {
    file: Box<dyn JournalFile>,
    faults: Arc<StorageFaults>,
}

impl Faulty {
    pub(super) fn wrap(file: Box<dyn JournalFile>, faults: &Arc<StorageFaults>) -> Self {
        Self {
            file,
            faults: Arc::clone(faults),
        }
    }

    fn check(&self, op: StorageOp) -> io::Result<()> {
        if self.faults.take(op) {
            tracing::warn!("injected fault: the journal's {} fails", op.as_str());
            Err(StorageFaults::error(op))
        } else {
            Ok(())
        }
    }
}

impl fmt::Debug for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.file.fmt(f)
    }
}

impl JournalFile for Faulty {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        self.file.read_all()
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check(StorageOp::JournalWrite)?;
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.check(StorageOp::Fsync)?;
        self.file.sync_data()
    }

    fn read_prefix(&mut self, len: usize) -> io::Result<Vec<u8>> {
        self.file.read_prefix(len)
    }

    fn size(&mut self) -> io::Result<u64> {
        self.file.size()
    }

    fn shrink_to(&mut self, len: u64) -> io::Result<()> {
        self.file.shrink_to(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_armed_operation_fails_as_many_times_as_asked_and_no_other() {
        let faults = StorageFaults::default();
        assert!(!faults.take(StorageOp::Fsync));
        faults.arm(StorageOp::Fsync, 2);
        assert!(!faults.take(StorageOp::JournalWrite));
        assert!(faults.take(StorageOp::Fsync));
        assert!(faults.take(StorageOp::Fsync));
        assert!(!faults.take(StorageOp::Fsync));
        faults.arm(StorageOp::Checkpoint, 5);
        faults.disarm();
        assert!(!faults.take(StorageOp::Checkpoint));
    }
}
