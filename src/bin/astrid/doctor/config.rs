//! Checks of what a daemon would read at boot: `config.toml`, the capsule manifests of the
//! home and the workspace, the `mcp.toml` files, the workspace's trust, and whether each MCP
//! server's command can be found. Each reuses the kernel's own parser or check, so what passes
//! here is what the daemon accepts.

use std::path::{Path, PathBuf};

use astrid::daemon::{HomeSettings, home_settings};
use astrid::paths::{HomeLayout, workspace_capsules};
use astrid_actors::capsules::CapsuleOrigin;
use astrid_actors::capsules::discovery::{MANIFEST, discover};
use astrid_actors::mcp::config::{self as mcp, ServerConfig};
use astrid_actors::mcp::{find_in_path, is_executable};
use astrid_actors::trust::snapshot::config_dir;
use astrid_actors::trust::{TrustState, WorkspaceTrust};

use super::{Check, Scope};

/// The settings of `config.toml` (the defaults when it is invalid), and its check.
pub(crate) fn settings(home: &HomeLayout) -> (HomeSettings, Check) {
    let file = home.root().join("config.toml");
    match home_settings(home) {
        Ok(settings) if file.exists() => {
            let n = settings.from_file;
            (
                settings,
                Check::pass(
                    "config",
                    format!("{}: {n} settings, all valid", file.display()),
                ),
            )
        }
        Ok(settings) => (
            settings,
            Check::pass("config", "no config.toml: every setting at its default"),
        ),
        Err(e) => {
            let settings = HomeSettings::default();
            (
                settings,
                Check::fail(
                    "config",
                    e,
                    format!(
                        "correct {}: no daemon starts with it (`astrid-daemon --help` lists the keys)",
                        file.display()
                    ),
                ),
            )
        }
    }
}

/// The workspace's `.astrid/`, unless it is the home itself.
fn workspace_dir(scope: &Scope) -> Option<PathBuf> {
    let ws = scope.workspace.as_ref()?;
    let dir = config_dir(ws);
    let home = std::fs::canonicalize(scope.home.root()).ok();
    let same = std::fs::canonicalize(&dir)
        .ok()
        .is_some_and(|d| Some(d) == home);
    (!same).then_some(dir)
}

/// Every capsule manifest of the home and the workspace parses and validates.
pub(crate) fn capsules(scope: &Scope) -> Vec<Check> {
    let mut roots = vec![(CapsuleOrigin::Home, scope.home.capsules())];
    if workspace_dir(scope).is_some()
        && let Some(ws) = &scope.workspace
    {
        roots.push((CapsuleOrigin::Workspace, workspace_capsules(ws)));
    }
    let mut checks = Vec::new();
    let mut valid = 0;
    // Root by root: a workspace capsule must not hide a broken one of the home.
    for root in roots {
        for found in discover(std::slice::from_ref(&root)) {
            match found.manifest {
                Ok(_) => valid += 1,
                Err(e) => checks.push(Check::fail(
                    "capsules",
                    format!("capsule `{}` will not load: {e}", found.name),
                    format!(
                        "correct {} (README, \"Capsule.toml\") or remove {}, then `astrid reload`",
                        found.dir.join(MANIFEST).display(),
                        found.dir.display()
                    ),
                )),
            }
        }
    }
    if checks.is_empty() {
        checks.push(Check::pass(
            "capsules",
            format!("{valid} capsule manifests, all valid"),
        ));
    }
    checks
}

/// An `mcp.toml` and whether its servers may run.
struct McpFile {
    path: PathBuf,
    trusted: bool,
}

fn mcp_files_of(scope: &Scope) -> Vec<McpFile> {
    let mut files = vec![McpFile {
        path: scope.home.root().join(mcp::FILE),
        trusted: true,
    }];
    if let Some(dir) = workspace_dir(scope) {
        files.push(McpFile {
            path: dir.join(mcp::FILE),
            trusted: trust_of(scope).is_some_and(|s| s.allows()),
        });
    }
    files.retain(|f| f.path.exists());
    files
}

/// The servers of every `mcp.toml` that parses, with whether they may run.
fn servers(scope: &Scope) -> Vec<(ServerConfig, bool)> {
    let mut all = Vec::new();
    for file in mcp_files_of(scope) {
        if let Ok(text) = std::fs::read_to_string(&file.path) {
            let (servers, _) = mcp::parse(&file.path, &text);
            all.extend(servers.into_iter().map(|s| (s, file.trusted)));
        }
    }
    all
}

/// Every `mcp.toml` entry is valid.
pub(crate) fn mcp_files(scope: &Scope) -> Vec<Check> {
    let files = mcp_files_of(scope);
    let mut checks = Vec::new();
    let mut servers = 0;
    for file in &files {
        let path = &file.path;
        let (found, errors) = match std::fs::read_to_string(path) {
            Ok(text) => mcp::parse(path, &text),
            Err(e) => (
                Vec::new(),
                vec![mcp::ConfigError {
                    file: path.clone(),
                    server: None,
                    field: ".".into(),
                    reason: format!("cannot be read: {e}"),
                }],
            ),
        };
        servers += found.len();
        for error in errors {
            let which = error
                .server
                .as_ref()
                .map_or_else(String::new, |s| format!("server `{s}` will not run: "));
            checks.push(Check::fail(
                "mcp.toml",
                format!("{which}{error}"),
                format!(
                    "correct `{}` in {} (README, \"MCP servers\"), then `astrid mcp reload`",
                    error.field,
                    path.display()
                ),
            ));
        }
    }
    if checks.is_empty() {
        let detail = if files.is_empty() {
            "no mcp.toml".to_owned()
        } else {
            format!("{} file(s), {servers} servers, all valid", files.len())
        };
        checks.push(Check::pass("mcp.toml", detail));
    }
    checks
}

fn trust_of(scope: &Scope) -> Option<astrid_actors::trust::TrustInfo> {
    let ws = scope.workspace.clone()?;
    Some(WorkspaceTrust::new(scope.home.root(), ws).check())
}

/// Whether the workspace's own capsules and `mcp.toml` may run (they do not until trusted).
pub(crate) fn trust(scope: &Scope) -> Check {
    let Some(ws) = &scope.workspace else {
        return Check::warn(
            "trust",
            "the workspace (-w, or the current folder) cannot be resolved",
            "run in an existing folder, or give one with -w",
        );
    };
    let Some(info) = trust_of(scope) else {
        return Check::pass("trust", "no workspace");
    };
    let shown = ws.display();
    match info.state {
        TrustState::None => Check::pass(
            "trust",
            format!("workspace {shown} has no capsules or mcp.toml of its own"),
        ),
        TrustState::Home => Check::pass(
            "trust",
            format!("workspace {shown}: its .astrid is the home"),
        ),
        TrustState::Trusted => Check::pass(
            "trust",
            format!("workspace {shown} is trusted, its .astrid/ unchanged since"),
        ),
        TrustState::Untrusted | TrustState::Changed => {
            let contents = untrusted_contents(ws);
            Check::warn(
                "trust",
                format!(
                    "{} ({contents}: none of it runs)",
                    info.message
                        .unwrap_or_else(|| format!("workspace {shown} is not trusted"))
                ),
                format!(
                    "review {}, then `astrid trust {shown}`",
                    config_dir(ws).display()
                ),
            )
        }
    }
}

/// What an untrusted workspace brings: its capsule folders and its `mcp.toml`.
fn untrusted_contents(ws: &Path) -> String {
    let mut parts = Vec::new();
    let capsules: Vec<String> = std::fs::read_dir(workspace_capsules(ws))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().join(MANIFEST).is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if !capsules.is_empty() {
        let mut capsules = capsules;
        capsules.sort();
        parts.push(format!("capsules {}", capsules.join(", ")));
    }
    if config_dir(ws).join(mcp::FILE).exists() {
        parts.push(mcp::FILE.to_owned());
    }
    if parts.is_empty() {
        "files in .astrid/".to_owned()
    } else {
        parts.join(" and ")
    }
}

/// Where `server`'s command is: its path when it names one, else the first in `PATH`.
fn resolve(server: &ServerConfig) -> Option<PathBuf> {
    if server.command.contains('/') {
        let path = PathBuf::from(&server.command);
        return is_executable(&path).then_some(path);
    }
    find_in_path(&server.command)
}

/// Every MCP server's command (of `mcp.toml` files and capsule manifests) is an executable
/// file, or a name found in `PATH`.
pub(crate) fn mcp_commands(scope: &Scope) -> Vec<Check> {
    let mut all = servers(scope);
    let mut roots = vec![scope.home.capsules()];
    if let (Some(ws), Some(_)) = (&scope.workspace, workspace_dir(scope)) {
        roots.push(workspace_capsules(ws));
    }
    let ws_trusted = trust_of(scope).is_none_or(|s| s.allows());
    for (i, root) in roots.into_iter().enumerate() {
        let origin = if i == 0 {
            CapsuleOrigin::Home
        } else {
            CapsuleOrigin::Workspace
        };
        for found in discover(&[(origin, root)]) {
            if let Ok(manifest) = found.manifest {
                let trusted = i == 0 || ws_trusted;
                all.extend(manifest.mcp_servers.into_iter().map(|s| (s, trusted)));
            }
        }
    }
    let mut checks = Vec::new();
    let mut resolved = Vec::new();
    for (server, trusted) in &all {
        if let Some(path) = resolve(server) {
            resolved.push(format!("{} → {}", server.name, path.display()));
            continue;
        }
        let detail = format!(
            "server `{}` ({}): `{}` is not {}",
            server.name,
            server.source.display(),
            server.command,
            if server.command.contains('/') {
                "an executable file"
            } else {
                "found in PATH"
            }
        );
        let fix = format!(
            "install it, or give its full path as `command` in {} (the daemon looks a bare name up in its own PATH; under systemd, the unit's)",
            server.source.display()
        );
        checks.push(if *trusted {
            Check::fail("mcp commands", detail, fix)
        } else {
            Check::warn(
                "mcp commands",
                format!("{detail} (untrusted: it does not run)"),
                fix,
            )
        });
    }
    if checks.is_empty() {
        let detail = if resolved.is_empty() {
            "no MCP servers configured".to_owned()
        } else {
            resolved.join(", ")
        };
        checks.push(Check::pass("mcp commands", detail));
    }
    checks
}
