//! A capsule's settings as its `config_get` import sees them: what the manifest declares
//! (`[[config]]`), the values the user set (`astrid settings set`), and the lookup that
//! puts the two together. Plain code; the values are kept on disk by the registry
//! (`capsules/settings.rs`) and shared with every instance of the capsule here, so a value
//! set while the capsule runs is seen by its next `config_get`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{PoisonError, RwLock};

use serde::Deserialize;

/// Longest value of a setting (and of a default), in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most settings one manifest may declare.
pub const MAX_SETTINGS: usize = 256;

/// One `[[config]]` of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingDecl {
    /// The key `config_get` asks for: 1 to 64 lowercase letters, digits, `_` or `-`.
    pub name: String,
    /// What it is for (shown by `astrid settings ls` and in the error of a missing one).
    #[serde(default)]
    pub description: Option<String>,
    /// The value while the user has set none. Without one, the setting is required.
    #[serde(default)]
    pub default: Option<String>,
    /// A secret: read from stdin or a prompt, never shown back, logged or audited.
    #[serde(default)]
    pub secret: bool,
}

impl SettingDecl {
    /// Whether a call that reads it fails while it is unset.
    pub fn required(&self) -> bool {
        self.default.is_none()
    }
}

/// Why `config_get` has no value to give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The manifest declares no such setting (a guest bug: `-3` to the guest).
    #[error("capsule `{capsule}` declares no setting `{name}`")]
    Undeclared {
        /// The capsule.
        capsule: String,
        /// The key asked for.
        name: String,
    },
    /// A required setting is unset: the call fails with this message.
    #[error(
        "capsule `{capsule}` needs the setting `{name}`{about}, which is not set: set it with \
         `astrid settings set {capsule} {name}`"
    )]
    Missing {
        /// The capsule.
        capsule: String,
        /// The setting.
        name: String,
        /// ` (its description)`, or nothing.
        about: String,
    },
}

/// One capsule's declared settings and current values, shared by its instances.
pub struct CapsuleConfig {
    capsule: String,
    declared: Vec<SettingDecl>,
    values: RwLock<BTreeMap<String, String>>,
}

impl fmt::Debug for CapsuleConfig {
    // Values may be secrets: only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapsuleConfig")
            .field("capsule", &self.capsule)
            .field("declared", &self.declared.len())
            .field("set", &self.read().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl CapsuleConfig {
    /// Settings of `capsule`: `declared` by its manifest, with the user's `values` (values of
    /// settings no longer declared are kept on disk but never handed out).
    pub fn new(
        capsule: &str,
        declared: Vec<SettingDecl>,
        values: BTreeMap<String, String>,
    ) -> Self {
        Self {
            capsule: capsule.to_owned(),
            declared,
            values: RwLock::new(values),
        }
    }

    /// The manifest's declarations.
    pub fn declared(&self) -> &[SettingDecl] {
        &self.declared
    }

    /// The declaration of `name`.
    pub fn decl(&self, name: &str) -> Option<&SettingDecl> {
        self.declared.iter().find(|d| d.name == name)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, String>> {
        self.values.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The values the user set (for the registry, which saves them).
    pub fn values(&self) -> BTreeMap<String, String> {
        self.read().clone()
    }

    /// Replaces the user's values (after they were saved).
    pub fn set_values(&self, values: BTreeMap<String, String>) {
        *self.values.write().unwrap_or_else(PoisonError::into_inner) = values;
    }

    /// What `config_get(name)` gives: the user's value, else the default.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Undeclared`] for a name the manifest does not declare,
    /// [`ConfigError::Missing`] for a required setting with no value.
    pub fn get(&self, name: &str) -> Result<String, ConfigError> {
        let Some(decl) = self.decl(name) else {
            return Err(ConfigError::Undeclared {
                capsule: self.capsule.clone(),
                name: name.to_owned(),
            });
        };
        if let Some(value) = self.read().get(name) {
            return Ok(value.clone());
        }
        decl.default.clone().ok_or_else(|| ConfigError::Missing {
            capsule: self.capsule.clone(),
            name: name.to_owned(),
            about: decl
                .description
                .as_ref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(name: &str, default: Option<&str>, secret: bool) -> SettingDecl {
        SettingDecl {
            name: name.into(),
            description: Some(format!("the {name}")),
            default: default.map(Into::into),
            secret,
        }
    }

    #[test]
    fn a_value_set_wins_over_the_default_and_a_missing_required_one_names_the_command() {
        let config = CapsuleConfig::new(
            "fetch",
            vec![
                decl("region", Some("eu"), false),
                decl("api_key", None, true),
            ],
            BTreeMap::new(),
        );
        assert_eq!(config.get("region").unwrap(), "eu");
        let missing = config.get("api_key").unwrap_err().to_string();
        assert!(
            missing.contains("astrid settings set fetch api_key"),
            "{missing}"
        );
        assert!(missing.contains("(the api_key)"), "{missing}");
        assert!(matches!(
            config.get("nope"),
            Err(ConfigError::Undeclared { .. })
        ));
        config.set_values(BTreeMap::from([
            ("region".into(), "us".into()),
            ("api_key".into(), "s3cret".into()),
        ]));
        assert_eq!(config.get("region").unwrap(), "us");
        assert_eq!(config.get("api_key").unwrap(), "s3cret");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("api_key"),
            "{shown}"
        );
    }
}
