//! The interactive session: reads lines from stdin, runs built-in slash commands and
//! capsules' slash commands, publishes other lines as `user.prompt`, and prints every event
//! it receives except its own prompts. A capsule's use of an `ask:` grant shows as a
//! question, answered with `/approve` or `/deny`.
//!
//! Lines are run in order on a connection of their own (`worker`), so that the session
//! keeps reading events and answers while a command runs: the command may be the one
//! waiting for the approval.

use astrid::client::Client;
use astrid::protocol::{
    APPROVAL_ANSWERED, APPROVAL_REQUESTED, ApprovalSettled, CommandInfo, CommandOutput,
    PendingApproval, Request, Subscribed, to_payload,
};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::{CliError, approvals, render};

/// Lines typed ahead of the command running.
const TYPED_AHEAD: usize = 64;

#[derive(Serialize)]
struct Prompt<'a> {
    text: &'a str,
}

pub(crate) async fn run(mut client: Client, worker: Client) -> Result<(), CliError> {
    let me = worker
        .welcome()
        .connection
        .map(|n| format!("client:{n}"))
        .unwrap_or_default();
    let _: Subscribed = client
        .call(Request::Subscribe {
            pattern: ">".into(),
        })
        .await?;
    println!(
        "connected to {} (session {}); type /commands for help, /quit to leave",
        client
            .welcome()
            .daemon
            .as_deref()
            .unwrap_or("astrid-daemon"),
        client.welcome().session.as_deref().unwrap_or("?")
    );
    let (lines_out, mut lines_in) = mpsc::channel::<String>(TYPED_AHEAD);
    let running = tokio::spawn(async move {
        while let Some(line) = lines_in.recv().await {
            print!("{}", handle_line(&worker, &line).await);
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let line = line.trim();
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.first().and_then(|w| w.strip_prefix('/')) {
                    Some("quit" | "exit") => break,
                    Some(name) => {
                        if let Some(answer) = approvals::chat_command(&client, name, &words[1..]).await {
                            print!("{answer}");
                            continue;
                        }
                    }
                    None if line.is_empty() => continue,
                    None => {}
                }
                if lines_out.send(line.to_owned()).await.is_err() {
                    break;
                }
            }
            event = client.next_event() => {
                let Some(event) = event else {
                    println!("the daemon closed the connection");
                    break;
                };
                let own_prompt = event.source == me && event.topic == "user.prompt";
                if own_prompt {
                    continue;
                }
                if event.topic == APPROVAL_REQUESTED
                    && let Ok(request) = rmpv::ext::from_value::<PendingApproval>(event.payload.clone())
                {
                    print!("{}", approvals::question(&request));
                } else if event.topic == APPROVAL_ANSWERED
                    && let Ok(settled) = rmpv::ext::from_value::<ApprovalSettled>(event.payload.clone())
                {
                    print!("{}", approvals::settled_line(&settled));
                } else {
                    println!("{}", render::event(&event));
                }
            }
        }
    }
    drop(lines_out);
    // What was typed before the end still runs (a script piped in ends with its input).
    let _ = running.await;
    Ok(())
}

/// Runs one line: a built-in or a capsule's slash command, or a prompt to publish; returns
/// what to print.
async fn handle_line(client: &Client, line: &str) -> String {
    let Some(command) = line.strip_prefix('/') else {
        let sent = match to_payload(&Prompt { text: line }) {
            Ok(payload) => client
                .call::<astrid::protocol::Published>(Request::Publish {
                    topic: "user.prompt".into(),
                    payload,
                })
                .await
                .map(|_| String::new()),
            Err(e) => return format!("error: {e}\n"),
        };
        return sent.unwrap_or_else(|e| format!("error: {e}\n"));
    };
    let name = command.split_whitespace().next().unwrap_or_default();
    let result = match name {
        "status" => client.status().await.map(|s| render::status(&s)),
        "capsules" => client.capsules().await.map(|c| render::capsules(&c)),
        "ps" => client.tree().await.map(|t| render::tree(&t)),
        "commands" | "help" => client
            .call::<Vec<CommandInfo>>(Request::GetCommands)
            .await
            .map(|c| render::commands(&c)),
        other => client
            .call::<CommandOutput>(Request::InvokeCommand {
                name: other.to_owned(),
                args: command
                    .split_whitespace()
                    .skip(1)
                    .map(str::to_owned)
                    .collect(),
            })
            .await
            .map(|out| render::output(&out)),
    };
    result.unwrap_or_else(|e| format!("error: {e}\n"))
}
