//! Capsules' settings on disk and the registry's settings requests.
//!
//! The values the user sets (`astrid settings set`) are kept in `<home>/settings/<capsule>.toml`
//! (a table of strings, `0600` in a `0700` folder, replaced atomically and synced before the
//! request is answered), read when the capsule loads, and shared with its running instances
//! through its [`CapsuleConfig`](crate::capsule::config::CapsuleConfig). The registry checks every change against the manifest's
//! `[[config]]`; the audit entry of a change names the setting, never its value.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use actix::{Context, Handler};

use super::CapsulesActor;
use super::manifest::Manifest;
use super::messages::{ListSettings, SetSetting};
use crate::capsule::CapsuleError;
use crate::capsule::config::{MAX_SETTINGS, MAX_VALUE_BYTES, SettingDecl};
use crate::files;
use crate::protocol::{CapsuleSetting, SettingChanged};

/// Largest settings file read: every declared setting at its longest, with room for TOML.
const MAX_FILE_BYTES: u64 = (MAX_SETTINGS * (MAX_VALUE_BYTES * 2 + 128)) as u64;

/// The folder of the settings files, `<home>/settings/`.
#[derive(Debug, Clone)]
pub struct SettingsDir {
    dir: PathBuf,
}

impl SettingsDir {
    /// Settings kept under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn file(&self, capsule: &str) -> PathBuf {
        self.dir.join(format!("{capsule}.toml"))
    }

    /// The values set for `capsule` (none when it has no file).
    ///
    /// # Errors
    ///
    /// When the file cannot be read or is not a table of strings.
    pub fn load(&self, capsule: &str) -> io::Result<BTreeMap<String, String>> {
        let file = self.file(capsule);
        let bytes = match files::read_bounded(&file, MAX_FILE_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(e),
        };
        let text =
            String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        toml::from_str(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a table of strings: {e}", file.display()),
            )
        })
    }

    /// Replaces `capsule`'s values with `values`, durably (no file when there are none).
    ///
    /// # Errors
    ///
    /// Any I/O error; the old file is then left as it was.
    pub fn save(&self, capsule: &str, values: &BTreeMap<String, String>) -> io::Result<()> {
        let file = self.file(capsule);
        if values.is_empty() {
            files::remove_if_exists(&file)?;
            return files::sync_dir(&self.dir).or_else(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            });
        }
        // The home's folders are made `0700` at boot; this one again if it was removed since.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let text = toml::to_string(values).map_err(io::Error::other)?;
        files::write_private(&file, text.as_bytes())?;
        files::sync_dir(&self.dir)
    }
}

/// The listing of `manifest`'s settings with `values`: a secret's value is never shown.
pub fn listing(manifest: &Manifest, values: &BTreeMap<String, String>) -> Vec<CapsuleSetting> {
    manifest
        .settings
        .iter()
        .map(|decl| {
            let value = values.get(&decl.name);
            CapsuleSetting {
                name: decl.name.clone(),
                description: decl.description.clone(),
                secret: decl.secret,
                required: decl.required(),
                default: decl.default.clone(),
                set: value.is_some(),
                value: value.filter(|_| !decl.secret).cloned(),
            }
        })
        .collect()
}

/// Checks a value for `decl`.
fn check_value(capsule: &str, decl: &SettingDecl, value: &str) -> Result<(), CapsuleError> {
    let bad = |reason: String| CapsuleError::BadSetting {
        capsule: capsule.to_owned(),
        name: decl.name.clone(),
        reason,
    };
    if value.len() > MAX_VALUE_BYTES {
        return Err(bad(format!(
            "the value is {} bytes; at most {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(bad("the value holds a NUL character".into()));
    }
    Ok(())
}

impl CapsulesActor {
    /// The manifest of capsule `name`, as last scanned.
    fn manifest_of(&self, name: &str) -> Result<&Manifest, CapsuleError> {
        let discovered = self
            .discovered
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| CapsuleError::NotFound(name.to_owned()))?;
        discovered
            .manifest
            .as_ref()
            .map_err(|e| CapsuleError::BadSetting {
                capsule: name.to_owned(),
                name: String::new(),
                reason: format!("its manifest is invalid: {e}"),
            })
    }

    fn unsaved(capsule: &str) -> impl FnOnce(io::Error) -> CapsuleError + '_ {
        move |source| CapsuleError::SettingsUnsaved {
            capsule: capsule.to_owned(),
            source,
        }
    }
}

impl Handler<ListSettings> for CapsulesActor {
    type Result = Result<Vec<CapsuleSetting>, CapsuleError>;

    fn handle(&mut self, msg: ListSettings, _: &mut Context<Self>) -> Self::Result {
        let manifest = self.manifest_of(&msg.capsule)?;
        let values = self
            .deps
            .settings
            .load(&msg.capsule)
            .map_err(Self::unsaved(&msg.capsule))?;
        Ok(listing(manifest, &values))
    }
}

impl Handler<SetSetting> for CapsulesActor {
    type Result = Result<SettingChanged, CapsuleError>;

    fn handle(&mut self, msg: SetSetting, _: &mut Context<Self>) -> Self::Result {
        let SetSetting {
            capsule,
            name,
            value,
        } = msg;
        let manifest = self.manifest_of(&capsule)?;
        let Some(decl) = manifest.settings.iter().find(|d| d.name == name) else {
            let declared: Vec<&str> = manifest.settings.iter().map(|d| d.name.as_str()).collect();
            return Err(CapsuleError::UnknownSetting {
                capsule,
                name,
                declared: if declared.is_empty() {
                    "none".into()
                } else {
                    declared.join(", ")
                },
            });
        };
        if let Some(value) = &value {
            check_value(&capsule, decl, value)?;
        }
        let mut values = self
            .deps
            .settings
            .load(&capsule)
            .map_err(Self::unsaved(&capsule))?;
        let changed = match value {
            Some(value) => values.insert(name.clone(), value.clone()).as_ref() != Some(&value),
            None => values.remove(&name).is_some(),
        };
        if changed {
            self.deps
                .settings
                .save(&capsule, &values)
                .map_err(Self::unsaved(&capsule))?;
        }
        let set = values.contains_key(&name);
        if let Some(config) = self.configs.get(&capsule) {
            config.set_values(values);
        }
        tracing::info!(%capsule, setting = %name, set, "capsule setting changed");
        Ok(SettingChanged {
            capsule,
            name,
            set,
            changed,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;

    #[test]
    fn values_are_saved_privately_and_read_back_and_none_leaves_no_file() {
        let home = tempfile::tempdir().unwrap();
        let dir = SettingsDir::new(home.path().join("settings"));
        assert!(dir.load("fetch").unwrap().is_empty());
        let values = BTreeMap::from([
            ("api_key".to_owned(), "s3cret \"quoted\"\nline".to_owned()),
            ("region".to_owned(), "eu".to_owned()),
        ]);
        dir.save("fetch", &values).unwrap();
        assert_eq!(dir.load("fetch").unwrap(), values);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&home.path().join("settings")), 0o700);
        assert_eq!(mode(&home.path().join("settings/fetch.toml")), 0o600);
        dir.save("fetch", &BTreeMap::new()).unwrap();
        assert!(!home.path().join("settings/fetch.toml").exists());
        fs::write(home.path().join("settings/bad.toml"), "x = 1\n").unwrap();
        assert!(dir.load("bad").is_err());
    }
}
