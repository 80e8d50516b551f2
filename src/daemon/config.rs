//! `<home>/config.toml`: the daemon's settings in one file, below its flags.
//!
//! Every flag of `astrid-daemon` but `--home`, `--session` and `--workspace` (which say where
//! this file is and which daemon of the home is starting) is a top-level key of the same name
//! with `_` for `-`: `call_timeout = "3s"`, `max_connections = 256`, `ephemeral = true`. One
//! table, `[audit_policy]`, sets the audit level of request kinds (`GetStatus = "metadata"`).
//! The file is parsed strictly, like capsule manifests: an unknown key, a value of the wrong
//! type, or a value the flag would refuse is an error naming the key, and the daemon does
//! not start.
//!
//! A flag given on the command line wins over the file, and the file over the default. The
//! keys are taken from the flags themselves (clap's command), and the file's values go
//! through the very parsers of the flags: a flag added to `args.rs` is a key here at once,
//! checked the same way. [`Resolved::settings`] says, for every setting, its value and where
//! it came from (`default`, `config` or `flag`); `GetConfig` reports them.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use astrid_actors::protocol::{AuditLevel, Setting};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use super::args::Args;

/// The file's name in the home.
pub(crate) const FILE: &str = "config.toml";

/// Flags that are not settings: they choose the file and the daemon.
const NOT_SETTINGS: &[&str] = &["home", "session", "workspace", "help", "version"];

/// The one table of the file.
const AUDIT_POLICY: &str = "audit_policy";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key or value is wrong.
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// The command line parsed on its own, before the file is read (it may name the home).
pub(crate) struct CommandLine {
    argv: Vec<OsString>,
    matches: ArgMatches,
    args: Args,
}

impl CommandLine {
    /// Parses `argv` (program name first).
    ///
    /// # Errors
    ///
    /// clap's, for the caller to print.
    pub(crate) fn parse(words: Vec<OsString>) -> Result<Self, clap::Error> {
        let matches = Args::command().try_get_matches_from(words.clone())?;
        let args = Args::from_arg_matches(&matches)?;
        Ok(Self {
            argv: words,
            matches,
            args,
        })
    }

    /// The flags as given, defaults filled in.
    pub(crate) fn args(&self) -> &Args {
        &self.args
    }
}

/// The settings in effect: flags over the file over defaults.
pub(crate) struct Resolved {
    /// The daemon's flags with the file's values applied.
    pub(crate) args: Args,
    /// The audit levels the file sets.
    pub(crate) audit_policy: BTreeMap<String, AuditLevel>,
    /// Every setting, with its value and source, in the order of `--help`.
    pub(crate) settings: Vec<Setting>,
}

/// Reads `path` (a missing file is an empty one) and resolves the settings of `cli`.
///
/// # Errors
///
/// An unreadable file, or one with an unknown key or a bad value.
pub(crate) fn resolve(cli: &CommandLine, path: &Path) -> Result<Resolved, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let parsed = parse(&text).map_err(invalid)?;
    let program = cli
        .argv
        .first()
        .cloned()
        .unwrap_or_else(|| "astrid-daemon".into());

    // The file's flags alone first, so that an error names the file rather than the
    // command line.
    let mut from_file = vec![program.clone()];
    from_file.extend(parsed.argv.iter().cloned());
    Args::command()
        .try_get_matches_from(&from_file)
        .map_err(|e| invalid(first_line(&e)))?;

    // Then both, the command line last: it wins.
    let mut both = from_file;
    both.extend(cli.argv.iter().skip(1).cloned());
    let matches = Args::command()
        .args_override_self(true)
        .try_get_matches_from(both)
        .map_err(|e| invalid(first_line(&e)))?;
    let args = Args::from_arg_matches(&matches).map_err(|e| invalid(first_line(&e)))?;

    let settings = Args::command()
        .get_arguments()
        .filter(|arg| !NOT_SETTINGS.contains(&arg.get_id().as_str()))
        .map(|arg| {
            let id = arg.get_id().as_str();
            let source = if cli.matches.value_source(id) == Some(ValueSource::CommandLine) {
                "flag"
            } else if parsed.keys.iter().any(|k| k == id) {
                "config"
            } else {
                "default"
            };
            let value = matches
                .get_raw(id)
                .and_then(|mut raw| raw.next_back())
                .map_or_else(String::new, |v| v.to_string_lossy().into_owned());
            Setting {
                name: id.to_owned(),
                value,
                source: source.to_owned(),
            }
        })
        .collect();
    Ok(Resolved {
        args,
        audit_policy: parsed.audit_policy,
        settings,
    })
}

/// What the file says, as flags and the policy table.
#[derive(Debug, Default, PartialEq)]
struct Parsed {
    /// The settings, as the command-line words that set them.
    argv: Vec<OsString>,
    /// The keys present.
    keys: Vec<String>,
    audit_policy: BTreeMap<String, AuditLevel>,
}

/// Parses the file's text.
fn parse(text: &str) -> Result<Parsed, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.to_string().trim_end().replace('\n', " "))?;
    let command = Args::command();
    let mut parsed = Parsed::default();
    for (key, value) in table {
        if key == AUDIT_POLICY {
            parsed.audit_policy = audit_policy(value)?;
            continue;
        }
        let arg = command
            .get_arguments()
            .find(|a| a.get_id().as_str() == key && !NOT_SETTINGS.contains(&key.as_str()))
            .ok_or_else(|| unknown_key(&key))?;
        let flag = format!("--{}", arg.get_long().unwrap_or(arg.get_id().as_str()));
        let takes_value = !matches!(arg.get_action(), ArgAction::SetTrue);
        match (value, takes_value) {
            (toml::Value::Boolean(on), false) => {
                if on {
                    parsed.argv.push(flag.into());
                }
            }
            (toml::Value::String(s), true) => parsed.argv.extend([flag.into(), s.into()]),
            (toml::Value::Integer(n), true) => {
                parsed.argv.extend([flag.into(), n.to_string().into()]);
            }
            (other, false) => {
                return Err(format!(
                    "`{key}` takes true or false, not {}",
                    other.type_str()
                ));
            }
            (other, true) => {
                return Err(format!(
                    "`{key}` takes a string or a number, not {}",
                    other.type_str()
                ));
            }
        }
        parsed.keys.push(key);
    }
    Ok(parsed)
}

fn unknown_key(key: &str) -> String {
    let known: Vec<String> = Args::command()
        .get_arguments()
        .map(|a| a.get_id().as_str().to_owned())
        .filter(|id| !NOT_SETTINGS.contains(&id.as_str()))
        .chain([AUDIT_POLICY.to_owned()])
        .collect();
    let hint = if NOT_SETTINGS.contains(&key) {
        " (it is given on the command line only)"
    } else {
        ""
    };
    format!(
        "unknown key `{key}`{hint}; the keys are {}",
        known
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `[audit_policy]`: request kind → `none` or `metadata`. Which kinds exist is the kernel's
/// to check.
fn audit_policy(value: toml::Value) -> Result<BTreeMap<String, AuditLevel>, String> {
    let toml::Value::Table(table) = value else {
        return Err(format!(
            "`{AUDIT_POLICY}` is a table of request kinds, like `[{AUDIT_POLICY}]` then `GetStatus = \"metadata\"`"
        ));
    };
    table
        .into_iter()
        .map(|(request, level)| {
            let level = level
                .as_str()
                .ok_or_else(|| {
                    format!("`{AUDIT_POLICY}.{request}` takes \"none\" or \"metadata\"")
                })?
                .parse::<AuditLevel>()
                .map_err(|e| format!("`{AUDIT_POLICY}.{request}`: {e}"))?;
            Ok((request, level))
        })
        .collect()
}

/// The first line of a clap error, without its `error: ` prefix.
pub(crate) fn first_line(e: &clap::Error) -> String {
    let rendered = e.to_string();
    let first = rendered.lines().next().unwrap_or("invalid arguments");
    first.trim_start_matches("error: ").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> CommandLine {
        let mut words = vec![OsString::from("astrid-daemon")];
        words.extend(args.iter().map(OsString::from));
        CommandLine::parse(words).unwrap()
    }

    fn resolve_text(args: &[&str], text: &str) -> Result<Resolved, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        std::fs::write(&path, text).unwrap();
        resolve(&cli(args), &path)
    }

    fn setting<'a>(resolved: &'a Resolved, name: &str) -> &'a Setting {
        resolved
            .settings
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no setting {name}"))
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let resolved = resolve_text(
            &["--call-timeout", "2s"],
            "call_timeout = \"3s\"\nmax_connections = 100\nallow_fault_injection = true\n",
        )
        .unwrap();
        assert_eq!(resolved.args.call_timeout.as_secs(), 2);
        assert_eq!(resolved.args.max_connections, 100);
        assert!(resolved.args.allow_fault_injection);
        assert!(!resolved.args.ephemeral);
        let call = setting(&resolved, "call_timeout");
        assert_eq!((call.value.as_str(), call.source.as_str()), ("2s", "flag"));
        let conns = setting(&resolved, "max_connections");
        assert_eq!(
            (conns.value.as_str(), conns.source.as_str()),
            ("100", "config")
        );
        let frame = setting(&resolved, "max_frame");
        assert_eq!(frame.source, "default");
        assert!(resolved.settings.iter().all(|s| s.name != "home"));
    }

    #[test]
    fn a_missing_file_is_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let resolved = resolve(&cli(&[]), &dir.path().join(FILE)).unwrap();
        assert!(resolved.settings.iter().all(|s| s.source == "default"));
        assert!(resolved.audit_policy.is_empty());
    }

    #[test]
    fn every_flag_but_the_three_is_a_key() {
        let ids: Vec<String> = Args::command()
            .get_arguments()
            .map(|a| a.get_id().as_str().to_owned())
            .filter(|id| !NOT_SETTINGS.contains(&id.as_str()))
            .collect();
        let resolved = resolve_text(&[], "").unwrap();
        let names: Vec<&str> = resolved.settings.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ids);
        assert!(names.contains(&"capsule_linger"));
    }

    #[test]
    fn unknown_keys_wrong_types_and_bad_values_name_the_key() {
        let err = |text: &str| resolve_text(&[], text).err().unwrap().to_string();
        let unknown = err("call_timout = \"3s\"\n");
        assert!(unknown.contains("unknown key `call_timout`"), "{unknown}");
        assert!(unknown.contains("`call_timeout`"), "{unknown}");
        let home = err("home = \"/x\"\n");
        assert!(home.contains("command line only"), "{home}");
        let typed = err("ephemeral = \"yes\"\n");
        assert!(typed.contains("`ephemeral` takes true or false"), "{typed}");
        let value = err("max_connections = 0\n");
        assert!(
            value.contains("max-connections") && value.contains("at least 1"),
            "{value}"
        );
        let syntax = err("call_timeout = \n");
        assert!(syntax.contains(FILE), "{syntax}");
        let level = err("[audit_policy]\nGetStatus = \"all\"\n");
        assert!(level.contains("audit_policy.GetStatus"), "{level}");
    }

    #[test]
    fn the_audit_policy_table_is_read() {
        let resolved = resolve_text(
            &[],
            "[audit_policy]\nGetStatus = \"metadata\"\nKvPut = \"none\"\n",
        )
        .unwrap();
        assert_eq!(
            resolved.audit_policy,
            BTreeMap::from([
                ("GetStatus".to_owned(), AuditLevel::Metadata),
                ("KvPut".to_owned(), AuditLevel::None),
            ])
        );
    }
}
