//! Installing capsules into the home, and noticing when an installed one changes.
//!
//! `InspectCapsule` validates a folder as the registry would load it (its manifest, and its
//! module compiled, which also fills the compile cache) and shows what it brings, with the
//! difference in grants from the installed capsule of that name. `InstallCapsule` checks that
//! the folder still has the digest the user confirmed, copies it into
//! `<home>/capsules/<name>` (into a temporary folder first, then renamed over the old one),
//! and records every file's hash in `<home>/installed.toml`. At every scan, an installed
//! capsule whose folder no longer matches its record is `untrusted` (as a changed workspace
//! is) until it is installed again (`astrid install` of the folder itself accepts it as it
//! is). Capsules copied into the home by hand have no record and run as before.
//!
//! A folder to install may hold only regular files and folders (no links), within the
//! bounds of a trusted configuration (`trust/snapshot.rs`). A `.tar.gz` of one is unpacked
//! first, safely (`archive.rs`), and installed as that folder would be.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use actix::fut::ActorFutureExt;
use actix::{Context, Handler, ResponseActFuture};
use serde::{Deserialize, Serialize};

use super::archive;
use super::manifest::{self, Manifest};
use super::messages::{InspectCapsule, InstallCapsule, UninstallCapsule};
use super::{CapsulesActor, ReloadCapsules};
use crate::capsule::CapsuleError;
use crate::files;
use crate::protocol::{InstallPlan, InstallReport, Removed};
use crate::trust::snapshot::{Snapshot, describe_changes, snapshot};

/// The record of installed capsules, `<home>/installed.toml`.
#[derive(Debug, Clone)]
pub struct InstalledStore {
    file: PathBuf,
    /// `<home>/capsules`.
    capsules: PathBuf,
}

/// One installed capsule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Installed {
    /// Capsule name (its folder under `<home>/capsules`).
    pub name: String,
    /// Its version when installed.
    pub version: String,
    /// Every entry of its folder then (see `trust/snapshot.rs`).
    pub files: Snapshot,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordFile {
    #[serde(default)]
    capsule: Vec<Installed>,
}

impl InstalledStore {
    /// The record of the home at `home`.
    pub fn new(home: &Path) -> Self {
        Self {
            file: home.join("installed.toml"),
            capsules: home.join("capsules"),
        }
    }

    /// Every installed capsule.
    ///
    /// # Errors
    ///
    /// When the record cannot be read or parsed.
    pub fn load(&self) -> io::Result<Vec<Installed>> {
        let bytes = match files::read_bounded(&self.file, 64 << 20) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let text =
            String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let record: RecordFile = toml::from_str(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", self.file.display()),
            )
        })?;
        Ok(record.capsule)
    }

    fn save(&self, all: Vec<Installed>) -> io::Result<()> {
        let text = toml::to_string(&RecordFile { capsule: all }).map_err(io::Error::other)?;
        files::write_private(&self.file, text.as_bytes())?;
        files::sync_dir(self.file.parent().unwrap_or(Path::new(".")))
    }

    /// Why the installed capsule in `dir` may not run, if it changed since it was installed.
    pub fn changed(&self, records: &[Installed], name: &str, dir: &Path) -> Option<String> {
        if dir != self.capsules.join(name) {
            return None;
        }
        let record = records.iter().find(|r| r.name == name)?;
        let now = match snapshot(dir, None) {
            Ok(now) => now,
            Err(e) => return Some(format!("its folder cannot be read whole ({e})")),
        };
        let changes = describe_changes(&record.files, &now)?;
        Some(format!(
            "capsule `{name}` changed since it was installed ({changes}); check it, then run \
             `astrid install {}` to accept it as it is",
            dir.display()
        ))
    }
}

/// What a folder holds and brings.
struct Checked {
    dir: PathBuf,
    manifest: Manifest,
    files: Snapshot,
    digest: String,
}

fn bad(path: &Path, reason: impl Into<String>) -> CapsuleError {
    CapsuleError::BadInstall {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

impl CapsulesActor {
    /// Validates the folder at `path`: an absolute path to a capsule folder holding only
    /// files and folders, with a valid manifest and a module that compiles.
    fn check_folder(&self, path: &str) -> Result<Checked, CapsuleError> {
        let given = Path::new(path);
        if !given.is_absolute() {
            return Err(bad(given, "the path must be absolute"));
        }
        let dir = given
            .canonicalize()
            .map_err(|e| bad(given, format!("cannot open it: {e}")))?;
        let manifest = manifest::load(&dir).map_err(|e| bad(&dir, e.to_string()))?;
        let files = snapshot(&dir, None).map_err(|e| bad(&dir, e.to_string()))?;
        if let Some((link, _)) = files.iter().find(|(_, kind)| kind.starts_with("link:")) {
            return Err(bad(
                &dir,
                format!(
                    "`{link}` is a symbolic link; a capsule to install holds only files and folders"
                ),
            ));
        }
        let module = dir.join(&manifest.module);
        let bytes = files::read_bounded(&module, crate::capsule::inspect::MAX_MODULE_BYTES)
            .map_err(|e| bad(&module, e.to_string()))?;
        self.deps
            .cache
            .load(&bytes, manifest.limits)
            .map_err(|e| bad(&module, e.to_string()))?;
        let mut hasher = blake3::Hasher::new();
        for (name, kind) in &files {
            hasher.update(name.as_bytes());
            hasher.update(b"\0");
            hasher.update(kind.as_bytes());
            hasher.update(b"\n");
        }
        let digest = hasher.finalize().to_hex().to_string();
        Ok(Checked {
            dir,
            manifest,
            files,
            digest,
        })
    }

    fn plan_for(&self, checked: &Checked) -> InstallPlan {
        let m = &checked.manifest;
        let installed = self
            .discovered
            .iter()
            .find(|d| {
                d.name == m.package.name && d.dir == self.deps.installed.capsules.join(&d.name)
            })
            .and_then(|d| d.manifest.as_ref().ok());
        let old: Vec<String> = installed
            .map(|i| i.capabilities.clone())
            .unwrap_or_default();
        InstallPlan {
            path: checked.dir.display().to_string(),
            name: m.package.name.clone(),
            version: m.package.version.clone(),
            description: m.package.description.clone(),
            commands: m.commands.iter().map(|c| c.name.clone()).collect(),
            grants: m.capabilities.clone(),
            settings: super::settings::listing(m, &BTreeMap::new()),
            installed_version: installed.map(|i| i.package.version.clone()),
            added_grants: m
                .capabilities
                .iter()
                .filter(|g| !old.contains(g))
                .cloned()
                .collect(),
            removed_grants: old
                .iter()
                .filter(|g| !m.capabilities.contains(g))
                .cloned()
                .collect(),
            digest: checked.digest.clone(),
        }
    }
}

/// Copies the files and folders of `from` (checked to hold no links) into `to`.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)?;
            fs::File::open(&target)?.sync_all()?;
        } else {
            return Err(io::Error::other(format!(
                "{} is neither a file nor a folder",
                entry.path().display()
            )));
        }
    }
    files::sync_dir(to)
}

/// Puts a copy of `from` at `dest`, replacing what is there: copied next to it first,
/// checked to be exactly `expected` (the folder may change while it is copied), then renamed
/// into place.
fn put_in_place(from: &Path, expected: &Snapshot, dest: &Path) -> io::Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fresh = parent.join(format!(".installing-{name}-{}", std::process::id()));
    let old = parent.join(format!(".replaced-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&fresh);
    let copied = copy_tree(from, &fresh).and_then(|()| match snapshot(&fresh, None) {
        Ok(got) if got == *expected => Ok(()),
        Ok(_) => Err(io::Error::other(
            "it changed while it was copied; inspect it again and confirm what it is now",
        )),
        Err(e) => Err(io::Error::other(e.to_string())),
    });
    if let Err(e) = copied {
        let _ = fs::remove_dir_all(&fresh);
        return Err(e);
    }
    let had_old = match fs::rename(dest, &old) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            let _ = fs::remove_dir_all(&fresh);
            return Err(e);
        }
    };
    if let Err(e) = fs::rename(&fresh, dest) {
        if had_old {
            let _ = fs::rename(&old, dest);
        }
        let _ = fs::remove_dir_all(&fresh);
        return Err(e);
    }
    files::sync_dir(parent)?;
    if had_old {
        fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// What is installed from: the folder given, or an archive unpacked into a folder beside the
/// home's capsules (removed when this is dropped).
struct Source {
    given: PathBuf,
    unpacked: Option<PathBuf>,
    dir: PathBuf,
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Some(unpacked) = &self.unpacked {
            let _ = fs::remove_dir_all(unpacked);
        }
    }
}

impl Source {
    /// `error` about the unpacked folder, told about the archive instead.
    fn blame(&self, error: CapsuleError) -> CapsuleError {
        match (&self.unpacked, error) {
            (Some(unpacked), CapsuleError::BadInstall { reason, .. }) => {
                let inside = format!("{}:", self.given.display());
                bad(
                    &self.given,
                    reason.replace(&unpacked.display().to_string(), &inside),
                )
            }
            (_, error) => error,
        }
    }
}

impl CapsulesActor {
    /// The folder to install from `path`: a `.tar.gz` or `.tgz` file is unpacked first
    /// (see `archive.rs`).
    fn source(&self, path: &str) -> Result<Source, CapsuleError> {
        static UNPACKED: AtomicU64 = AtomicU64::new(0);
        let given = PathBuf::from(path);
        if !(archive::is_archive(&given) && given.is_file()) {
            return Ok(Source {
                dir: given.clone(),
                given,
                unpacked: None,
            });
        }
        if !given.is_absolute() {
            return Err(bad(&given, "the path must be absolute"));
        }
        let capsules = &self.deps.installed.capsules;
        fs::create_dir_all(capsules).map_err(|e| bad(capsules, e.to_string()))?;
        let n = UNPACKED.fetch_add(1, Ordering::Relaxed);
        let into = capsules.join(format!(".unpacking-{}-{n}", std::process::id()));
        let mut source = Source {
            given,
            unpacked: Some(into.clone()),
            dir: into.clone(),
        };
        source.dir =
            archive::unpack(&source.given, &into).map_err(|e| bad(&source.given, e.to_string()))?;
        Ok(source)
    }

    /// Checks what `path` holds (a folder, or an archive of one).
    fn check(&self, path: &str) -> Result<(Source, Checked), CapsuleError> {
        let source = self.source(path)?;
        let dir = source.dir.display().to_string();
        let checked = self.check_folder(&dir).map_err(|e| source.blame(e))?;
        Ok((source, checked))
    }
}

impl Handler<InspectCapsule> for CapsulesActor {
    type Result = Result<InstallPlan, CapsuleError>;

    fn handle(&mut self, msg: InspectCapsule, _: &mut Context<Self>) -> Self::Result {
        let (source, checked) = self.check(&msg.path)?;
        let mut plan = self.plan_for(&checked);
        if source.unpacked.is_some() {
            plan.path = source.given.display().to_string();
        }
        Ok(plan)
    }
}

impl CapsulesActor {
    /// Copies the checked folder (or archive) at `path` into the home and records it.
    fn install(&mut self, path: &str, digest: &str) -> Result<InstallReport, CapsuleError> {
        let (source, checked) = self.check(path)?;
        if checked.digest != digest {
            return Err(bad(
                &source.given,
                "it changed since it was inspected; inspect it again and confirm what it is now",
            ));
        }
        let plan = self.plan_for(&checked);
        let store = self.deps.installed.clone();
        let dest = store.capsules.join(&plan.name);
        if checked.dir != dest {
            put_in_place(&checked.dir, &checked.files, &dest)
                .map_err(|e| bad(&source.given, e.to_string()))?;
        }
        let files = checked.files;
        let record = |e: io::Error| bad(&store.file, e.to_string());
        let mut all = store.load().map_err(record)?;
        all.retain(|r| r.name != plan.name);
        all.push(Installed {
            name: plan.name.clone(),
            version: plan.version.clone(),
            files,
        });
        store.save(all).map_err(record)?;
        tracing::info!(capsule = %plan.name, version = %plan.version, "capsule installed");
        Ok(InstallReport {
            name: plan.name,
            version: plan.version,
            path: dest.display().to_string(),
            replaced: plan.installed_version,
        })
    }

    /// Removes the installed capsule `name` and its record.
    fn uninstall(&mut self, name: String) -> Result<Removed, CapsuleError> {
        let store = self.deps.installed.clone();
        let dest = store.capsules.join(&name);
        let known = self
            .discovered
            .iter()
            .any(|d| d.name == name && d.dir == dest);
        if !known || !dest.is_dir() {
            return Err(CapsuleError::NotFound(name));
        }
        fs::remove_dir_all(&dest).map_err(|e| bad(&dest, e.to_string()))?;
        files::sync_dir(&store.capsules).map_err(|e| bad(&dest, e.to_string()))?;
        let record = |e: io::Error| bad(&store.file, e.to_string());
        let mut all = store.load().map_err(record)?;
        all.retain(|r| r.name != name);
        store.save(all).map_err(record)?;
        tracing::info!(capsule = %name, "capsule uninstalled");
        Ok(Removed {
            target: name,
            removed: true,
        })
    }

    /// `outcome`, answered once the capsules are reloaded after it (as `ReloadCapsules`).
    fn then_reload<T: 'static>(
        &mut self,
        outcome: Result<T, CapsuleError>,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<T, CapsuleError>> {
        match outcome {
            Ok(done) => Box::pin(
                <Self as Handler<ReloadCapsules>>::handle(self, ReloadCapsules, ctx)
                    .map(move |_, _, _| Ok(done)),
            ),
            Err(e) => Box::pin(actix::fut::ready(Err(e))),
        }
    }
}

impl Handler<InstallCapsule> for CapsulesActor {
    type Result = ResponseActFuture<Self, Result<InstallReport, CapsuleError>>;

    fn handle(&mut self, msg: InstallCapsule, ctx: &mut Context<Self>) -> Self::Result {
        let outcome = self.install(&msg.path, &msg.digest);
        self.then_reload(outcome, ctx)
    }
}

impl Handler<UninstallCapsule> for CapsulesActor {
    type Result = ResponseActFuture<Self, Result<Removed, CapsuleError>>;

    fn handle(&mut self, msg: UninstallCapsule, ctx: &mut Context<Self>) -> Self::Result {
        let outcome = self.uninstall(msg.name);
        self.then_reload(outcome, ctx)
    }
}
