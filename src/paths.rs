//! Where the Astrid home is: `--home`, else `$ASTRID_HOME`, else `~/.astrid`. The daemon and
//! the CLI both resolve it here, so they always agree on where the session files are.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

pub use astrid_protocol::layout::{HomeLayout, SessionFiles, session_name, workspace_capsules};

/// Why the home could not be resolved or prepared.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// No flag, no `$ASTRID_HOME`, and no home directory.
    #[error("cannot find a home directory; set ASTRID_HOME or pass --home")]
    NoHome,
    /// The home path contains `..`.
    #[error("home path {0} must not contain `..`")]
    DotDot(PathBuf),
    /// The current directory is needed to make a relative path absolute.
    #[error("cannot read the current directory")]
    CurrentDir(#[source] io::Error),
    /// A directory could not be created or fixed.
    #[error("cannot prepare directory {path}")]
    Prepare {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A directory belongs to someone else.
    #[error("{path} belongs to uid {owner}, not to you (uid {uid}); refusing to use it")]
    NotOwner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our uid.
        uid: u32,
    },
    /// Something other than a directory is in the way.
    #[error("{0} exists and is not a directory")]
    NotADirectory(PathBuf),
}

/// Resolves the home from `flag`, else `env_home` (the value of `$ASTRID_HOME`), else
/// `~/.astrid`. Relative paths are taken from the current directory.
///
/// # Errors
///
/// See [`PathError`].
pub fn resolve_home(flag: Option<&Path>, env_home: Option<&Path>) -> Result<HomeLayout, PathError> {
    let chosen = match flag.or(env_home.filter(|p| !p.as_os_str().is_empty())) {
        Some(p) => p.to_owned(),
        None => dirs::home_dir().ok_or(PathError::NoHome)?.join(".astrid"),
    };
    if chosen.components().any(|c| c == Component::ParentDir) {
        return Err(PathError::DotDot(chosen));
    }
    let absolute = if chosen.is_absolute() {
        chosen
    } else {
        std::env::current_dir()
            .map_err(PathError::CurrentDir)?
            .join(chosen)
    };
    Ok(HomeLayout::new(absolute))
}

/// Creates every directory of the home with mode `0700` and tightens existing ones, after
/// checking they are directories owned by the current user.
///
/// # Errors
///
/// See [`PathError`].
pub fn prepare_home(home: &HomeLayout) -> Result<(), PathError> {
    let uid = rustix::process::geteuid().as_raw();
    for dir in home.dirs() {
        let prepare = |source| PathError::Prepare {
            path: dir.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(prepare)?;
        let meta = std::fs::symlink_metadata(&dir).map_err(prepare)?;
        if !meta.is_dir() {
            return Err(PathError::NotADirectory(dir));
        }
        if meta.uid() != uid {
            return Err(PathError::NotOwner {
                path: dir,
                owner: meta.uid(),
                uid,
            });
        }
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(prepare)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_environment_beats_default() {
        let home = resolve_home(Some(Path::new("/a")), Some(Path::new("/b"))).unwrap();
        assert_eq!(home.root(), Path::new("/a"));
        let home = resolve_home(None, Some(Path::new("/b"))).unwrap();
        assert_eq!(home.root(), Path::new("/b"));
        let home = resolve_home(None, Some(Path::new(""))).unwrap();
        assert!(home.root().ends_with(".astrid"));
    }

    #[test]
    fn relative_homes_become_absolute_and_dotdot_is_refused() {
        let home = resolve_home(Some(Path::new("rel")), None).unwrap();
        assert!(home.root().is_absolute());
        assert!(matches!(
            resolve_home(Some(Path::new("/a/../b")), None),
            Err(PathError::DotDot(_))
        ));
    }

    #[test]
    fn prepare_creates_private_dirs_and_tightens_loose_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let home = HomeLayout::new(tmp.path().join("h"));
        std::fs::create_dir_all(home.logs()).unwrap();
        std::fs::set_permissions(home.logs(), std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_home(&home).unwrap();
        for dir in home.dirs() {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
    }

    #[test]
    fn a_file_in_place_of_the_home_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(prepare_home(&HomeLayout::new(&file)).is_err());
    }
}
