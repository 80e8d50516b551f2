//! The interactive session: reads lines from stdin, runs built-in slash commands and
//! capsules' slash commands, publishes other lines as `user.prompt`, and prints every event
//! it receives except its own prompts.

use astrid::client::Client;
use astrid::protocol::{CommandInfo, CommandOutput, Request, Subscribed, to_payload};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{CliError, render};

#[derive(Serialize)]
struct Prompt<'a> {
    text: &'a str,
}

pub(crate) async fn run(mut client: Client) -> Result<(), CliError> {
    let me = client
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
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                if !handle_line(&client, line.trim()).await? {
                    break;
                }
            }
            event = client.next_event() => {
                let Some(event) = event else {
                    println!("the daemon closed the connection");
                    break;
                };
                let own_prompt = event.source == me && event.topic == "user.prompt";
                if !own_prompt {
                    println!("{}", render::event(&event));
                }
            }
        }
    }
    Ok(())
}

/// Returns `false` when the session should end.
async fn handle_line(client: &Client, line: &str) -> Result<bool, CliError> {
    if line.is_empty() {
        return Ok(true);
    }
    let Some(command) = line.strip_prefix('/') else {
        let payload = to_payload(&Prompt { text: line }).map_err(std::io::Error::other)?;
        let sent = client
            .call::<astrid::protocol::Published>(Request::Publish {
                topic: "user.prompt".into(),
                payload,
            })
            .await;
        if let Err(e) = sent {
            println!("error: {e}");
        }
        return Ok(true);
    };
    let name = command.split_whitespace().next().unwrap_or_default();
    let result = match name {
        "quit" | "exit" => return Ok(false),
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
    match result {
        Ok(text) => print!("{text}"),
        Err(e) => println!("error: {e}"),
    }
    Ok(true)
}
