//! `astrid settings`: lists, sets and unsets a capsule's settings. A secret's value is read
//! from standard input, or at a prompt that does not echo it, and never from the command
//! line, where it would stay in the shell's history and be visible to `ps`.

use std::fmt::Write as _;
use std::io::{self, BufRead, IsTerminal, Read, Write};

use astrid::protocol::{CapsuleSetting, Request, SettingChanged, SettingValue};

use crate::args::SettingsCommand;
use crate::{CliError, show};

/// Runs one `astrid settings` command.
pub(crate) async fn run(
    client: &astrid::client::Client,
    command: SettingsCommand,
    json: bool,
) -> Result<(), CliError> {
    match command {
        SettingsCommand::Ls { capsule } => {
            let list: Vec<CapsuleSetting> = client.call(Request::ListSettings { capsule }).await?;
            show(json, &list, |l| render(l))
        }
        SettingsCommand::Set {
            capsule,
            name,
            value,
        } => {
            let list: Vec<CapsuleSetting> = client
                .call(Request::ListSettings {
                    capsule: capsule.clone(),
                })
                .await?;
            let secret = list.iter().any(|s| s.name == name && s.secret);
            let value = match value {
                Some(_) if secret => return Err(CliError::SecretOnCommandLine(name)),
                Some(value) => value,
                None => read_value(&capsule, &name, secret)?,
            };
            let done: SettingChanged = client
                .call(Request::SetSetting {
                    capsule,
                    name,
                    value: SettingValue(value),
                })
                .await?;
            show(json, &done, |d| format!("set {}/{}\n", d.capsule, d.name))
        }
        SettingsCommand::Unset { capsule, name } => {
            let done: SettingChanged = client.call(Request::UnsetSetting { capsule, name }).await?;
            show(json, &done, |d| {
                let what = if d.changed { "unset" } else { "was not set" };
                format!("{what}: {}/{}\n", d.capsule, d.name)
            })
        }
    }
}

/// A value from standard input: at a prompt (not echoed for a secret) on a terminal, else
/// all of it, without one final newline.
fn read_value(capsule: &str, name: &str, secret: bool) -> Result<String, CliError> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        let mut text = String::new();
        stdin.lock().read_to_string(&mut text)?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        return Ok(text);
    }
    eprint!("{capsule}/{name}: ");
    io::stderr().flush()?;
    let echo = secret.then(|| EchoOff::new(&stdin)).transpose()?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    drop(echo);
    if secret {
        eprintln!();
    }
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// The terminal's echo, off until dropped.
struct EchoOff<'a> {
    stdin: &'a io::Stdin,
    saved: rustix::termios::Termios,
}

impl<'a> EchoOff<'a> {
    fn new(stdin: &'a io::Stdin) -> io::Result<Self> {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let saved = tcgetattr(stdin)?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        tcsetattr(stdin, OptionalActions::Now, &quiet)?;
        Ok(Self { stdin, saved })
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            self.stdin,
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

fn render(list: &[CapsuleSetting]) -> String {
    if list.is_empty() {
        return "the capsule declares no settings\n".into();
    }
    let mut out = String::new();
    for s in list {
        let state = match (&s.value, s.set, &s.default) {
            (Some(value), _, _) => format!("= {value:?}"),
            (None, true, _) => "set (secret)".into(),
            (None, false, Some(default)) => format!("default {default:?}"),
            (None, false, None) => "NOT SET (required)".into(),
        };
        let kind = if s.secret { " [secret]" } else { "" };
        let _ = writeln!(out, "{}{kind}  {state}", s.name);
        if let Some(description) = &s.description {
            let _ = writeln!(out, "    {description}");
        }
    }
    out
}
