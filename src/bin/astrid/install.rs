//! `astrid install`: shows what a capsule folder (or a `.tar.gz` of one) brings (`InspectCapsule`), asks to confirm
//! unless `--yes`, then installs exactly what was shown (`InstallCapsule` with its digest).

use std::fmt::Write as _;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;

use astrid::protocol::{InstallPlan, InstallReport, Request};

use crate::{CliError, show};

/// Runs `astrid install PATH [--yes]`.
pub(crate) async fn install(
    client: &astrid::client::Client,
    path: &Path,
    yes: bool,
    json: bool,
) -> Result<(), CliError> {
    let path = std::path::absolute(path)?.display().to_string();
    let plan: InstallPlan = client
        .call(Request::InspectCapsule { path: path.clone() })
        .await?;
    if !json {
        crate::emit(&describe(&plan))?;
    }
    if !yes && !confirm()? {
        return Err(CliError::NotConfirmed);
    }
    let report: InstallReport = client
        .call(Request::InstallCapsule {
            path,
            digest: plan.digest.clone(),
        })
        .await?;
    show(json, &report, |r| match &r.replaced {
        Some(old) => format!(
            "installed {} {} (was {old}) in {}\n",
            r.name, r.version, r.path
        ),
        None => format!("installed {} {} in {}\n", r.name, r.version, r.path),
    })
}

/// Reads `y` or `yes` (any case) from standard input, after a prompt on a terminal.
fn confirm() -> Result<bool, CliError> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        eprint!("Install it? [y/N] ");
        io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

fn describe(p: &InstallPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} {} ({})", p.name, p.version, p.path);
    if let Some(d) = &p.description {
        let _ = writeln!(out, "  {d}");
    }
    if let Some(old) = &p.installed_version {
        let _ = writeln!(out, "  replaces the installed version {old}");
    }
    let list = |items: &[String]| {
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(", ")
        }
    };
    let _ = writeln!(out, "  commands: {}", list(&p.commands));
    let _ = writeln!(out, "  grants: {}", list(&p.grants));
    if p.installed_version.is_some() {
        for g in &p.added_grants {
            let _ = writeln!(out, "  + grant {g} (new)");
        }
        for g in &p.removed_grants {
            let _ = writeln!(out, "  - grant {g} (dropped)");
        }
    }
    for s in &p.settings {
        let what = match (s.secret, s.required) {
            (true, _) => "secret, required",
            (false, true) => "required",
            (false, false) => "has a default",
        };
        let _ = writeln!(out, "  setting {} ({what})", s.name);
    }
    out
}
