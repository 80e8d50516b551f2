//! Crash bundles on disk, `<home>/crashes/`: one file per capsule crash, `<id>.crash`, and
//! a copy of each crashed module, `modules/<hash>`, shared by the bundles of that module so
//! that a replay runs what crashed even after the capsule changed.
//!
//! A bundle file is the magic `ASTRIDX1`, the length of its summary (4 bytes, big-endian),
//! the [`CrashSummary`] and the [`CrashBundle`], both MessagePack: listing reads only the
//! summaries. Files are `0600`, replaced atomically but not synced (they are diagnostics:
//! the crashed capsule's thread does not wait for the disk, and a power failure may lose the
//! latest), in a `0700` folder. The folder is bounded: at most [`MAX_CRASHES`] bundles and [`MAX_CRASH_BYTES`]
//! bytes (bundles and module copies together); past either, the oldest bundles are removed
//! first, then the module copies no bundle names. A bundle holds at most the bounds of
//! `tape.rs` (64 calls, 1 MiB of inputs and host results), so one always fits.
//!
//! Bundles are written by the capsule's own thread as it ends the crashed incarnation,
//! after its actor was told (the restart does not wait for the disk); at most
//! [`MAX_WRITING`] at once, a crash past that is logged and not kept.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::files;
use crate::protocol::{
    CrashBundle, CrashKind, CrashLimits, CrashModule, CrashSummary, RecordedCall,
};

/// Most bundles kept.
pub const MAX_CRASHES: usize = 64;
/// Most bytes kept (bundles and module copies).
pub const MAX_CRASH_BYTES: u64 = 64 * 1024 * 1024;
/// Most bundles being written at once: in a crash storm (a capsule restarted without
/// backoff, crashing on every call), a crash past this is logged and not kept, so that the
/// threads of crashed incarnations do not pile up waiting for the disk.
pub const MAX_WRITING: usize = 4;
/// Longest crash id.
const MAX_ID: usize = 128;
/// Largest summary read.
const MAX_SUMMARY: u32 = 64 * 1024;
/// Largest bundle file read (its calls are bounded by `tape.rs`).
const MAX_BUNDLE: u64 = 16 * 1024 * 1024;
/// Leads every bundle file.
const MAGIC: &[u8; 8] = b"ASTRIDX1";
/// The extension of bundle files.
const EXT: &str = "crash";

/// Why a crash request failed.
#[derive(Debug, thiserror::Error)]
pub enum CrashError {
    /// No bundle has this id.
    #[error("no crash bundle `{0}` (see `astrid crashes ls`)")]
    NotFound(String),
    /// Not a crash id.
    #[error("`{0}` is not a crash id")]
    BadId(String),
    /// The bundle's file is not one.
    #[error("crash bundle `{id}` is damaged: {why}")]
    Damaged {
        /// The id.
        id: String,
        /// What is wrong.
        why: String,
    },
    /// Reading or writing the folder failed.
    #[error("crash bundles in {}: {source}", dir.display())]
    Io {
        /// The folder.
        dir: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The folder of crash bundles.
#[derive(Debug, Clone)]
pub struct CrashStore {
    dir: PathBuf,
    max_count: usize,
    max_bytes: u64,
    /// What the folder holds, as this store wrote it (read from the folder at first use),
    /// so that a write does not scan the folder; held while bundles are written or removed
    /// (several capsules may crash at once).
    index: Arc<Mutex<Index>>,
    /// Bundles being written now.
    writing: Arc<AtomicUsize>,
}

/// The bundles and module copies of the folder.
#[derive(Debug, Default)]
struct Index {
    loaded: bool,
    /// Oldest first.
    bundles: Vec<Indexed>,
    /// Module copies by hash, with their sizes.
    modules: std::collections::BTreeMap<String, u64>,
}

/// One bundle, as the bounds see it.
#[derive(Debug)]
struct Indexed {
    id: String,
    size: u64,
    module: String,
}

/// A bundle being written: one of [`MAX_WRITING`].
struct Writing(Arc<AtomicUsize>);

impl Drop for Writing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl CrashStore {
    /// Bundles kept in `dir` within the default bounds.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_bounds(dir, MAX_CRASHES, MAX_CRASH_BYTES)
    }

    /// Bundles kept in `dir`, at most `max_count` of them and `max_bytes` in all.
    pub fn with_bounds(dir: impl Into<PathBuf>, max_count: usize, max_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_count,
            max_bytes,
            index: Arc::default(),
            writing: Arc::default(),
        }
    }

    /// A slot to write a bundle in, unless [`MAX_WRITING`] are being written.
    fn writing(&self) -> Option<Writing> {
        let before = self.writing.fetch_add(1, Ordering::AcqRel);
        let slot = Writing(Arc::clone(&self.writing));
        (before < MAX_WRITING).then_some(slot)
    }

    fn io(&self, source: io::Error) -> CrashError {
        CrashError::Io {
            dir: self.dir.clone(),
            source,
        }
    }

    fn modules(&self) -> PathBuf {
        self.dir.join("modules")
    }

    fn file(&self, id: &str) -> Result<PathBuf, CrashError> {
        check_id(id)?;
        Ok(self.dir.join(format!("{id}.{EXT}")))
    }

    /// The kept copy of the module with BLAKE3 `hash`, if there is one.
    pub fn module(&self, hash: &str) -> Option<Vec<u8>> {
        if hash.is_empty() || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        files::read_bounded(
            &self.modules().join(hash),
            crate::capsule::inspect::MAX_MODULE_BYTES,
        )
        .ok()
    }

    /// Writes `bundle` (and `module`, the crashed module's bytes, unless a copy is kept
    /// already), then removes the oldest bundles past the bounds.
    ///
    /// # Errors
    ///
    /// Any I/O error.
    pub fn save(&self, bundle: &CrashBundle, module: Option<&[u8]>) -> Result<(), CrashError> {
        let mut index = self.index().map_err(|e| self.io(e))?;
        create_private_dir(&self.modules()).map_err(|e| self.io(e))?;
        if let Some(bytes) = module
            && !index.modules.contains_key(&bundle.module.hash)
        {
            let copy = self.modules().join(&bundle.module.hash);
            files::write_private_unsynced(&copy, bytes).map_err(|e| self.io(e))?;
            index
                .modules
                .insert(bundle.module.hash.clone(), bytes.len() as u64);
        }
        let encoded = encode(bundle).map_err(|e| self.io(e))?;
        files::write_private_unsynced(&self.file(&bundle.id)?, &encoded).map_err(|e| self.io(e))?;
        index.bundles.push(Indexed {
            id: bundle.id.clone(),
            size: encoded.len() as u64,
            module: bundle.module.hash.clone(),
        });
        index.bundles.sort_by(|a, b| a.id.cmp(&b.id));
        self.prune(&mut index).map_err(|e| self.io(e))
    }

    /// Every bundle's summary, oldest first (a damaged file is skipped, and logged).
    ///
    /// # Errors
    ///
    /// When the folder cannot be read.
    pub fn list(&self) -> Result<Vec<CrashSummary>, CrashError> {
        let mut summaries = Vec::new();
        for (id, path) in self.ids().map_err(|e| self.io(e))? {
            match read_summary(&path) {
                Ok(summary) => summaries.push(summary),
                Err(e) => tracing::warn!(crash = %id, "unreadable crash bundle: {e}"),
            }
        }
        Ok(summaries)
    }

    /// The bundle `id`.
    ///
    /// # Errors
    ///
    /// [`CrashError::NotFound`], [`CrashError::BadId`], [`CrashError::Damaged`].
    pub fn get(&self, id: &str) -> Result<CrashBundle, CrashError> {
        let path = self.file(id)?;
        let bytes = match files::read_bounded(&path, MAX_BUNDLE) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CrashError::NotFound(id.to_owned()));
            }
            Err(e) => return Err(self.io(e)),
        };
        let damaged = |why: String| CrashError::Damaged {
            id: id.to_owned(),
            why,
        };
        let body = split(&bytes).map_err(|e| damaged(e.to_string()))?.1;
        rmp_serde::from_slice(body).map_err(|e| damaged(e.to_string()))
    }

    /// Removes bundle `id`, or every bundle when `id` is `None`; then the module copies
    /// no bundle names. Answers the ids removed.
    ///
    /// # Errors
    ///
    /// [`CrashError::NotFound`] for an id that is not there.
    pub fn remove(&self, id: Option<&str>) -> Result<Vec<String>, CrashError> {
        let mut index = self.index().map_err(|e| self.io(e))?;
        let removed = if let Some(id) = id {
            let path = self.file(id)?;
            match std::fs::remove_file(&path) {
                Ok(()) => vec![id.to_owned()],
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(CrashError::NotFound(id.to_owned()));
                }
                Err(e) => return Err(self.io(e)),
            }
        } else {
            let mut removed = Vec::new();
            for (id, path) in self.ids().map_err(|e| self.io(e))? {
                files::remove_if_exists(&path).map_err(|e| self.io(e))?;
                removed.push(id);
            }
            removed
        };
        index.bundles.retain(|b| !removed.contains(&b.id));
        self.prune(&mut index).map_err(|e| self.io(e))?;
        Ok(removed)
    }

    /// Whether a copy of the module with hash `hash` is kept.
    pub fn has_module(&self, hash: &str) -> bool {
        self.index()
            .is_ok_and(|index| index.modules.contains_key(hash))
    }

    /// The index of the folder, read from it the first time.
    fn index(&self) -> io::Result<MutexGuard<'_, Index>> {
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        if !index.loaded {
            let mut bundles = Vec::new();
            for (id, path) in self.ids()? {
                // A damaged file counts with its size, and goes as the oldest do.
                let (size, module) = match read_summary(&path) {
                    Ok(summary) => (summary.size, summary.module_hash),
                    Err(_) => (
                        std::fs::metadata(&path).map_or(0, |m| m.len()),
                        String::new(),
                    ),
                };
                bundles.push(Indexed { id, size, module });
            }
            index.bundles = bundles;
            index.modules = self.module_files()?.into_iter().collect();
            index.loaded = true;
        }
        Ok(index)
    }

    /// Bundle ids and files, oldest first (ids begin with their time).
    fn ids(&self) -> io::Result<Vec<(String, PathBuf)>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut ids: Vec<(String, PathBuf)> = entries
            .filter_map(|e| {
                let path = e.ok()?.path();
                let id = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".crash")?
                    .to_owned();
                check_id(&id).ok()?;
                Some((id, path))
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Removes the oldest bundles past the bounds, then unreferenced module copies.
    fn prune(&self, index: &mut Index) -> io::Result<()> {
        loop {
            let bytes = index.bundles.iter().map(|b| b.size).sum::<u64>()
                + index
                    .modules
                    .iter()
                    .filter(|(hash, _)| index.bundles.iter().any(|b| &b.module == *hash))
                    .map(|(_, size)| size)
                    .sum::<u64>();
            let over = index.bundles.len() > self.max_count || bytes > self.max_bytes;
            if index.bundles.is_empty() || !over {
                break;
            }
            let oldest = index.bundles.remove(0);
            files::remove_if_exists(
                &self
                    .file(&oldest.id)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
            )?;
            tracing::debug!(crash = %oldest.id, "oldest crash bundle removed (bound)");
        }
        let unused: Vec<String> = index
            .modules
            .keys()
            .filter(|hash| !index.bundles.iter().any(|b| &b.module == *hash))
            .cloned()
            .collect();
        for hash in unused {
            files::remove_if_exists(&self.modules().join(&hash))?;
            index.modules.remove(&hash);
        }
        Ok(())
    }

    /// The module copies and their sizes.
    fn module_files(&self) -> io::Result<Vec<(String, u64)>> {
        let entries = match std::fs::read_dir(self.modules()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(entries
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().to_str()?.to_owned();
                Some((name, e.metadata().ok()?.len()))
            })
            .collect())
    }
}

/// Where one capsule's crashes go, and which module it runs.
#[derive(Debug, Clone)]
pub struct CrashSink {
    /// The folder.
    pub store: CrashStore,
    /// The module file.
    pub module_path: PathBuf,
    /// BLAKE3 of its bytes when the capsule loaded (hex).
    pub module_hash: String,
}

/// What ended an incarnation, as the runner or the actor saw it.
#[derive(Debug, Default)]
pub struct Crashed {
    /// How.
    pub kind: Option<CrashKind>,
    /// Why, in words.
    pub message: String,
    /// The trap's WebAssembly backtrace.
    pub backtrace: Vec<String>,
    /// The incarnation's calls, the failed one last.
    pub calls: Vec<RecordedCall>,
    /// Earlier calls not kept.
    pub calls_dropped: u64,
}

impl CrashSink {
    /// Keeps a bundle of `crashed`, a crash of capsule `capsule` running under `limits`,
    /// with a copy of the module if its file still has the hash it loaded with. A failure
    /// is logged: the crash itself was handled already.
    pub fn keep(&self, capsule: &str, limits: CrashLimits, crashed: Crashed) {
        let Some(_slot) = self.store.writing() else {
            tracing::warn!(
                %capsule,
                "crash bundle not kept: {MAX_WRITING} are being written (a crash storm)"
            );
            return;
        };
        let time_ms = crate::clock::unix_millis();
        // Read (and checked) only when no copy is kept yet.
        let kept = self.store.has_module(&self.module_hash);
        let module = (!kept)
            .then(|| {
                files::read_bounded(&self.module_path, crate::capsule::inspect::MAX_MODULE_BYTES)
                    .ok()
            })
            .flatten()
            .filter(|bytes| blake3::hash(bytes).to_hex().as_str() == self.module_hash);
        let last = crashed.calls.last().and_then(|c| c.end.as_ref());
        let in_call = !crashed.calls.is_empty()
            && !matches!(crashed.kind, Some(CrashKind::Injected | CrashKind::Start));
        let kind = crashed
            .kind
            .or_else(|| last.and_then(|end| end.failure))
            .unwrap_or(CrashKind::Garbage);
        let bundle = CrashBundle {
            id: new_id(time_ms, capsule),
            time_ms,
            capsule: capsule.to_owned(),
            module: CrashModule {
                path: self.module_path.display().to_string(),
                hash: self.module_hash.clone(),
                kept: kept || module.is_some(),
            },
            limits,
            kind,
            message: crashed.message,
            backtrace: crashed.backtrace,
            fuel_used: in_call.then(|| last.map(|end| end.fuel_used)).flatten(),
            in_call,
            calls: if in_call { crashed.calls } else { Vec::new() },
            calls_dropped: crashed.calls_dropped,
        };
        match self.store.save(&bundle, module.as_deref()) {
            Ok(()) => tracing::debug!(%capsule, crash = %bundle.id, "crash bundle kept"),
            Err(e) => tracing::error!(%capsule, "cannot keep a crash bundle: {e}"),
        }
    }
}

/// A new bundle id: the time in milliseconds (so ids sort by age), the capsule, and a
/// random suffix.
pub fn new_id(time_ms: u64, capsule: &str) -> String {
    let mut random = [0u8; 3];
    let _ = getrandom::fill(&mut random);
    let [a, b, c] = random;
    format!("{time_ms:013}-{capsule}-{a:02x}{b:02x}{c:02x}")
}

/// An id names a file of the folder: lowercase letters, digits, `-` and `_` only.
fn check_id(id: &str) -> Result<(), CrashError> {
    let fine = !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if fine {
        Ok(())
    } else {
        Err(CrashError::BadId(id.chars().take(MAX_ID).collect()))
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

fn encode(bundle: &CrashBundle) -> io::Result<Vec<u8>> {
    let body = rmp_serde::to_vec_named(bundle).map_err(|e| invalid(e.to_string()))?;
    let mut summary = CrashSummary {
        id: bundle.id.clone(),
        time_ms: bundle.time_ms,
        capsule: bundle.capsule.clone(),
        kind: bundle.kind,
        message: bundle.message.clone(),
        calls: bundle.calls.len() as u64,
        module_hash: bundle.module.hash.clone(),
        size: 0,
    };
    // The size it will have: the summary's own length barely depends on it.
    let head = rmp_serde::to_vec_named(&summary).map_err(|e| invalid(e.to_string()))?;
    summary.size = (MAGIC.len() + 4 + head.len() + 8 + body.len()) as u64;
    let head = rmp_serde::to_vec_named(&summary).map_err(|e| invalid(e.to_string()))?;
    let len = u32::try_from(head.len()).map_err(|_| invalid("summary too large"))?;
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + head.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The summary and the bundle's bytes of a file's content.
fn split(bytes: &[u8]) -> io::Result<(&[u8], &[u8])> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| invalid("not a crash bundle"))?;
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| invalid("truncated"))?;
    let len = u32::from_be_bytes(*len);
    if len > MAX_SUMMARY || len as usize > rest.len() {
        return Err(invalid("bad summary length"));
    }
    Ok(rest.split_at(len as usize))
}

/// Reads only a bundle file's summary.
fn read_summary(path: &Path) -> io::Result<CrashSummary> {
    let mut file = std::fs::File::open(path)?;
    let mut head = [0u8; 12];
    file.read_exact(&mut head)?;
    let (magic, len) = head.split_at(8);
    if magic != MAGIC {
        return Err(invalid("not a crash bundle"));
    }
    let len = u32::from_be_bytes(len.try_into().map_err(|_| invalid("truncated"))?);
    if len > MAX_SUMMARY {
        return Err(invalid("bad summary length"));
    }
    let mut summary = vec![0; len as usize];
    file.read_exact(&mut summary)?;
    let mut summary: CrashSummary =
        rmp_serde::from_slice(&summary).map_err(|e| invalid(e.to_string()))?;
    summary.size = file.metadata()?.len();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn bundle(id: &str, module: &str, calls_bytes: usize) -> CrashBundle {
        CrashBundle {
            id: id.into(),
            time_ms: 1,
            capsule: "c".into(),
            module: CrashModule {
                path: "/m.wat".into(),
                hash: module.into(),
                kept: true,
            },
            limits: CrashLimits {
                fuel: 1,
                memory_pages: 1,
                call_timeout_ms: 1,
            },
            kind: CrashKind::Trap,
            message: "unreachable".into(),
            backtrace: vec!["<module>!f @ 0x10".into()],
            fuel_used: Some(5),
            in_call: true,
            calls: vec![crate::protocol::RecordedCall {
                entry: crate::protocol::CallEntry::Command,
                input: vec![7; calls_bytes],
                input_len: calls_bytes as u64,
                host_calls: Vec::new(),
                host_calls_dropped: 0,
                end: None,
            }],
            calls_dropped: 0,
        }
    }

    #[test]
    fn a_bundle_is_written_privately_listed_read_and_removed() {
        let home = tempfile::tempdir().unwrap();
        let store = CrashStore::new(home.path().join("crashes"));
        assert!(store.list().unwrap().is_empty(), "no folder yet");
        let b = bundle("0000000000001-c-aaaaaa", "ab12", 10);
        store.save(&b, Some(b"(module)")).unwrap();
        let file = home.path().join("crashes/0000000000001-c-aaaaaa.crash");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let list = store.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].message, "unreachable");
        assert_eq!(list[0].size, std::fs::metadata(&file).unwrap().len());
        assert_eq!(store.get(&b.id).unwrap(), b);
        assert_eq!(store.module("ab12").unwrap(), b"(module)");

        assert!(matches!(store.get("nope"), Err(CrashError::NotFound(_))));
        assert!(matches!(store.get("../x"), Err(CrashError::BadId(_))));
        assert!(matches!(
            store.remove(Some("nope")),
            Err(CrashError::NotFound(_))
        ));
        assert_eq!(
            store.remove(Some(&b.id)).unwrap(),
            std::slice::from_ref(&b.id)
        );
        assert!(
            store.module("ab12").is_none(),
            "no bundle names it any more"
        );
    }

    #[test]
    fn past_the_count_the_oldest_bundles_go_first() {
        let home = tempfile::tempdir().unwrap();
        let store = CrashStore::with_bounds(home.path(), 3, u64::MAX);
        for i in 0..5 {
            let module = if i < 2 { "aa" } else { "bb" };
            store
                .save(
                    &bundle(&format!("000000000000{i}-c-x"), module, 1),
                    Some(b"m"),
                )
                .unwrap();
        }
        let ids: Vec<String> = store.list().unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(
            ids,
            [
                "0000000000002-c-x",
                "0000000000003-c-x",
                "0000000000004-c-x"
            ]
        );
        assert!(store.module("aa").is_none(), "its bundles are gone");
        assert!(store.module("bb").is_some());
        assert_eq!(store.remove(None).unwrap().len(), 3);
        assert!(store.list().unwrap().is_empty());
        assert!(store.module("bb").is_none());
    }

    #[test]
    fn past_the_size_the_oldest_bundles_go_first() {
        let home = tempfile::tempdir().unwrap();
        // Room for two bundles of ~10 KB and the module, not three.
        let store = CrashStore::with_bounds(home.path(), 100, 25_000);
        for i in 0..4 {
            store
                .save(
                    &bundle(&format!("000000000000{i}-c-x"), "aa", 10_000),
                    Some(&[0; 1000]),
                )
                .unwrap();
        }
        let list = store.list().unwrap();
        assert_eq!(list.len(), 2, "{list:?}");
        assert_eq!(list[0].id, "0000000000002-c-x");
        let total: u64 = list.iter().map(|s| s.size).sum::<u64>() + 1000;
        assert!(total <= 25_000, "{total}");
    }

    #[test]
    fn damaged_files_are_skipped_by_the_listing_and_refused_by_get() {
        let home = tempfile::tempdir().unwrap();
        let store = CrashStore::new(home.path());
        std::fs::write(home.path().join("0000000000001-c-x.crash"), b"junk").unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(matches!(
            store.get("0000000000001-c-x"),
            Err(CrashError::Damaged { .. })
        ));
    }

    #[test]
    fn at_most_a_few_bundles_are_written_at_once() {
        let store = CrashStore::new("/nonexistent");
        let slots: Vec<_> = (0..MAX_WRITING).map(|_| store.writing().unwrap()).collect();
        assert!(store.writing().is_none(), "the next crash is not kept");
        drop(slots);
        assert!(store.writing().is_some());
    }

    #[test]
    fn ids_sort_by_time_and_are_file_names() {
        let a = new_id(5, "trap");
        let b = new_id(40, "trap");
        assert!(a < b, "{a} {b}");
        check_id(&a).unwrap();
        assert!(a.starts_with("0000000000005-trap-"), "{a}");
    }
}
