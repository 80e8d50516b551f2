//! Capsule discovery: finds `<root>/<dir>/Capsule.toml` under each capsule root, loads and
//! validates each manifest (see `manifest.rs`), and applies precedence (a later root overrides an
//! earlier one by capsule name, so the workspace beats the home). Pure file reading; no
//! actor state.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use super::manifest::{self, Manifest};
use super::messages::CapsuleOrigin;

/// The manifest file every capsule folder holds.
pub const MANIFEST: &str = "Capsule.toml";

/// Name of the built-in capsule that the socket listener stands for.
pub const BUILTIN_CLI: &str = "astrid-capsule-cli";

/// A capsule folder found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// Capsule name: from the manifest, or the folder name when the manifest is unreadable.
    pub name: String,
    /// The capsule folder.
    pub dir: PathBuf,
    /// Which root it came from.
    pub origin: CapsuleOrigin,
    /// The validated manifest, or why it could not be loaded (naming the file and field).
    pub manifest: Result<Manifest, String>,
    /// Hash of the manifest and module bytes, to tell changed capsules on reload.
    pub fingerprint: u64,
    /// A capsule of the same name from an earlier root that this one overrides.
    pub overrides: Option<PathBuf>,
    /// Why it may not run: its workspace is not trusted (the message names the command
    /// that trusts it). Such a capsule is listed, never compiled or started.
    pub untrusted: Option<String>,
}

impl Discovered {
    /// Whether it may be loaded: a valid manifest, from a root that is trusted.
    pub fn runnable(&self) -> bool {
        self.manifest.is_ok() && self.untrusted.is_none()
    }
}

/// Scans `roots` in order; a later root's capsule replaces an earlier one of the same name.
/// Missing roots are skipped; unreadable entries are reported as capsules with an error.
pub fn discover(roots: &[(CapsuleOrigin, PathBuf)]) -> Vec<Discovered> {
    let mut found: Vec<Discovered> = Vec::new();
    for (origin, root) in roots {
        for capsule in scan_root(*origin, root) {
            if let Some(existing) = found.iter_mut().find(|c| c.name == capsule.name) {
                tracing::info!(
                    capsule = %capsule.name,
                    winner = %capsule.dir.display(),
                    loser = %existing.dir.display(),
                    "capsule overrides another of the same name"
                );
                let overridden = existing.dir.clone();
                *existing = Discovered {
                    overrides: Some(overridden),
                    ..capsule
                };
            } else {
                found.push(capsule);
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

fn scan_root(origin: CapsuleOrigin, root: &Path) -> Vec<Discovered> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        // A hidden folder is never a capsule: installs unpack and copy into those.
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.join(MANIFEST).is_file())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| read_capsule(origin, dir))
        .collect()
}

fn read_capsule(origin: CapsuleOrigin, dir: PathBuf) -> Discovered {
    let folder_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let manifest = manifest::load(&dir).map_err(|e| e.to_string());
    // The manifest and the module it names: a capsule whose code changed is changed.
    let read = |file: PathBuf, max| crate::files::read_bounded(&file, max).unwrap_or_default();
    let mut parts = vec![read(dir.join(MANIFEST), manifest::MAX_MANIFEST_BYTES)];
    if let Ok(m) = &manifest {
        parts.push(read(
            dir.join(&m.module),
            crate::capsule::inspect::MAX_MODULE_BYTES,
        ));
    }
    let name = manifest
        .as_ref()
        .map_or(folder_name, |m| m.package.name.clone());
    Discovered {
        name,
        dir,
        origin,
        manifest,
        fingerprint: fingerprint(&parts),
        overrides: None,
        untrusted: None,
    }
}

fn fingerprint(parts: &[Vec<u8>]) -> u64 {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, dir: &str, text: &str) {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        std::fs::write(root.join(dir).join(MANIFEST), text).unwrap();
        std::fs::write(root.join(dir).join("echo.wat"), "(module)").unwrap();
    }

    const ECHO: &str = "[package]\nname = \"echo\"\nversion = \"1.0.0\"\ndescription = \"Echoes\"\n\n[module]\nfile = \"echo.wat\"\n\n[[command]]\nname = \"echo\"\ndescription = \"Say it back\"\n";

    #[test]
    fn reads_manifests_and_skips_folders_without_one() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "echo", ECHO);
        std::fs::create_dir_all(tmp.path().join("empty")).unwrap();
        let found = discover(&[(CapsuleOrigin::Home, tmp.path().to_owned())]);
        assert_eq!(found.len(), 1);
        let m = found[0].manifest.as_ref().unwrap();
        assert_eq!(m.package.description.as_deref(), Some("Echoes"));
        assert_eq!(m.commands[0].name, "echo");
    }

    #[test]
    fn workspace_overrides_home_by_name() {
        let home = tempfile::tempdir().unwrap();
        let ws = tempfile::tempdir().unwrap();
        write(home.path(), "echo", ECHO);
        write(ws.path(), "my-echo", ECHO);
        let found = discover(&[
            (CapsuleOrigin::Home, home.path().to_owned()),
            (CapsuleOrigin::Workspace, ws.path().to_owned()),
        ]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].origin, CapsuleOrigin::Workspace);
        assert_eq!(
            found[0].overrides.as_deref(),
            Some(home.path().join("echo").as_path())
        );
    }

    #[test]
    fn bad_manifests_are_reported_with_file_and_reason() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "broken", "[package]\nname = 3\n");
        write(
            tmp.path(),
            "upper",
            "[package]\nname = \"Echo\"\nversion = \"1\"\n",
        );
        write(
            tmp.path(),
            "cli",
            "[package]\nname = \"astrid-capsule-cli\"\nversion = \"1.0.0\"\n[module]\nfile = \"echo.wat\"\n",
        );
        let found = discover(&[(CapsuleOrigin::Home, tmp.path().to_owned())]);
        assert_eq!(found.len(), 3);
        for c in &found {
            let err = c.manifest.as_ref().unwrap_err();
            assert!(err.contains(MANIFEST), "{err}");
        }
        assert_eq!(found[0].name, "broken");
    }

    #[test]
    fn a_changed_module_changes_the_fingerprint() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "echo", ECHO);
        let roots = [(CapsuleOrigin::Home, tmp.path().to_owned())];
        let before = discover(&roots)[0].fingerprint;
        assert_eq!(discover(&roots)[0].fingerprint, before, "stable");
        std::fs::write(tmp.path().join("echo").join("echo.wat"), "(module (func))").unwrap();
        assert_ne!(discover(&roots)[0].fingerprint, before);
    }

    #[test]
    fn missing_roots_are_empty() {
        assert!(discover(&[(CapsuleOrigin::Home, PathBuf::from("/nonexistent/x"))]).is_empty());
    }
}
