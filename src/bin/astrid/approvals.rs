//! Approvals from the command line and the interactive session: a capsule's use of an
//! `ask:` grant waits until a client answers it (`once`, `always`, `deny`).
//! `astrid approvals ls|approve ID [--always]|deny ID`, the chat's `/approvals`,
//! `/approve [ID] [always]` and `/deny [ID]`, and how a request and its settlement read.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use astrid::client::Client;
use astrid::protocol::{ApprovalAnswer, ApprovalSettled, PendingApproval, Request};

use crate::args::ApprovalsCommand;
use crate::{CliError, show};

/// Runs `astrid approvals ...`.
pub(crate) async fn run(
    client: &Client,
    cmd: ApprovalsCommand,
    json: bool,
) -> Result<(), CliError> {
    match cmd {
        ApprovalsCommand::Ls => {
            let waiting: Vec<PendingApproval> = client.call(Request::ListApprovals).await?;
            show(json, &waiting, |w| list(w))
        }
        ApprovalsCommand::Approve { id, always } => {
            let answer = if always {
                ApprovalAnswer::Always
            } else {
                ApprovalAnswer::Once
            };
            let settled = answer_request(client, id, answer).await?;
            show(json, &settled, settled_line)
        }
        ApprovalsCommand::Deny { id } => {
            let settled = answer_request(client, id, ApprovalAnswer::Deny).await?;
            show(json, &settled, settled_line)
        }
    }
}

async fn answer_request(
    client: &Client,
    id: u64,
    answer: ApprovalAnswer,
) -> Result<ApprovalSettled, CliError> {
    Ok(client.call(Request::AnswerApproval { id, answer }).await?)
}

/// The chat's `/approvals`, `/approve [ID] [always]` and `/deny [ID]` (`name` and its
/// arguments `args`); `None` for another command. Without an ID, the one request waiting.
pub(crate) async fn chat_command(client: &Client, name: &str, args: &[&str]) -> Option<String> {
    let answer = match (name, args.last().copied()) {
        ("approvals", _) => {
            return Some(
                match client
                    .call::<Vec<PendingApproval>>(Request::ListApprovals)
                    .await
                {
                    Ok(waiting) => list(&waiting),
                    Err(e) => format!("error: {e}\n"),
                },
            );
        }
        ("approve", Some("always")) => ApprovalAnswer::Always,
        ("approve", _) => ApprovalAnswer::Once,
        ("deny", _) => ApprovalAnswer::Deny,
        _ => return None,
    };
    let id = match args.first().filter(|a| **a != "always") {
        Some(text) => match text.trim_start_matches('#').parse() {
            Ok(id) => id,
            Err(_) => return Some(format!("error: `{text}` is not a request number\n")),
        },
        None => match client
            .call::<Vec<PendingApproval>>(Request::ListApprovals)
            .await
        {
            Ok(waiting) if waiting.len() == 1 => waiting[0].id,
            Ok(waiting) if waiting.is_empty() => return Some("no approval is waiting\n".into()),
            Ok(_) => {
                return Some(
                    "several approvals are waiting: give the number (/approvals)\n".into(),
                );
            }
            Err(e) => return Some(format!("error: {e}\n")),
        },
    };
    // Settled, the request is announced as `approval.answered`: the session prints that.
    Some(match answer_request(client, id, answer).await {
        Ok(_) => String::new(),
        Err(e) => format!("error: {e}\n"),
    })
}

fn seconds_left(expires_ms: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    expires_ms.saturating_sub(now).div_ceil(1000)
}

/// How the chat shows a new request.
pub(crate) fn question(p: &PendingApproval) -> String {
    format!(
        "approval #{}: capsule `{}` asks to use {} (grant `{}`); answer /approve {} (this \
         time), /approve {} always, or /deny {} within {} s\n",
        p.id,
        p.capsule,
        p.access,
        p.grant,
        p.id,
        p.id,
        p.id,
        seconds_left(p.expires_ms)
    )
}

/// One line for a settled request.
pub(crate) fn settled_line(s: &ApprovalSettled) -> String {
    let verdict = if s.approved {
        "approved"
    } else {
        "not approved"
    };
    format!(
        "approval #{} ({}): {verdict}: {}\n",
        s.id, s.capsule, s.outcome
    )
}

fn list(waiting: &[PendingApproval]) -> String {
    if waiting.is_empty() {
        return "no approval is waiting\n".into();
    }
    waiting.iter().fold(String::new(), |mut out, p| {
        let _ = writeln!(
            out,
            "#{}  {}  {}  (grant `{}`, {} s left)",
            p.id,
            p.capsule,
            p.access,
            p.grant,
            seconds_left(p.expires_ms)
        );
        out
    })
}
