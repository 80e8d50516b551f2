//! What `astrid` says about itself without a daemon: shell completions
//! (`astrid completions bash|zsh|fish`, from `clap_complete`) and manual pages (`astrid man`,
//! from `clap_mangen`: the main page on standard output, or one page per command written
//! into a folder).

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::CliError;
use crate::args::Cli;

/// Prints the completion script for `shell`.
pub(crate) fn completions(shell: Shell) -> Result<(), CliError> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "astrid", &mut script);
    print(&script)
}

/// Writes `bytes` to standard output; a reader that stopped early (`| head`) is no error.
fn print(bytes: &[u8]) -> Result<(), CliError> {
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Prints the main page, or writes `astrid.1` and `astrid-<command>.1` for each command
/// into `out`.
pub(crate) fn man(out: Option<&Path>) -> Result<(), CliError> {
    let cmd = Cli::command();
    let Some(dir) = out else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        return print(&page);
    };
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for page in std::iter::once(cmd.clone()).chain(
        cmd.get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.clone().name(format!("astrid-{}", c.get_name()))),
    ) {
        let file = dir.join(format!("{}.1", page.get_name()));
        let mut bytes = Vec::new();
        clap_mangen::Man::new(page).render(&mut bytes)?;
        std::fs::write(&file, bytes)?;
        written.push(file);
    }
    println!(
        "wrote {} manual pages into {}",
        written.len(),
        dir.display()
    );
    Ok(())
}
