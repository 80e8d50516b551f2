//! Capsules installed from a `.tar.gz` (or `.tgz`): the archive is unpacked into a fresh
//! folder beside the home's capsules, checked and installed from there as a folder would be,
//! and the folder removed afterwards.
//!
//! An archive is someone else's bytes, so unpacking trusts nothing in it: only regular files
//! and folders (no links of either kind, devices or pipes), paths that are relative and stay
//! inside (no `/` at the start, no `..`), no path twice, within the bounds of a trusted
//! configuration (`trust/snapshot.rs`: files, bytes and depth, counted from the headers
//! before anything is read, and again as the bytes arrive). Files are written `0644` and
//! folders `0755`, whatever modes the archive carries. The capsule is the archive's root if
//! it holds `Capsule.toml`, else its one top folder.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use tar::{Archive, EntryType};

use crate::trust::snapshot::{MAX_BYTES, MAX_DEPTH, MAX_FILES};

/// Whether `path` names an archive to unpack (by its name).
pub fn is_archive(path: &Path) -> bool {
    let is = |p: &Path, ext: &str| p.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext));
    is(path, "tgz") || (is(path, "gz") && is(&path.with_extension(""), "tar"))
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// It could not be read or unpacked.
    #[error("cannot unpack it: {0}")]
    Io(#[from] io::Error),
    /// An entry is not allowed.
    #[error("`{path}` {why}")]
    Entry {
        /// The entry's path as the archive gives it.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// Past a bound.
    #[error("it holds {0}")]
    TooLarge(String),
    /// No capsule in it.
    #[error("it holds no capsule: `Capsule.toml` is neither at its root nor in its one top folder")]
    NoCapsule,
}

/// The relative path an entry may be unpacked to, or why not.
fn entry_path(raw: &Path) -> Result<PathBuf, String> {
    let mut clean = PathBuf::new();
    for part in raw.components() {
        match part {
            Component::Normal(name) => clean.push(name),
            Component::CurDir => {}
            Component::ParentDir => return Err("climbs out of the archive with `..`".into()),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path".into()),
        }
    }
    if clean.components().count() > MAX_DEPTH {
        return Err(format!("nests deeper than {MAX_DEPTH} folders"));
    }
    Ok(clean)
}

/// Unpacks the archive at `archive` into `into` (created; it must not exist) and returns the
/// capsule folder inside it.
///
/// # Errors
///
/// See [`ArchiveError`]; `into` may hold part of the archive then, for the caller to remove.
pub fn unpack(archive: &Path, into: &Path) -> Result<PathBuf, ArchiveError> {
    fs::DirBuilder::new().mode(0o755).create(into)?;
    let mut tar = Archive::new(GzDecoder::new(File::open(archive)?));
    let (mut files, mut bytes) = (0_usize, 0_u64);
    for entry in tar.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let shown = raw.display().to_string();
        let refuse = |why: String| ArchiveError::Entry {
            path: shown.clone(),
            why,
        };
        let rel = entry_path(&raw).map_err(&refuse)?;
        files += 1;
        if files > MAX_FILES {
            return Err(ArchiveError::TooLarge(format!(
                "more than {MAX_FILES} files and folders"
            )));
        }
        let target = into.join(&rel);
        match entry.header().entry_type() {
            EntryType::Directory => {
                if rel.as_os_str().is_empty() {
                    continue;
                }
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&target)?;
            }
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.header().size()?;
                bytes = bytes.saturating_add(size);
                if bytes > MAX_BYTES {
                    return Err(ArchiveError::TooLarge(format!(
                        "more than {} MiB of files",
                        MAX_BYTES >> 20
                    )));
                }
                if let Some(parent) = target.parent() {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o755)
                        .create(parent)?;
                }
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&target)
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::AlreadyExists => refuse("appears twice".into()),
                        _ => e.into(),
                    })?;
                // The header's size bounds what is read, whatever the stream holds.
                let copied = io::copy(&mut (&mut entry).take(size), &mut file)?;
                if copied != size {
                    return Err(refuse("is cut short".into()));
                }
                file.flush()?;
            }
            // Metadata for the entries, not entries (`git archive` writes a global one).
            EntryType::XGlobalHeader | EntryType::XHeader => {}
            EntryType::Symlink | EntryType::Link => {
                return Err(refuse(
                    "is a link; a capsule to install holds only files and folders".into(),
                ));
            }
            other => {
                return Err(refuse(format!(
                    "is a {other:?} entry; a capsule to install holds only files and folders"
                )));
            }
        }
    }
    capsule_folder(into)
}

/// The capsule folder inside an unpacked archive.
fn capsule_folder(root: &Path) -> Result<PathBuf, ArchiveError> {
    if root.join("Capsule.toml").is_file() {
        return Ok(root.to_owned());
    }
    let mut entries = fs::read_dir(root)?;
    match (entries.next().transpose()?, entries.next()) {
        (Some(only), None) if only.file_type()?.is_dir() => {
            let dir = only.path();
            if dir.join("Capsule.toml").is_file() {
                Ok(dir)
            } else {
                Err(ArchiveError::NoCapsule)
            }
        }
        _ => Err(ArchiveError::NoCapsule),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.tar.gz` of `entries` (path, type, content), with paths written raw into the
    /// headers, as a hostile archive would have them.
    fn archive(dir: &Path, entries: &[(&str, EntryType, &[u8])]) -> PathBuf {
        let path = dir.join("capsule.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut builder = tar::Builder::new(gz);
        for (name, kind, data) in entries {
            let mut header = tar::Header::new_gnu();
            let raw = &mut header.as_gnu_mut().unwrap().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o4755);
            if *kind == EntryType::Symlink {
                header.set_link_name("/etc/passwd").unwrap();
            }
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
        path
    }

    fn unpack_in(
        entries: &[(&str, EntryType, &[u8])],
    ) -> (tempfile::TempDir, Result<PathBuf, ArchiveError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = archive(dir.path(), entries);
        let into = dir.path().join("out");
        let result = unpack(&path, &into);
        (dir, result)
    }

    #[test]
    fn a_capsule_at_the_root_or_in_one_top_folder_is_found_with_plain_modes() {
        let (_dir, found) = unpack_in(&[
            ("hello/", EntryType::Directory, b""),
            ("hello/Capsule.toml", EntryType::Regular, b"x"),
            ("hello/sub/a.wasm", EntryType::Regular, b"abc"),
        ]);
        let found = found.unwrap();
        assert!(found.ends_with("out/hello"));
        assert_eq!(fs::read(found.join("sub/a.wasm")).unwrap(), b"abc");
        let mode = fs::metadata(found.join("Capsule.toml"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o7777,
            0o644
        );

        let (_dir, found) = unpack_in(&[("./Capsule.toml", EntryType::Regular, b"x")]);
        assert!(found.unwrap().ends_with("out"));
    }

    #[test]
    fn hostile_entries_are_refused_and_nothing_lands_outside() {
        for (entries, says) in [
            (
                vec![("../evil", EntryType::Regular, &b"x"[..])],
                "climbs out",
            ),
            (
                vec![("/tmp/evil", EntryType::Regular, &b"x"[..])],
                "absolute path",
            ),
            (vec![("link", EntryType::Symlink, &b""[..])], "is a link"),
            (vec![("hard", EntryType::Link, &b""[..])], "is a link"),
            (vec![("fifo", EntryType::Fifo, &b""[..])], "Fifo"),
            (
                vec![
                    ("a", EntryType::Regular, &b"1"[..]),
                    ("a", EntryType::Regular, &b"2"[..]),
                ],
                "appears twice",
            ),
            (
                vec![("notes.txt", EntryType::Regular, &b"x"[..])],
                "no capsule",
            ),
        ] {
            let (dir, result) = unpack_in(&entries);
            let error = result.unwrap_err().to_string();
            assert!(error.contains(says), "{error}");
            assert!(!dir.path().parent().unwrap().join("evil").exists());
        }
    }

    #[test]
    fn only_archive_names_are_archives() {
        assert!(is_archive(Path::new("/x/hello-1.0.tar.gz")));
        assert!(is_archive(Path::new("/x/hello.TGZ")));
        assert!(!is_archive(Path::new("/x/hello")));
    }
}
