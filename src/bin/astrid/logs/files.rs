//! The daemon's daily log files, `<home>/logs/astrid.YYYY-MM-DD.log` (one a UTC day, seven
//! kept): listing them oldest first, reading their lines from where the last read ended, and
//! following the newest across the daily rotation.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::line::Sieve;

/// How often a followed file is read again.
const POLL: Duration = Duration::from_millis(200);

/// Whether `name` is a daily file's: `astrid.YYYY-MM-DD.log`.
fn is_daily(name: &str) -> bool {
    name.strip_prefix("astrid.")
        .and_then(|rest| rest.strip_suffix(".log"))
        .is_some_and(|date| {
            date.len() == 10
                && date.bytes().enumerate().all(|(i, b)| {
                    if i == 4 || i == 7 {
                        b == b'-'
                    } else {
                        b.is_ascii_digit()
                    }
                })
        })
}

/// The daily files in `dir`, oldest first (their names sort by date); none when `dir` does
/// not exist.
///
/// # Errors
///
/// When `dir` exists but cannot be read.
pub(crate) fn daily_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(is_daily))
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// A place in one file: the lines before `offset` have been read.
#[derive(Debug)]
pub(crate) struct Cursor {
    path: PathBuf,
    offset: u64,
}

impl Cursor {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path, offset: 0 }
    }

    /// Calls `each` with every line after the offset, and moves the offset past them. A last
    /// line without its newline is passed only when `partial` is true (the file is finished);
    /// otherwise it is left to the next read, when it is whole. A file shorter than the
    /// offset was replaced: it is read from its start.
    fn read(
        &mut self,
        partial: bool,
        mut each: impl FnMut(&str) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            // Removed by the rotation (past the seven kept): nothing more to read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if file.metadata()?.len() < self.offset {
            self.offset = 0;
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            let whole = buf.ends_with(b"\n");
            if !whole && !partial {
                return Ok(());
            }
            self.offset += n as u64;
            let text = String::from_utf8_lossy(&buf);
            each(text.trim_end_matches(['\n', '\r']))?;
        }
    }
}

/// The last `n` lines the sieve keeps, of every daily file in `dir`, oldest first, and a
/// cursor at the end of the newest (its last line, if not yet whole, left unread) when
/// `follow` is true.
///
/// # Errors
///
/// When a file cannot be read.
pub(crate) fn tail(
    dir: &Path,
    n: usize,
    sieve: &mut Sieve,
    follow: bool,
) -> io::Result<(Vec<String>, Option<Cursor>)> {
    let files = daily_files(dir)?;
    let mut kept: VecDeque<String> = VecDeque::with_capacity(n.min(4096));
    let mut cursor = None;
    let last = files.len().saturating_sub(1);
    for (i, path) in files.into_iter().enumerate() {
        let mut at = Cursor::new(path);
        let finished = i < last || !follow;
        at.read(finished, |line| {
            if sieve.keep(line) && n > 0 {
                if kept.len() == n {
                    kept.pop_front();
                }
                kept.push_back(line.to_owned());
            }
            Ok(())
        })?;
        cursor = Some(at);
    }
    Ok((kept.into(), cursor.filter(|_| follow)))
}

/// Prints, through `print`, every line the sieve keeps as it is written to the daily files of
/// `dir`, from `cursor` on (or from the first file that appears), moving to each next day's
/// file once it appears (after the rest of the previous one). Returns when `print` fails.
///
/// # Errors
///
/// What `print` returns, or a file that cannot be read.
pub(crate) fn follow(
    dir: &Path,
    mut cursor: Option<Cursor>,
    sieve: &mut Sieve,
    mut print: impl FnMut(&str) -> io::Result<()>,
) -> io::Result<()> {
    let mut each = |line: &str| {
        if sieve.keep(line) {
            print(line)?;
        }
        Ok(())
    };
    loop {
        if let Some(at) = cursor.as_mut() {
            at.read(false, &mut each)?;
        }
        let files = daily_files(dir)?;
        let next = match &cursor {
            None => files.into_iter().next(),
            Some(at) => files
                .into_iter()
                .find(|f| f.file_name() > at.path.file_name()),
        };
        match (next, cursor.as_mut()) {
            (Some(next), Some(at)) => {
                // The daemon writes to the new day's file only: finish the old one.
                at.read(true, &mut each)?;
                *at = Cursor::new(next);
            }
            (Some(next), None) => cursor = Some(Cursor::new(next)),
            (None, _) => std::thread::sleep(POLL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::line::Filter;

    #[test]
    fn only_daily_files_are_listed_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "astrid.2026-12-07.log",
            "astrid.2026-11-30.log",
            "daemon-boot.log",
            "astrid.log",
            "astrid.2026-12-x7.log",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let names: Vec<String> = daily_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["astrid.2026-11-30.log", "astrid.2026-12-07.log"]);
        assert!(daily_files(&dir.path().join("none")).unwrap().is_empty());
    }

    #[test]
    fn tail_keeps_the_last_lines_and_leaves_a_partial_one_to_follow() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("astrid.2026-12-06.log"), "a\nb\n").unwrap();
        std::fs::write(dir.path().join("astrid.2026-12-07.log"), "c\nd\npart").unwrap();
        let mut sieve = Sieve::new(Filter::default());
        let (lines, cursor) = tail(dir.path(), 3, &mut sieve, false).unwrap();
        assert_eq!(lines, ["c", "d", "part"]);
        assert!(cursor.is_none());
        let (lines, cursor) = tail(dir.path(), 3, &mut sieve, true).unwrap();
        assert_eq!(lines, ["b", "c", "d"]);
        let mut cursor = cursor.unwrap();
        assert_eq!(cursor.offset, 4);
        let mut seen = Vec::new();
        cursor
            .read(false, |l| {
                seen.push(l.to_owned());
                Ok(())
            })
            .unwrap();
        assert!(seen.is_empty());
        let (none, _) = tail(dir.path(), 0, &mut sieve, false).unwrap();
        assert!(none.is_empty());
    }
}
