//! The home of a `--fresh` run: a new temporary home and workspace, with the plan's capsules
//! copied into the home and its MCP servers written into the home's `mcp.toml`; removed
//! when dropped.

use std::path::Path;

use super::ChaosError;
use super::plan::Plan;
use crate::CliError;
use crate::args::Global;

/// A fresh home and workspace (`--fresh`), with the plan's capsules in the home and its
/// MCP servers in the home's `mcp.toml`; removed when dropped.
pub(super) struct Fresh {
    dir: tempfile::TempDir,
}

impl Fresh {
    pub(super) fn new(plan: &Plan) -> Result<Self, CliError> {
        let dir = tempfile::Builder::new()
            .prefix("astrid-chaos-")
            .tempdir_in("/tmp")
            .map_err(ChaosError::Fresh)?;
        let capsules = dir.path().join("home").join("capsules");
        std::fs::create_dir_all(&capsules).map_err(ChaosError::Fresh)?;
        std::fs::create_dir_all(dir.path().join("workspace")).map_err(ChaosError::Fresh)?;
        for (i, folder) in plan.capsules.iter().enumerate() {
            copy_capsule(folder, &capsules).map_err(|e| ChaosError::CapsuleFolder {
                file: plan.file.clone(),
                key: format!("capsules[{i}]"),
                folder: folder.clone(),
                reason: e.to_string(),
            })?;
        }
        if !plan.mcp.is_empty() {
            let servers: Vec<toml::Value> = plan
                .mcp
                .iter()
                .map(|m| {
                    let mut table = toml::Table::new();
                    table.insert("name".into(), m.name.clone().into());
                    table.insert("command".into(), m.command.clone().into());
                    let args: Vec<toml::Value> = m.args.iter().map(|a| a.clone().into()).collect();
                    table.insert("args".into(), args.into());
                    toml::Value::Table(table)
                })
                .collect();
            let mut file = toml::Table::new();
            file.insert("server".into(), servers.into());
            std::fs::write(dir.path().join("home").join("mcp.toml"), file.to_string())
                .map_err(ChaosError::Fresh)?;
        }
        Ok(Self { dir })
    }

    /// The global options with this home and workspace.
    pub(super) fn global(&self, global: &Global) -> Global {
        Global {
            home: Some(self.dir.path().join("home")),
            session: uuid::Uuid::nil(),
            workspace: Some(self.dir.path().join("workspace")),
            idle_grace: global.idle_grace,
            json: global.json,
        }
    }
}

/// Copies the files of capsule folder `src` (not its subfolders: sources and build output
/// are not needed to run it) into `root/<folder name>`.
fn copy_capsule(src: &Path, root: &Path) -> std::io::Result<()> {
    let name = src
        .canonicalize()?
        .file_name()
        .map(ToOwned::to_owned)
        .ok_or_else(|| std::io::Error::other("a folder without a name"))?;
    let dir = root.join(name);
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
        }
    }
    Ok(())
}
