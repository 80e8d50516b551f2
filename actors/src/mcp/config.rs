//! MCP server configuration: `mcp.toml` in the home, then `<workspace>/.astrid/mcp.toml`
//! (whose servers override the home's of the same name). Parsed strictly, one server at a
//! time: a bad entry is an error naming the file and the field, and the other servers still
//! start. Pure: reading files and checking them, no actor state. The README documents every
//! field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::settings::{FieldError, RawRestart, Restart, TomlError, parse_toml, within};
use crate::supervisor::RestartType;

/// The file name, in the home and in `<workspace>/.astrid/`.
pub const FILE: &str = "mcp.toml";

/// Bounds of `call_timeout`.
pub const CALL_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_mins(10));

/// One configured server, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Its name: lowercase letters, digits, `-` and `_`; how clients and capabilities
    /// (`mcp:call:<server>/<tool>`) name it.
    pub name: String,
    /// The program: a path (a relative one is taken from the file's folder), or a name
    /// without `/`, looked up in the daemon's `PATH`.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its environment, exactly: these variables, plus those of `inherit_env` taken from the
    /// daemon's. Nothing else of the daemon's environment reaches the server.
    pub env: BTreeMap<String, String>,
    /// Variables passed on from the daemon's environment (when set there).
    pub inherit_env: Vec<String>,
    /// Its working directory; `None` for the workspace root.
    pub cwd: Option<PathBuf>,
    /// Deadline of one tool call.
    pub call_timeout: Duration,
    /// Restart type (permanent by default) and budget.
    pub restart: Restart,
    /// The file it was read from.
    pub source: PathBuf,
}

/// A server entry that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: `{field}`: {reason}", file.display())]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The server's name, when it could be read.
    pub server: Option<String>,
    /// The field, as a path (`server[1].call_timeout`; `.` for the whole file).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// What the configuration files give: the servers to run, in name order, the entries that
/// could not be used, and those that may not run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct McpConfig {
    /// Valid servers, later files overriding earlier ones by name.
    pub servers: Vec<ServerConfig>,
    /// Bad entries and unreadable files.
    pub errors: Vec<ConfigError>,
    /// Servers of a file that is not trusted (an untrusted workspace's): listed, never run.
    pub held: Vec<Held>,
}

/// A server of a file that is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Its name.
    pub name: String,
    /// Its command and arguments, as far as the entry could be read.
    pub command: Vec<String>,
    /// The file.
    pub source: PathBuf,
    /// Why it may not run, and the command that lets it.
    pub reason: String,
}

/// The servers `file` names, to list without running them (`reason` says why); none when
/// the file is missing or unreadable. Servers named in `taken` (configured by a trusted
/// file) are left out.
pub fn held(file: &Path, reason: &str, taken: &McpConfig) -> Vec<Held> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    let (servers, errors) = parse(file, &text);
    let valid = servers.into_iter().map(|s| {
        let command = std::iter::once(s.command).chain(s.args).collect();
        (s.name, command)
    });
    let bad = errors
        .into_iter()
        .filter_map(|e| e.server)
        .map(|name| (name, Vec::new()));
    let mut held: Vec<Held> = valid
        .chain(bad)
        .filter(|(name, _)| {
            !taken.servers.iter().any(|s| &s.name == name)
                && !taken.errors.iter().any(|e| e.server.as_ref() == Some(name))
        })
        .map(|(name, command)| Held {
            name,
            command,
            source: file.to_owned(),
            reason: reason.to_owned(),
        })
        .collect();
    held.sort_by(|a, b| a.name.cmp(&b.name));
    held.dedup_by(|a, b| a.name == b.name);
    held
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    server: Vec<toml::Value>,
}

/// One `[[server]]` (or a capsule manifest's `[[mcp_server]]`) as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    name: String,
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    inherit_env: Vec<String>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    call_timeout: Option<String>,
    #[serde(default)]
    restart: RawRestart,
}

/// Reads `files` in order (a missing file is no error); servers of later files override
/// earlier ones of the same name.
pub fn load(files: &[PathBuf]) -> McpConfig {
    let mut servers: BTreeMap<String, ServerConfig> = BTreeMap::new();
    let mut errors = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                errors.push(whole(file, format!("cannot be read: {e}")));
                continue;
            }
        };
        let (found, bad) = parse(file, &text);
        // An entry replaces earlier ones of the same name, valid or not: a broken override
        // is reported, not silently ignored in favour of what it meant to replace.
        for error in bad {
            if let Some(name) = &error.server {
                servers.remove(name);
                errors.retain(|e: &ConfigError| e.server.as_ref() != Some(name));
            }
            errors.push(error);
        }
        for server in found {
            errors.retain(|e| e.server.as_ref() != Some(&server.name));
            if let Some(earlier) = servers.get(&server.name) {
                tracing::info!(
                    server = %server.name,
                    file = %server.source.display(),
                    overrides = %earlier.source.display(),
                    "MCP server overrides one of the same name"
                );
            }
            servers.insert(server.name.clone(), server);
        }
    }
    McpConfig {
        servers: servers.into_values().collect(),
        errors,
        held: Vec::new(),
    }
}

fn whole(file: &Path, reason: String) -> ConfigError {
    ConfigError {
        file: file.to_owned(),
        server: None,
        field: ".".into(),
        reason,
    }
}

/// Parses one file's text: its valid servers and its bad entries (`file` is only named in
/// errors).
pub fn parse(file: &Path, text: &str) -> (Vec<ServerConfig>, Vec<ConfigError>) {
    let raw: RawFile = match parse_toml(text) {
        Ok(raw) => raw,
        Err(TomlError::Syntax(reason)) => {
            return (
                Vec::new(),
                vec![whole(file, format!("not valid TOML: {reason}"))],
            );
        }
        Err(TomlError::Field(e)) => {
            return (
                Vec::new(),
                vec![ConfigError {
                    file: file.to_owned(),
                    server: None,
                    field: e.field,
                    reason: e.reason,
                }],
            );
        }
    };
    let mut servers: Vec<ServerConfig> = Vec::new();
    let mut errors = Vec::new();
    for (i, entry) in raw.server.into_iter().enumerate() {
        let table = format!("server[{i}]");
        let name = entry
            .get("name")
            .and_then(toml::Value::as_str)
            .map(str::to_owned);
        // The path inside the entry names the field at fault (`server[1].call_timeout`,
        // or an unknown key: `server[1].comand`), as in a capsule manifest.
        let checked = serde_path_to_error::deserialize::<_, RawServer>(entry)
            .map_err(|e| {
                let field = match e.path().to_string() {
                    inner if inner == "." => table.clone(),
                    inner => format!("{table}.{inner}"),
                };
                FieldError::new(field, e.into_inner().message().to_owned())
            })
            .and_then(|raw| raw.check(&table, file));
        match checked {
            Ok(server) if servers.iter().any(|s| s.name == server.name) => {
                errors.push(ConfigError {
                    file: file.to_owned(),
                    server: Some(server.name.clone()),
                    field: format!("{table}.name"),
                    reason: format!("`{}` is declared twice in this file", server.name),
                });
            }
            Ok(server) => servers.push(server),
            Err(e) => errors.push(ConfigError {
                file: file.to_owned(),
                server: name,
                field: e.field,
                reason: e.reason,
            }),
        }
    }
    (servers, errors)
}

/// Whether `name` can name a server: 1 to 64 lowercase letters, digits, `-` or `_`,
/// starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

impl RawServer {
    /// Checks an entry found at `table` of `file`.
    ///
    /// # Errors
    ///
    /// The first bad field.
    pub fn check(self, table: &str, file: &Path) -> Result<ServerConfig, FieldError> {
        let field = |name: &str| format!("{table}.{name}");
        if !valid_name(&self.name) {
            return Err(FieldError::new(
                field("name"),
                format!(
                    "`{}` must be 1 to 64 lowercase letters, digits, `-` or `_`, starting with a letter or digit",
                    self.name
                ),
            ));
        }
        if self.command.trim().is_empty() {
            return Err(FieldError::new(field("command"), "must not be empty"));
        }
        for key in self.env.keys().chain(&self.inherit_env) {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(FieldError::new(
                    field(if self.env.contains_key(key) {
                        "env"
                    } else {
                        "inherit_env"
                    }),
                    format!("`{key}` is not an environment variable name"),
                ));
            }
        }
        if let Some((key, _)) = self.env.iter().find(|(_, v)| v.contains('\0')) {
            return Err(FieldError::new(
                field("env"),
                format!("the value of `{key}` contains a NUL byte"),
            ));
        }
        let cwd = match self.cwd {
            None => None,
            Some(dir) if dir.is_empty() => {
                return Err(FieldError::new(field("cwd"), "must not be empty"));
            }
            // Relative to the file's folder.
            Some(dir) => Some(file.parent().unwrap_or(Path::new(".")).join(dir)),
        };
        let command = if self.command.contains('/') && Path::new(&self.command).is_relative() {
            let folder = file.parent().unwrap_or(Path::new("."));
            folder.join(&self.command).display().to_string()
        } else {
            self.command
        };
        let call_timeout = match &self.call_timeout {
            Some(text) => within(&field("call_timeout"), text, CALL_TIMEOUT_RANGE)?,
            None => Duration::from_secs(30),
        };
        let restart = self
            .restart
            .check(&field("restart"), RestartType::Permanent)?;
        Ok(ServerConfig {
            name: self.name,
            command,
            args: self.args,
            env: self.env,
            inherit_env: self.inherit_env,
            cwd,
            call_timeout,
            restart,
            source: file.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<ServerConfig, ConfigError> {
        let (mut servers, mut errors) = parse(Path::new("/h/mcp.toml"), text);
        match (servers.pop(), errors.pop()) {
            (Some(s), None) => Ok(s),
            (_, Some(e)) => Err(e),
            (None, None) => panic!("nothing parsed"),
        }
    }

    #[test]
    fn every_field_is_read_and_defaults_fill_the_rest() {
        let s = one(r#"
            [[server]]
            name = "tools"
            command = "my-server"
            args = ["--stdio"]
            env = { TOKEN = "t" }
            inherit_env = ["PATH"]
            cwd = "work"
            call_timeout = "2s"
            [server.restart]
            policy = "transient"
            intensity = 5
            period = "10s"
            backoff = "1ms"
            backoff_max = "1s"
        "#)
        .unwrap();
        assert_eq!(s.name, "tools");
        assert_eq!(s.command, "my-server");
        assert_eq!(s.args, ["--stdio"]);
        assert_eq!(s.env["TOKEN"], "t");
        assert_eq!(s.inherit_env, ["PATH"]);
        assert_eq!(s.cwd.as_deref(), Some(Path::new("/h/work")));
        assert_eq!(s.call_timeout, Duration::from_secs(2));
        assert_eq!(s.restart.kind, RestartType::Transient);
        assert_eq!(s.restart.policy.intensity, 5);
        assert_eq!(s.restart.policy.backoff_max, Duration::from_secs(1));
        let d = one("[[server]]\nname = \"d\"\ncommand = \"x\"\n").unwrap();
        assert_eq!((d.cwd, d.call_timeout), (None, Duration::from_secs(30)));
        assert_eq!(d.restart.kind, RestartType::Permanent);
        assert!(d.env.is_empty() && d.inherit_env.is_empty() && d.args.is_empty());
    }

    #[test]
    fn bad_entries_name_the_field_and_spare_the_others() {
        let (servers, errors) = parse(
            Path::new("/h/mcp.toml"),
            r#"
            [[server]]
            name = "good"
            command = "x"
            [[server]]
            name = "bad"
            command = "x"
            call_timeout = "forever"
            [[server]]
            name = "Bad Name"
            command = "x"
            [[server]]
            name = "typo"
            comand = "x"
            [[server]]
            name = "good"
            command = "y"
        "#,
        );
        assert_eq!(servers.len(), 1, "{servers:?}");
        assert_eq!(servers[0].command, "x");
        let fields: Vec<(&str, Option<&str>)> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.server.as_deref()))
            .collect();
        assert_eq!(
            fields,
            [
                ("server[1].call_timeout", Some("bad")),
                ("server[2].name", Some("Bad Name")),
                ("server[3].comand", Some("typo")),
                ("server[4].name", Some("good")),
            ]
        );
        assert!(errors[2].reason.contains("comand"), "{}", errors[2].reason);
        assert!(
            errors[0]
                .to_string()
                .starts_with("/h/mcp.toml: `server[1].call_timeout`")
        );
    }

    #[test]
    fn whole_file_errors_are_reported_once() {
        let (servers, errors) = parse(Path::new("/h/mcp.toml"), "[[server]\n");
        assert!(servers.is_empty());
        assert_eq!(errors[0].field, ".");
        assert!(errors[0].reason.contains("TOML"), "{}", errors[0].reason);
        let (_, errors) = parse(Path::new("/h/mcp.toml"), "servers = []\n");
        assert!(errors[0].reason.contains("servers"), "{errors:?}");
    }

    #[test]
    fn values_out_of_range_are_refused() {
        for (text, field) in [
            ("call_timeout = \"1ms\"", "server[0].call_timeout"),
            (
                "restart = { policy = \"sometimes\" }",
                "server[0].restart.policy",
            ),
            ("env = { \"A=B\" = \"x\" }", "server[0].env"),
            ("inherit_env = [\"\"]", "server[0].inherit_env"),
            ("cwd = \"\"", "server[0].cwd"),
        ] {
            let e = one(&format!(
                "[[server]]\nname = \"s\"\ncommand = \"x\"\n{text}\n"
            ))
            .unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
        }
        let e = one("[[server]]\nname = \"s\"\ncommand = \" \"\n").unwrap_err();
        assert_eq!(e.field, "server[0].command");
    }

    #[test]
    fn a_later_entry_replaces_an_earlier_one_valid_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home.toml");
        let work = dir.path().join("work.toml");
        std::fs::write(
            &home,
            "[[server]]\nname = \"fixed\"\ncommand = \"x\"\ncall_timeout = \"bad\"\n\
             [[server]]\nname = \"broken\"\ncommand = \"x\"\n",
        )
        .unwrap();
        std::fs::write(
            &work,
            "[[server]]\nname = \"fixed\"\ncommand = \"y\"\n\
             [[server]]\nname = \"broken\"\ncommand = \"y\"\ncall_timeout = \"bad\"\n",
        )
        .unwrap();
        let config = load(&[home, work.clone()]);
        let servers: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(servers, ["fixed"]);
        assert_eq!(config.errors.len(), 1, "{:?}", config.errors);
        assert_eq!(config.errors[0].server.as_deref(), Some("broken"));
        assert_eq!(config.errors[0].file, work);
    }

    #[test]
    fn later_files_override_earlier_ones_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home.toml");
        let work = dir.path().join("work.toml");
        std::fs::write(&home, "[[server]]\nname = \"a\"\ncommand = \"home\"\n[[server]]\nname = \"b\"\ncommand = \"home\"\n").unwrap();
        std::fs::write(&work, "[[server]]\nname = \"a\"\ncommand = \"work\"\n").unwrap();
        let config = load(&[home.clone(), work.clone(), dir.path().join("missing.toml")]);
        assert!(config.errors.is_empty(), "{:?}", config.errors);
        let got: Vec<(&str, &str, &Path)> = config
            .servers
            .iter()
            .map(|s| (s.name.as_str(), s.command.as_str(), s.source.as_path()))
            .collect();
        assert_eq!(
            got,
            [("a", "work", work.as_path()), ("b", "home", home.as_path())]
        );
    }
}
