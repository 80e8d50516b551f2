//! Small file helpers shared by the kernel and the daemon binary: private atomic writes,
//! syncing a directory so that the files created in it survive a crash, and reads bounded
//! in size.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `contents` to `path` atomically with permissions `0600`: a temporary file next to
/// it (created with that mode, never wider), fsync, then rename over `path`.
///
/// # Errors
///
/// Any I/O error; the temporary file is removed on failure.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_private_with(path, contents, true)
}

/// [`write_private`] without the fsync: readers see the old file or the new one, never a
/// part of it, but the new one may be lost (or empty) after a power failure. For files that
/// are diagnostics, whose writer must not wait for the disk.
///
/// # Errors
///
/// Any I/O error; the temporary file is removed on failure.
pub fn write_private_unsynced(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_private_with(path, contents, false)
}

fn write_private_with(path: &Path, contents: &[u8], sync: bool) -> io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = file_name.to_owned();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        if sync {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes the entries of `dir` durable (`fsync` on the directory): a file created in it is
/// not sure to survive a crash until this is done, however often the file itself is synced.
///
/// # Errors
///
/// When the directory cannot be opened or the sync fails.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Removes `path`, treating "already gone" as success.
///
/// # Errors
///
/// Any error but `NotFound`.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Reads the whole of `path` if it holds at most `max` bytes; never reads more than
/// `max + 1` (a file that grows meanwhile is caught too).
///
/// # Errors
///
/// Any I/O error, or one of kind `FileTooLarge` saying the limit.
pub fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("it is larger than {max} bytes, the limit"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn writes_0600_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        remove_if_exists(&path).unwrap();
        remove_if_exists(&path).unwrap();
    }

    #[test]
    fn bounded_reads_stop_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"12345").unwrap();
        assert_eq!(read_bounded(&path, 5).unwrap(), b"12345");
        let err = read_bounded(&path, 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert!(err.to_string().contains("larger than 4 bytes"), "{err}");
        assert_eq!(
            read_bounded(&dir.path().join("nope"), 4)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }
}
