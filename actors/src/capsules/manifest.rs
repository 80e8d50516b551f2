//! The capsule manifest, `Capsule.toml`: parsed strictly and validated. An unknown key, a
//! missing required field or a bad value is a [`ManifestError`] naming the file and the
//! field (`limits.fuel`, `command[1].name`, ...). Pure: reading a file and checking it,
//! no actor state. The README documents every field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::discovery::BUILTIN_CLI;
use crate::bus::Pattern;
use crate::bus::topic::validate_topic;
use crate::caps::resource::{GrantPattern, ResourcePattern};
use crate::capsule::inspect::check_size;
use crate::mcp::config::{RawServer, ServerConfig};
pub use crate::settings::Restart;
use crate::settings::{FieldError, RawRestart, TomlError, parse_toml, within};
use crate::supervisor::RestartType;

/// Why a manifest could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{file}: cannot be read: {reason}")]
    Unreadable {
        /// The manifest file.
        file: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The file is not valid TOML.
    #[error("{file}: not valid TOML: {reason}")]
    Syntax {
        /// The manifest file.
        file: PathBuf,
        /// What the parser says, with the line.
        reason: String,
    },
    /// A field is unknown, missing, or has a bad value.
    #[error("{file}: `{field}`: {reason}")]
    Field {
        /// The manifest file.
        file: PathBuf,
        /// The field, as a path (`limits.fuel`, `command[1].name`; `.` for the whole file).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `[package]`.
    pub package: Package,
    /// The module file, relative to the capsule folder (`.wasm`, or `.wat` text).
    pub module: PathBuf,
    /// Capabilities the capsule is granted while it is loaded (`[capabilities] grant`),
    /// in the capability store's grammar (`ask:` ones used once the user approves).
    pub capabilities: Vec<String>,
    /// How long the user has to approve a use of some `ask:` grants
    /// (`[capabilities.approval_timeout]`, by grant as written).
    pub approval_timeouts: BTreeMap<String, Duration>,
    /// `[limits]`.
    pub limits: Limits,
    /// Slash commands (`[[command]]`).
    pub commands: Vec<Command>,
    /// Topics the capsule answers requests on (`[[provider]]`).
    pub providers: Vec<Hook>,
    /// Topic patterns whose events the capsule sees before delivery (`[[interceptor]]`).
    pub interceptors: Vec<Hook>,
    /// Topic patterns whose events the capsule receives (`[bus] subscribe`).
    pub subscriptions: Vec<String>,
    /// `[restart]`.
    pub restart: Restart,
    /// MCP servers the capsule brings (`[[mcp_server]]`, the fields of `mcp.toml`'s
    /// `[[server]]`), started and stopped with it; their working directory defaults to the
    /// capsule folder.
    pub mcp_servers: Vec<ServerConfig>,
    /// Settings the user gives the capsule (`[[config]]`), read with `config_get`.
    pub settings: Vec<SettingDecl>,
}

/// `[package]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// Capsule name: lowercase letters, digits and `-`, starting with a letter or digit, at
    /// most 64 bytes.
    pub name: String,
    /// Semantic version (`1.2.3`, optionally `-pre` and `+build`).
    pub version: String,
    /// One-line description.
    #[serde(default)]
    pub description: Option<String>,
}

pub use crate::capsule::Limits;
pub use crate::capsule::config::SettingDecl;
use crate::capsule::config::{MAX_SETTINGS, MAX_VALUE_BYTES};

/// Largest manifest file: 1 MiB.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Most memory a capsule may ask for: 4096 pages, 256 MiB.
pub const MAX_MEMORY_PAGES: u32 = 4096;
/// Bounds of `limits.fuel`.
pub const FUEL_RANGE: (u64, u64) = (1_000, 1_000_000_000_000);
/// Bounds of `limits.call_timeout`.
pub const CALL_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_mins(1));
/// Bounds of each `capabilities.approval_timeout`: long enough for someone to read the
/// question, short enough that a call never waits for an answer nobody will give.
pub const APPROVAL_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_mins(10));

/// One `[[command]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The slash command, without the slash: lowercase letters, digits and `-`.
    pub name: String,
    /// What it does, for help listings.
    #[serde(default)]
    pub description: Option<String>,
}

/// One `[[provider]]` or `[[interceptor]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// The topic (a provider) or topic pattern (an interceptor).
    pub topic: String,
    /// Order among hooks of the same topic: lower runs first.
    #[serde(default = "default_priority")]
    pub priority: i32,
}

fn default_priority() -> i32 {
    100
}

// The file as written, before validation.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    package: Package,
    module: RawModule,
    #[serde(default)]
    capabilities: RawCapabilities,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default, rename = "command")]
    commands: Vec<Command>,
    #[serde(default, rename = "provider")]
    providers: Vec<Hook>,
    #[serde(default, rename = "interceptor")]
    interceptors: Vec<Hook>,
    #[serde(default)]
    bus: RawBus,
    #[serde(default)]
    restart: RawRestart,
    #[serde(default, rename = "mcp_server")]
    mcp_servers: Vec<RawServer>,
    #[serde(default, rename = "config")]
    settings: Vec<SettingDecl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModule {
    file: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapabilities {
    #[serde(default)]
    grant: Vec<String>,
    #[serde(default)]
    approval_timeout: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_pages: Option<u32>,
    fuel: Option<u64>,
    call_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBus {
    #[serde(default)]
    subscribe: Vec<String>,
}

/// Reads and validates `<dir>/Capsule.toml`; the module file must exist in `dir`.
///
/// # Errors
///
/// See [`ManifestError`].
pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
    let file = dir.join(super::discovery::MANIFEST);
    let unreadable = |reason: String| ManifestError::Unreadable {
        file: file.clone(),
        reason,
    };
    let bytes = crate::files::read_bounded(&file, MAX_MANIFEST_BYTES)
        .map_err(|e| unreadable(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|e| unreadable(e.to_string()))?;
    let manifest = parse(&file, &text)?;
    let module = dir.join(&manifest.module);
    let missing = |reason: String| ManifestError::Field {
        file: file.clone(),
        field: "module.file".into(),
        reason,
    };
    if !module.is_file() {
        return Err(missing(format!("{} does not exist", module.display())));
    }
    // A symlink may not lead the module out of the capsule folder.
    let inside = match (module.canonicalize(), dir.canonicalize()) {
        (Ok(module), Ok(dir)) => module.starts_with(dir),
        _ => false,
    };
    if !inside {
        return Err(missing(format!(
            "{} leads outside the capsule folder",
            module.display()
        )));
    }
    // Checked before anything reads the module (the loader reads at most this much too).
    let len = module.metadata().map_or(0, |m| m.len());
    if let Err(e) = check_size(len) {
        return Err(missing(format!("{}: {e}", module.display())));
    }
    Ok(manifest)
}

/// Parses and validates manifest text; `file` is only named in errors.
///
/// # Errors
///
/// See [`ManifestError`].
pub fn parse(file: &Path, text: &str) -> Result<Manifest, ManifestError> {
    let raw: RawManifest = parse_toml(text).map_err(|e| match e {
        TomlError::Syntax(reason) => ManifestError::Syntax {
            file: file.to_owned(),
            reason,
        },
        TomlError::Field(e) => ManifestError::Field {
            file: file.to_owned(),
            field: e.field,
            reason: e.reason,
        },
    })?;
    Checker { file }.manifest(raw)
}

struct Checker<'a> {
    file: &'a Path,
}

impl Checker<'_> {
    fn fail<T>(
        &self,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Result<T, ManifestError> {
        Err(ManifestError::Field {
            file: self.file.to_owned(),
            field: field.into(),
            reason: reason.into(),
        })
    }

    fn manifest(&self, raw: RawManifest) -> Result<Manifest, ManifestError> {
        self.name("package.name", &raw.package.name)?;
        if raw.package.name == BUILTIN_CLI {
            return self.fail(
                "package.name",
                format!("`{BUILTIN_CLI}` is reserved for the built-in listener"),
            );
        }
        self.version(&raw.package.version)?;
        let module = self.module(&raw.module.file)?;
        let (grants, approval_timeouts) = self.capabilities(&raw.capabilities)?;
        let limits = self.limits(&raw.limits)?;
        let mut names = BTreeSet::new();
        for (i, command) in raw.commands.iter().enumerate() {
            let field = format!("command[{i}].name");
            self.name(&field, &command.name)?;
            if !names.insert(command.name.as_str()) {
                return self.fail(field, format!("`{}` is declared twice", command.name));
            }
        }
        for (i, provider) in raw.providers.iter().enumerate() {
            if let Err(rule) = validate_topic(&provider.topic) {
                return self.fail(
                    format!("provider[{i}].topic"),
                    format!("`{}`: {rule}", provider.topic),
                );
            }
        }
        let subscribable: Vec<&Pattern> = grants
            .iter()
            .filter_map(|g| match g {
                ResourcePattern::BusSubscribe(p) => Some(p),
                _ => None,
            })
            .collect();
        let covered = |field: String, topic: &str| -> Result<(), ManifestError> {
            let pattern = match Pattern::parse(topic) {
                Ok(pattern) => pattern,
                Err(rule) => return self.fail(field, format!("`{topic}`: {rule}")),
            };
            if subscribable.iter().any(|grant| grant.covers(&pattern)) {
                Ok(())
            } else {
                self.fail(
                    field,
                    format!("`{topic}` is not covered by a `bus:subscribe:` capability in capabilities.grant"),
                )
            }
        };
        for (i, interceptor) in raw.interceptors.iter().enumerate() {
            covered(format!("interceptor[{i}].topic"), &interceptor.topic)?;
        }
        for (i, topic) in raw.bus.subscribe.iter().enumerate() {
            covered(format!("bus.subscribe[{i}]"), topic)?;
        }
        let restart = self.field(raw.restart.check("restart", RestartType::Transient))?;
        let mut mcp_servers: Vec<ServerConfig> = Vec::new();
        for (i, server) in raw.mcp_servers.into_iter().enumerate() {
            let table = format!("mcp_server[{i}]");
            let mut server = self.field(server.check(&table, self.file))?;
            if mcp_servers.iter().any(|s| s.name == server.name) {
                return self.fail(
                    format!("{table}.name"),
                    format!("`{}` is declared twice", server.name),
                );
            }
            if server.cwd.is_none() {
                server.cwd = self.file.parent().map(Path::to_owned);
            }
            mcp_servers.push(server);
        }
        self.settings(&raw.settings)?;
        Ok(Manifest {
            package: raw.package,
            module,
            capabilities: raw.capabilities.grant,
            approval_timeouts,
            limits,
            commands: raw.commands,
            providers: raw.providers,
            interceptors: raw.interceptors,
            subscriptions: raw.bus.subscribe,
            restart,
            mcp_servers,
            settings: raw.settings,
        })
    }

    /// `[[config]]`: well-formed unique names, bounded defaults, and no default for a
    /// secret (a value written in the manifest is no secret).
    fn settings(&self, settings: &[SettingDecl]) -> Result<(), ManifestError> {
        if settings.len() > MAX_SETTINGS {
            return self.fail(
                "config",
                format!("{} settings; at most {MAX_SETTINGS}", settings.len()),
            );
        }
        let mut names = BTreeSet::new();
        for (i, setting) in settings.iter().enumerate() {
            let field = format!("config[{i}].name");
            let name = &setting.name;
            let well_formed = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                })
                && !name.starts_with('-');
            if !well_formed {
                return self.fail(
                    field,
                    format!(
                        "`{name}` must be 1 to 64 lowercase letters, digits, `_` or `-`, not starting with `-`"
                    ),
                );
            }
            if !names.insert(name.as_str()) {
                return self.fail(field, format!("`{name}` is declared twice"));
            }
            match &setting.default {
                Some(_) if setting.secret => {
                    return self.fail(
                        format!("config[{i}].default"),
                        "a secret has no default: a value written in the manifest is not secret",
                    );
                }
                Some(default) if default.len() > MAX_VALUE_BYTES => {
                    return self.fail(
                        format!("config[{i}].default"),
                        format!("{} bytes; at most {MAX_VALUE_BYTES}", default.len()),
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Capsule and command names: `[a-z0-9][a-z0-9-]*`, at most 64 bytes.
    fn name(&self, field: &str, name: &str) -> Result<(), ManifestError> {
        let well_formed = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-');
        if well_formed {
            Ok(())
        } else {
            self.fail(
                field,
                format!(
                    "`{name}` must be 1 to 64 lowercase letters, digits or `-`, not starting with `-`"
                ),
            )
        }
    }

    /// `MAJOR.MINOR.PATCH`, optionally `-pre` and `+build` (semantic versioning 2.0.0).
    fn version(&self, version: &str) -> Result<(), ManifestError> {
        let numeric = |n: &str| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n.len() == 1 || !n.starts_with('0'))
        };
        let identifiers = |t: &str, numbers_strict: bool| {
            t.split('.').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && (!numbers_strict
                        || !part.bytes().all(|b| b.is_ascii_digit())
                        || numeric(part))
            })
        };
        let (rest, build) = match version.split_once('+') {
            Some((rest, build)) => (rest, Some(build)),
            None => (version, None),
        };
        let (core, pre) = match rest.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (rest, None),
        };
        let numbers: Vec<&str> = core.split('.').collect();
        let ok = numbers.len() == 3
            && numbers.iter().all(|n| numeric(n))
            && pre.is_none_or(|p| identifiers(p, true))
            && build.is_none_or(|b| identifiers(b, false));
        if ok {
            Ok(())
        } else {
            self.fail(
                "package.version",
                format!("`{version}` is not a semantic version such as 1.2.3"),
            )
        }
    }

    /// A relative path inside the capsule folder, ending in `.wasm` or `.wat`.
    fn module(&self, file: &str) -> Result<PathBuf, ManifestError> {
        let path = PathBuf::from(file);
        let inside = !file.is_empty()
            && !file.ends_with('/')
            && path
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            return self.fail(
                "module.file",
                format!("`{file}` must be a relative path inside the capsule folder"),
            );
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("wasm" | "wat") => Ok(path),
            _ => self.fail(
                "module.file",
                format!("`{file}` must be a `.wasm` module or `.wat` text"),
            ),
        }
    }

    /// `[capabilities]`: the grants given outright (parsed, for the subscriptions' check),
    /// and the approval timeouts of `ask:` grants.
    fn capabilities(
        &self,
        raw: &RawCapabilities,
    ) -> Result<(Vec<ResourcePattern>, BTreeMap<String, Duration>), ManifestError> {
        let mut grants = Vec::with_capacity(raw.grant.len());
        let mut asked = BTreeSet::new();
        for (i, grant) in raw.grant.iter().enumerate() {
            match GrantPattern::parse(grant) {
                Ok(parsed) if parsed.ask => {
                    asked.insert(grant.as_str());
                }
                Ok(parsed) => grants.push(parsed.pattern),
                Err(e) => {
                    return self.fail(
                        format!("capabilities.grant[{i}]"),
                        format!("`{grant}`: {}", e.reason),
                    );
                }
            }
        }
        let mut approval_timeouts = BTreeMap::new();
        for (grant, timeout) in &raw.approval_timeout {
            let field = format!("capabilities.approval_timeout.\"{grant}\"");
            if !asked.contains(grant.as_str()) {
                return self.fail(field, "names no `ask:` grant of capabilities.grant");
            }
            let timeout = self.field(within(&field, timeout, APPROVAL_TIMEOUT_RANGE))?;
            approval_timeouts.insert(grant.clone(), timeout);
        }
        Ok((grants, approval_timeouts))
    }

    fn limits(&self, raw: &RawLimits) -> Result<Limits, ManifestError> {
        let mut limits = Limits::default();
        if let Some(pages) = raw.memory_pages {
            if pages == 0 || pages > MAX_MEMORY_PAGES {
                return self.fail(
                    "limits.memory_pages",
                    format!("{pages} is outside 1..={MAX_MEMORY_PAGES} (64 KiB pages)"),
                );
            }
            limits.memory_pages = pages;
        }
        if let Some(fuel) = raw.fuel {
            let (low, high) = FUEL_RANGE;
            if !(low..=high).contains(&fuel) {
                return self.fail("limits.fuel", format!("{fuel} is outside {low}..={high}"));
            }
            limits.fuel = fuel;
        }
        if let Some(timeout) = &raw.call_timeout {
            limits.call_timeout =
                self.field(within("limits.call_timeout", timeout, CALL_TIMEOUT_RANGE))?;
        }
        Ok(limits)
    }

    /// Maps a shared check's error to this file's.
    fn field<T>(&self, checked: Result<T, FieldError>) -> Result<T, ManifestError> {
        checked.map_err(|e| ManifestError::Field {
            file: self.file.to_owned(),
            field: e.field,
            reason: e.reason,
        })
    }
}
