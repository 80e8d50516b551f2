//! `astrid logs`: the daemon's log, read from its daily files (no daemon needed), filtered
//! by level, age and actor, and followed with `-f` across the daily rotation. A running
//! daemon that logs to the systemd journal writes no files: the command says to use
//! `journalctl` instead.

mod files;
pub(crate) mod line;

use std::io::{self, Write as _};
use std::time::{Duration, SystemTime};

use astrid::client::Client;

use self::line::{Actor, Filter, Sieve};
use crate::CliError;
use crate::args::LogsArgs;
use crate::daemon::{CLIENT_NAME, Target};

/// How long a running daemon has to say where it logs.
const ASK_DEADLINE: Duration = Duration::from_secs(2);

/// Runs `astrid logs`.
pub(crate) async fn run(target: &Target, args: LogsArgs) -> Result<(), CliError> {
    if logs_to_journal(target).await {
        let follow = if args.follow { " -f" } else { "" };
        return Err(CliError::Journal(format!(
            "journalctl --user -u astrid{follow}"
        )));
    }
    let since = args.since.map(|d| {
        SystemTime::now()
            .checked_sub(d)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    });
    let mut sieve = Sieve::new(Filter {
        level: args.level,
        since,
        actor: args.actor.as_deref().map(Actor::new),
    });
    let dir = target.home.logs();
    let (lines, cursor) = files::tail(&dir, args.lines, &mut sieve, args.follow)?;
    if lines.is_empty() && cursor.is_none() && files::daily_files(&dir)?.is_empty() {
        eprintln!(
            "astrid: no log files in {} (a daemon writes them once it starts)",
            dir.display()
        );
    }
    // Standard output is line-buffered: each line shows as it is printed, even in a pipe.
    let mut out = io::stdout().lock();
    let mut print = |line: &str| writeln!(out, "{line}");
    let printed = lines.iter().try_for_each(|l| print(l)).and_then(|()| {
        if args.follow {
            files::follow(&dir, cursor, &mut sieve, &mut print)
        } else {
            Ok(())
        }
    });
    match printed {
        // The reader went away (`astrid logs | head`): that ends the command, quietly.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Whether the session's daemon runs and logs to the journal rather than to files.
async fn logs_to_journal(target: &Target) -> bool {
    if !target.files.socket().exists() {
        return false;
    }
    let ask = async {
        let client = Client::connect(&target.files, CLIENT_NAME).await.ok()?;
        client.status().await.ok()
    };
    tokio::time::timeout(ASK_DEADLINE, ask)
        .await
        .ok()
        .flatten()
        .is_some_and(|status| status.logs_to_journal)
}
