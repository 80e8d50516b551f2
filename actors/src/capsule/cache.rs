//! The on-disk cache of compiled capsule modules, so that a daemon restart (or a reload of
//! an unchanged module) does not run Cranelift again.
//!
//! An entry is keyed by everything the compiled artifact depends on: the module's bytes,
//! the limits compiled into it (fuel; memory for good measure), the ABI version, the
//! WebAssembly features enabled and the wasmer version. The module is checked against the
//! host's limits (`inspect.rs`) before the cache is looked at. It holds a magic, the BLAKE3 hash of the artifact, and the artifact
//! (wasmer's serialized module). An entry is never trusted as found: one that is short,
//! has another magic, does not match its hash, or that wasmer refuses, is recompiled and
//! written again. Entries are written privately and atomically (`files::write_private`).
//! Each load touches its entry, and entries no daemon of the home loaded for 30 days are
//! removed whenever capsules are scanned ([`CompileCache::prune`]), so the cache does not
//! keep every module that ever passed through.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use wasmer::Module;

use super::sandbox::{self, ABI_VERSION, Compiled, LoadError};
use crate::capsule::Limits;

/// Entries no daemon of the home has loaded for this long are removed (see
/// [`CompileCache::prune`]).
pub const UNUSED_FOR: Duration = Duration::from_hours(30 * 24);

/// wasmer as pinned in the workspace's `Cargo.toml` (an artifact is specific to it).
const WASMER_VERSION: &str = "7.4.2";

/// Marks an entry as used now (see [`CompileCache::prune`]); a failure only makes it look
/// older.
fn touch(path: &Path) {
    let _ = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
}

/// Leads every entry.
const MAGIC: &[u8; 8] = b"ASTRIDC1";

/// Where compiled modules are kept.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

/// How a module was obtained, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Read from the cache.
    Cached,
    /// Compiled (no entry, or a bad one), then cached.
    Compiled,
}

impl CompileCache {
    /// A cache in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn entry(&self, bytes: &[u8], limits: Limits) -> PathBuf {
        let mut key = blake3::Hasher::new();
        key.update(format!("abi {ABI_VERSION} wasmer {WASMER_VERSION} ").as_bytes());
        key.update(format!("{:?} ", sandbox::features()).as_bytes());
        key.update(format!("fuel {} pages {} ", limits.fuel, limits.memory_pages).as_bytes());
        key.update(bytes);
        self.dir.join(format!("{}.bin", key.finalize().to_hex()))
    }

    /// Removes the entries not loaded for `unused_for` (their modules changed, were removed,
    /// or belong to workspaces no longer used): every load touches its entry, so the cache
    /// holds what daemons of the home have loaded lately, however many modules came and
    /// went. Returns how many were removed.
    pub fn prune(&self, unused_for: Duration) -> usize {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in dir.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "bin") {
                continue;
            }
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| now.duration_since(at).unwrap_or_default() > unused_for);
            if stale && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                "compile cache entries unused for {unused_for:?} removed"
            );
        }
        removed
    }

    /// The module compiled from `bytes` under `limits`: from the cache when a sound entry
    /// is there, else compiled and stored (a failure to store is logged, not fatal).
    ///
    /// # Errors
    ///
    /// As [`sandbox::compile`].
    pub fn load(&self, bytes: &[u8], limits: Limits) -> Result<(Compiled, Source), LoadError> {
        // Checked whether cached or not: the limits may have changed since it was cached.
        let wasm = sandbox::binary(bytes, limits)?;
        let path = self.entry(bytes, limits);
        match std::fs::read(&path) {
            Ok(entry) => match revive(&entry, limits) {
                Ok(compiled) => {
                    touch(&path);
                    return Ok((compiled, Source::Cached));
                }
                Err(reason) => tracing::warn!(
                    entry = %path.display(),
                    "compile cache entry unusable ({reason}); recompiling"
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(entry = %path.display(), "compile cache unreadable: {e}"),
        }
        let compiled = sandbox::compile_binary(&wasm, limits)?;
        if let Err(e) = self.store(&path, compiled.module()) {
            tracing::warn!(entry = %path.display(), "cannot write the compile cache: {e}");
        }
        Ok((compiled, Source::Compiled))
    }

    fn store(&self, path: &Path, module: &Module) -> Result<(), String> {
        let artifact = module.serialize().map_err(|e| e.to_string())?;
        let mut entry = Vec::with_capacity(MAGIC.len() + 32 + artifact.len());
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(blake3::hash(&artifact).as_bytes());
        entry.extend_from_slice(&artifact);
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        crate::files::write_private(path, &entry).map_err(|e| e.to_string())
    }
}

/// The module in a cache entry, if the entry is sound.
fn revive(entry: &[u8], limits: Limits) -> Result<Compiled, String> {
    let (magic, rest) = entry.split_at_checked(MAGIC.len()).ok_or("too short")?;
    let (hash, artifact) = rest.split_at_checked(32).ok_or("too short")?;
    if magic != MAGIC {
        return Err("not a cache entry".into());
    }
    if blake3::hash(artifact).as_bytes() != hash {
        return Err("its checksum does not match".into());
    }
    let engine = sandbox::engine(limits);
    // SAFETY: wasmer requires the bytes to be an artifact made by `Module::serialize`
    // of this wasmer version. The entry is keyed by that version, lives in the daemon's
    // private (0700) state directory, was written atomically by `store` below from
    // `serialize`'s output, and its BLAKE3 checksum was verified just above; wasmer's
    // (checked) deserialization validates the archive's structure as well.
    #[allow(unsafe_code)]
    let module = unsafe { Module::deserialize(&engine, artifact.to_vec()) }
        .map_err(|e| format!("wasmer refused it: {e}"))?;
    sandbox::check_abi(&module).map_err(|e| e.to_string())?;
    Ok(Compiled::from_parts(engine, module, limits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capsule::Host;
    use crate::capsule::sandbox::{Entry, Sandbox};

    const ECHO: &str = include_str!("../../../examples/capsules/echo/echo.wat");

    fn entries(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    }

    fn works(compiled: &Compiled) {
        let mut sandbox = Sandbox::new(compiled, Host::detached("echo")).unwrap();
        assert_eq!(
            sandbox.call(Entry::Command, b"\x91\x01").unwrap(),
            b"\x91\x01"
        );
    }

    #[test]
    fn a_second_load_comes_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path().join("cache"));
        let (first, source) = cache.load(ECHO.as_bytes(), Limits::default()).unwrap();
        assert_eq!(source, Source::Compiled);
        works(&first);
        let (second, source) = cache.load(ECHO.as_bytes(), Limits::default()).unwrap();
        assert_eq!(source, Source::Cached);
        works(&second);
        // Other limits are another entry.
        let limits = Limits {
            fuel: 5_000,
            ..Limits::default()
        };
        let (_, source) = cache.load(ECHO.as_bytes(), limits).unwrap();
        assert_eq!(source, Source::Compiled);
        assert_eq!(entries(&dir.path().join("cache")).len(), 2);
    }

    #[test]
    fn a_corrupt_entry_is_recompiled_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path());
        cache.load(ECHO.as_bytes(), Limits::default()).unwrap();
        let entry = entries(dir.path()).pop().unwrap();
        let good = std::fs::read(&entry).unwrap();
        let mut flipped = good.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x55;
        let mut forged = good.clone();
        // A consistent checksum over a damaged artifact: wasmer's own check refuses it.
        forged.truncate(forged.len() - 100);
        let hash = blake3::hash(&forged[40..]);
        forged[8..40].copy_from_slice(hash.as_bytes());
        for bad in [
            flipped,
            good[..20].to_vec(),
            b"not an entry at all...".to_vec(),
            forged,
        ] {
            std::fs::write(&entry, &bad).unwrap();
            let (compiled, source) = cache.load(ECHO.as_bytes(), Limits::default()).unwrap();
            assert_eq!(source, Source::Compiled);
            works(&compiled);
            let (_, source) = cache.load(ECHO.as_bytes(), Limits::default()).unwrap();
            assert_eq!(source, Source::Cached, "the entry was rewritten");
        }
    }

    #[test]
    fn entries_not_loaded_lately_are_pruned_and_a_load_keeps_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path());
        cache.load(ECHO.as_bytes(), Limits::default()).unwrap();
        let other = Limits {
            fuel: 5_000,
            ..Limits::default()
        };
        cache.load(ECHO.as_bytes(), other).unwrap();
        let old = SystemTime::now() - Duration::from_hours(31 * 24);
        for entry in entries(dir.path()) {
            let file = std::fs::File::options().write(true).open(&entry).unwrap();
            file.set_modified(old).unwrap();
        }
        // Loaded again: touched, so kept; the other is gone.
        let (_, source) = cache.load(ECHO.as_bytes(), Limits::default()).unwrap();
        assert_eq!(source, Source::Cached);
        assert_eq!(cache.prune(UNUSED_FOR), 1);
        assert_eq!(entries(dir.path()).len(), 1);
        let (_, source) = cache.load(ECHO.as_bytes(), Limits::default()).unwrap();
        assert_eq!(source, Source::Cached);
        assert_eq!(cache.prune(UNUSED_FOR), 0);
        // A missing folder is an empty cache.
        assert_eq!(
            CompileCache::new(dir.path().join("none")).prune(UNUSED_FOR),
            0
        );
    }
}
