//! Lexical validation and normalisation of workspace paths. Pure: no file system access.
//!
//! Every path a client gives the VFS is relative to the workspace root. [`VfsPath::parse`]
//! rejects what can never be valid (empty, absolute, `..`, NUL bytes, over
//! [`MAX_PATH_LEN`] bytes) and normalises the rest (`./a//b/` becomes `a/b`; `.` is the
//! root). It cannot see symbolic links: escapes through them are stopped by cap-std when
//! the path is opened (see the parent module).

use std::path::Path;

/// Longest accepted path, in bytes (as given, before normalisation).
pub const MAX_PATH_LEN: usize = 4096;

/// Reason: the path is the empty string.
pub const EMPTY: &str = "is empty; use `.` for the workspace root";
/// Reason: the path is longer than [`MAX_PATH_LEN`] bytes.
pub const TOO_LONG: &str = "is longer than 4096 bytes";
/// Reason: the path contains a NUL byte.
pub const NUL: &str = "contains a NUL byte";
/// Reason: the path is absolute.
pub const ABSOLUTE: &str = "is absolute; give a path relative to the workspace root";
/// Reason: the path has a `..` component.
pub const PARENT: &str = "contains `..`; paths may not climb out of a directory";
/// Reason: the operation needs a path below the root, but the path names the root itself.
pub const ROOT: &str = "names the workspace root itself; give a path inside it";

/// A validated, normalised path relative to the workspace root.
///
/// Components are separated by single `/`, with no `.` or empty components and no `..`.
/// The root itself is written `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VfsPath {
    /// Normalised text; empty for the root.
    text: String,
}

impl VfsPath {
    /// Validates and normalises `raw`.
    ///
    /// # Errors
    ///
    /// One of this module's reason constants ([`EMPTY`], [`TOO_LONG`], [`NUL`],
    /// [`ABSOLUTE`], [`PARENT`]), checked in that order.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.is_empty() {
            return Err(EMPTY);
        }
        if raw.len() > MAX_PATH_LEN {
            return Err(TOO_LONG);
        }
        if raw.contains('\0') {
            return Err(NUL);
        }
        if raw.starts_with('/') {
            return Err(ABSOLUTE);
        }
        let mut text = String::with_capacity(raw.len());
        for component in raw.split('/') {
            match component {
                "" | "." => {}
                ".." => return Err(PARENT),
                name => {
                    if !text.is_empty() {
                        text.push('/');
                    }
                    text.push_str(name);
                }
            }
        }
        Ok(Self { text })
    }

    /// Whether this is the workspace root (`.`).
    pub fn is_root(&self) -> bool {
        self.text.is_empty()
    }

    /// The normalised text: `.` for the root, else `a/b/c`.
    pub fn as_str(&self) -> &str {
        if self.is_root() { "." } else { &self.text }
    }

    /// The path to hand to cap-std (`.` for the root).
    pub fn as_path(&self) -> &Path {
        Path::new(self.as_str())
    }

    /// The components, in order; none for the root.
    pub fn components(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.text.split('/').filter(|c| !c.is_empty())
    }

    /// The parent directory (`.` for a top-level name) and the last component; `None` for
    /// the root.
    pub fn split_last(&self) -> Option<(VfsPath, &str)> {
        if self.is_root() {
            return None;
        }
        Some(match self.text.rsplit_once('/') {
            Some((parent, name)) => (
                Self {
                    text: parent.to_owned(),
                },
                name,
            ),
            None => (Self::root(), self.text.as_str()),
        })
    }

    /// The workspace root.
    pub fn root() -> Self {
        Self {
            text: String::new(),
        }
    }
}

/// The workspace directory that holds its Astrid configuration (capsules, `mcp.toml`).
pub const CONFIG_DIR: &str = ".astrid";

/// Paths capsules may neither read nor write, whatever their grants: the workspace's
/// [`CONFIG_DIR`], and the daemon's home when it lies inside the workspace (the whole
/// workspace when the workspace lies inside the home). Names are compared without regard
/// to ASCII case, as a case-insensitive file system would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// Each a list of components; an empty list reserves everything.
    prefixes: Vec<Vec<String>>,
}

impl Default for Reserved {
    /// [`CONFIG_DIR`] only.
    fn default() -> Self {
        Self {
            prefixes: vec![vec![CONFIG_DIR.to_owned()]],
        }
    }
}

impl Reserved {
    /// The default, plus the home `home` as seen from the workspace `workspace` (both
    /// canonical): its path when it lies inside, everything when the workspace lies inside
    /// it, nothing more when they are apart.
    pub fn with_home(workspace: &Path, home: &Path) -> Self {
        let mut reserved = Self::default();
        if let Ok(inside) = home.strip_prefix(workspace) {
            let components = inside
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            reserved.prefixes.push(components);
        } else if workspace.starts_with(home) {
            reserved.prefixes.push(Vec::new());
        }
        reserved
    }

    /// Whether `path` is, or lies under, a reserved path.
    pub fn covers(&self, path: &VfsPath) -> bool {
        self.prefixes.iter().any(|prefix| {
            let mut components = path.components();
            prefix.iter().all(|want| {
                components
                    .next()
                    .is_some_and(|got| got.eq_ignore_ascii_case(want))
            })
        })
    }
}

impl std::fmt::Display for VfsPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        VfsPath::parse(raw).unwrap().as_str().to_owned()
    }

    fn err(raw: &str) -> &'static str {
        VfsPath::parse(raw).unwrap_err()
    }

    #[test]
    fn plain_paths_are_kept() {
        assert_eq!(ok("a"), "a");
        assert_eq!(ok("a/b/c.txt"), "a/b/c.txt");
        assert_eq!(ok(".hidden/x"), ".hidden/x");
        assert_eq!(ok("with space/ünïcödé"), "with space/ünïcödé");
        assert_eq!(ok("back\\slash"), "back\\slash");
        assert_eq!(ok("...").as_str(), "...");
        assert_eq!(ok("a..b/..c/d.."), "a..b/..c/d..");
    }

    #[test]
    fn dots_and_repeated_slashes_are_normalised() {
        assert_eq!(ok("./a//b/"), "a/b");
        assert_eq!(ok("a/./b/./"), "a/b");
        assert_eq!(ok("a///b"), "a/b");
        assert_eq!(ok("./././x"), "x");
    }

    #[test]
    fn dot_forms_are_the_root() {
        for raw in [".", "./", ".//", "./.", "././/./"] {
            let p = VfsPath::parse(raw).unwrap();
            assert!(p.is_root(), "{raw}");
            assert_eq!(p.as_str(), ".");
            assert_eq!(p.as_path(), Path::new("."));
            assert_eq!(p.components().count(), 0);
            assert_eq!(p.split_last(), None);
            assert_eq!(p, VfsPath::root());
        }
    }

    #[test]
    fn empty_is_rejected() {
        assert_eq!(err(""), EMPTY);
    }

    #[test]
    fn absolute_is_rejected() {
        assert_eq!(err("/"), ABSOLUTE);
        assert_eq!(err("/etc/passwd"), ABSOLUTE);
        assert_eq!(err("//a"), ABSOLUTE);
    }

    #[test]
    fn any_parent_component_is_rejected() {
        for raw in [
            "..",
            "../x",
            "a/..",
            "a/../b",
            "a/../../x",
            "./..",
            "a/b/../",
            "a//../b",
        ] {
            assert_eq!(err(raw), PARENT, "{raw}");
        }
    }

    #[test]
    fn nul_is_rejected() {
        assert_eq!(err("a\0b"), NUL);
        assert_eq!(err("\0"), NUL);
        // NUL wins over the later rules.
        assert_eq!(err("/\0"), NUL);
    }

    #[test]
    fn length_limit_is_on_bytes_and_inclusive() {
        let at_limit = "a".repeat(MAX_PATH_LEN);
        assert_eq!(ok(&at_limit), at_limit);
        assert_eq!(err(&"a".repeat(MAX_PATH_LEN + 1)), TOO_LONG);
        // 2-byte characters: 2049 of them are 4098 bytes.
        assert_eq!(err(&"é".repeat(2049)), TOO_LONG);
        // Checked before anything else that scans the text.
        assert_eq!(err(&format!("/{}", "a".repeat(MAX_PATH_LEN))), TOO_LONG);
    }

    #[test]
    fn split_last_gives_parent_and_name() {
        let p = VfsPath::parse("a/b/c").unwrap();
        let (parent, name) = p.split_last().unwrap();
        assert_eq!(parent.as_str(), "a/b");
        assert_eq!(name, "c");
        let top = VfsPath::parse("./f.txt").unwrap();
        let (parent, name) = top.split_last().unwrap();
        assert!(parent.is_root());
        assert_eq!(name, "f.txt");
    }

    #[test]
    fn the_config_dir_is_reserved_in_any_case() {
        let reserved = Reserved::default();
        let covers = |raw: &str| reserved.covers(&VfsPath::parse(raw).unwrap());
        for raw in [
            ".astrid",
            ".astrid/",
            "./.astrid/mcp.toml",
            ".ASTRID/x",
            ".Astrid//capsules/c/Capsule.toml",
        ] {
            assert!(covers(raw), "{raw}");
        }
        for raw in [".", "a/.astrid", ".astridx", "astrid", ".astri"] {
            assert!(!covers(raw), "{raw}");
        }
    }

    #[test]
    fn the_home_is_reserved_where_it_meets_the_workspace() {
        let covers = |ws: &str, home: &str, raw: &str| {
            Reserved::with_home(Path::new(ws), Path::new(home))
                .covers(&VfsPath::parse(raw).unwrap())
        };
        // Home inside the workspace.
        assert!(covers("/u", "/u/.config/astrid", ".config/astrid/state/x"));
        assert!(covers("/u", "/u/.config/astrid", ".config/astrid"));
        assert!(!covers("/u", "/u/.config/astrid", ".config/other"));
        assert!(!covers("/u", "/u/.config/astrid", ".config"));
        // The same directory, or the workspace inside the home: everything.
        assert!(covers("/u/.astrid", "/u/.astrid", "anything"));
        assert!(covers("/u/.astrid/ws", "/u/.astrid", "a/b"));
        // Apart: only the workspace's own config dir.
        assert!(!covers("/w", "/h", "h/x"));
        assert!(covers("/w", "/h", ".astrid/x"));
    }

    #[test]
    fn components_and_display() {
        let p = VfsPath::parse("x//y/./z/").unwrap();
        assert_eq!(p.components().collect::<Vec<_>>(), ["x", "y", "z"]);
        assert_eq!(p.to_string(), "x/y/z");
        assert_eq!(p.as_path(), Path::new("x/y/z"));
    }
}
