//! `astrid doctor`: checks of the home and of what the daemon would load, each a plain
//! function returning [`Check`]s: the home's folders (`home.rs`: modes, owner, stale session
//! files, the open-file limit, free disk), the configuration (`config.rs`: `config.toml`,
//! capsule manifests, `mcp.toml` files, workspace trust, MCP commands in `PATH`) and the
//! ledger (`ledger.rs`: the audit chain, the ledger's size). It never starts a daemon and
//! never creates or changes a file; a running daemon is only asked to verify the audit
//! chain, which it holds open.

mod config;
mod home;
mod ledger;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use astrid::client::Client;
use astrid::daemon::HomeSettings;
use astrid::instance::InstanceLock;
use astrid::paths::HomeLayout;
use serde::Serialize;

use crate::CliError;
use crate::daemon::{CLIENT_NAME, Target};

/// How long a running daemon has to accept the connection.
const CONNECT_DEADLINE: Duration = Duration::from_secs(2);

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Pass,
    Warn,
    Fail,
}

/// One finding: what was checked, how it went, one line of detail, and (unless it passed)
/// what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Check {
    #[serde(rename = "check")]
    pub(crate) name: &'static str,
    pub(crate) status: Status,
    pub(crate) detail: String,
    pub(crate) fix: Option<String>,
}

impl Check {
    pub(crate) fn pass(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name: check,
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    pub(crate) fn warn(
        check: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::with_fix(check, Status::Warn, detail.into(), fix.into())
    }

    pub(crate) fn fail(
        check: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::with_fix(check, Status::Fail, detail.into(), fix.into())
    }

    fn with_fix(name: &'static str, status: Status, detail: String, fix: String) -> Self {
        Self {
            name,
            status,
            detail,
            fix: Some(fix),
        }
    }
}

/// What the checks look at.
pub(crate) struct Scope {
    pub(crate) home: HomeLayout,
    /// The command's workspace, canonical (`None` when it cannot be resolved).
    pub(crate) workspace: Option<PathBuf>,
    /// `config.toml`'s settings, or the defaults when it is invalid.
    pub(crate) settings: HomeSettings,
}

/// Runs every check and prints them; fails when one failed.
pub(crate) async fn run(target: &Target, json: bool) -> Result<(), CliError> {
    let (settings, config_check) = config::settings(&target.home);
    let workspace = target.workspace().ok();
    let scope = Scope {
        home: target.home.clone(),
        workspace,
        settings,
    };
    let daemon = connect(target).await;
    let mut checks = home::home(&scope.home);
    checks.extend(home::sessions(&scope.home));
    checks.push(home::open_files(&scope.settings));
    checks.push(home::disk(&scope.home, &scope.settings));
    checks.push(config_check);
    checks.extend(config::capsules(&scope));
    checks.extend(config::mcp_files(&scope));
    checks.push(config::trust(&scope));
    checks.extend(config::mcp_commands(&scope));
    checks.push(ledger::audit_chain(&scope.home, daemon.as_ref()).await);
    checks.extend(ledger::size(&scope.home, &scope.settings));
    let text = if json {
        let mut text = serde_json::to_string_pretty(&checks).map_err(std::io::Error::other)?;
        text.push('\n');
        text
    } else {
        render(&checks)
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // The reader went away (`astrid doctor | head`): the status still tells.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed > 0 {
        return Err(CliError::ChecksFailed { count: failed });
    }
    Ok(())
}

/// The session's daemon, if one runs and answers.
async fn connect(target: &Target) -> Option<Client> {
    if !InstanceLock::is_held(&target.files.lock()) {
        return None;
    }
    tokio::time::timeout(
        CONNECT_DEADLINE,
        Client::connect(&target.files, CLIENT_NAME),
    )
    .await
    .ok()?
    .ok()
}

/// The checks as text: one line each, and the fix below those that did not pass.
fn render(checks: &[Check]) -> String {
    use std::fmt::Write as _;
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let status = match c.status {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        };
        let _ = writeln!(out, "{status}  {:width$}  {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "      {:width$}  fix: {fix}", "");
        }
    }
    let count = |s| checks.iter().filter(|c| c.status == s).count();
    let _ = writeln!(
        out,
        "{} passed, {} warnings, {} failed",
        count(Status::Pass),
        count(Status::Warn),
        count(Status::Fail)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_puts_the_fix_under_its_check() {
        let text = render(&[
            Check::pass("home", "fine"),
            Check::fail("disk", "full", "free some"),
        ]);
        assert_eq!(
            text,
            "pass  home  fine\nfail  disk  full\n            fix: free some\n1 passed, 0 warnings, 1 failed\n"
        );
        let json = serde_json::to_value(Check::warn("x", "d", "f")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"check": "x", "status": "warn", "detail": "d", "fix": "f"})
        );
    }
}
