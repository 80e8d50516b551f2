//! The write-ahead journal of the ledger: two files of checksummed frames, one frame per
//! committed batch; the frames staged while one write was in flight go out in the next write,
//! made durable with a single `fdatasync`.
//!
//! Each file starts with a 16-byte header: the magic `ASTRIDJ1` and the file's generation
//! (u64 LE); a file whose header is zeroed holds nothing. A frame is
//! `len: u32 LE | attempt: u64 LE | check: u64 LE | payload[len]`, where `attempt` numbers the
//! write that carried it (every write to a file, failed or not, gets the next number) and
//! `check` is the first eight bytes of the BLAKE3 hash of the generation, the attempt (both
//! u64 LE) and the payload. The payload is a sequence of operations:
//!
//! ```text
//! 0x01 put     key_len: u32 | key | value_len: u32 | value
//! 0x02 delete  key_len: u32 | key
//! 0x03 audit   seq: u64 | entry_len: u32 | entry (the entry as stored in the audit table)
//! ```
//!
//! Reading stops at the first frame that is incomplete or fails its check (the frame a crash
//! interrupted, which was never acknowledged, or a frame of an earlier generation), or whose
//! attempt is lower than the frame before it: that is a frame of a failed write, overwritten
//! in part by a later one, whose tail must not come back.
//! Files are extended with zeros a megabyte at a time and then overwritten, so an
//! `fdatasync` only has the frames' own blocks to write (no file size, no block allocation),
//! and the generation in every check keeps old frames from being read as new ones. A file is
//! shortened only when it is emptied after a burst grew it past a few megabytes. A failed write is never acknowledged; its frames are overwritten by the next,
//! and attempt numbers keep any of them that outlast it from being read.
//! The files take turns (see [`Journal`]): a retired file is emptied once a durable commit of
//! the database holds everything in it.

use std::fmt;
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;

/// The file under the journal. Tests substitute one that fails like a full disk.
pub trait JournalFile: Send + fmt::Debug {
    /// The whole content.
    ///
    /// # Errors
    ///
    /// When the file cannot be read.
    fn read_all(&mut self) -> io::Result<Vec<u8>>;
    /// Writes all of `buf` at `offset`.
    ///
    /// # Errors
    ///
    /// When the write fails (e.g. no space).
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes written data durable (`fdatasync`).
    ///
    /// # Errors
    ///
    /// When the device reports a failure.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Up to `len` bytes from the start (less if the file is shorter).
    ///
    /// # Errors
    ///
    /// When the file cannot be read.
    fn read_prefix(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut bytes = self.read_all()?;
        bytes.truncate(len);
        Ok(bytes)
    }
    /// The file's size.
    ///
    /// # Errors
    ///
    /// When it cannot be queried.
    fn size(&mut self) -> io::Result<u64> {
        Ok(self.read_all()?.len() as u64)
    }
    /// Cuts the file to `len` bytes (after a burst, once what it held is in the database).
    ///
    /// # Errors
    ///
    /// When the file cannot be shortened.
    fn shrink_to(&mut self, len: u64) -> io::Result<()>;
}

impl JournalFile for std::fs::File {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.rewind()?;
        self.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        std::fs::File::sync_data(self)
    }

    fn read_prefix(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(len);
        self.rewind()?;
        self.take(len as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn size(&mut self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn shrink_to(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
}

const PUT: u8 = 1;
const DELETE: u8 = 2;
const AUDIT: u8 = 3;
const FRAME_HEAD: usize = 20;

/// One journaled operation, borrowed from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// A key written (physical key: namespace, NUL, key).
    Put {
        /// Physical key.
        key: &'a [u8],
        /// Value.
        value: &'a [u8],
    },
    /// A key removed.
    Delete {
        /// Physical key.
        key: &'a [u8],
    },
    /// An audit entry appended.
    Audit {
        /// Its sequence number.
        seq: u64,
        /// The entry, encoded as the audit table stores it.
        entry: &'a [u8],
    },
}

/// Encoded frames waiting to be written: complete ones, then possibly one being built.
#[derive(Debug, Default)]
pub struct Frames {
    buf: Vec<u8>,
    /// Where the frame being built starts.
    open: Option<usize>,
}

impl Frames {
    /// Starts a frame.
    pub fn begin(&mut self) {
        self.discard();
        self.open = Some(self.buf.len());
        self.buf.extend_from_slice(&[0; FRAME_HEAD]);
    }

    /// Appends `op` to the frame being built.
    pub fn push(&mut self, op: Op<'_>) {
        let buf = &mut self.buf;
        match op {
            Op::Put { key, value } => {
                buf.push(PUT);
                put_bytes(buf, key);
                put_bytes(buf, value);
            }
            Op::Delete { key } => {
                buf.push(DELETE);
                put_bytes(buf, key);
            }
            Op::Audit { seq, entry } => {
                buf.push(AUDIT);
                buf.extend_from_slice(&seq.to_le_bytes());
                put_bytes(buf, entry);
            }
        }
    }

    /// Completes the frame being built: fills in its length (its check is computed when it
    /// is written, for the generation of the file it goes to).
    pub fn finish(&mut self) {
        if let Some(start) = self.open.take() {
            let (head, payload) = self.buf[start..].split_at_mut(FRAME_HEAD);
            let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
            head[..4].copy_from_slice(&len.to_le_bytes());
        }
    }

    /// Drops the frame being built, if any.
    pub fn discard(&mut self) {
        if let Some(start) = self.open.take() {
            self.buf.truncate(start);
        }
    }

    /// Whether no complete frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The complete frames, leaving this empty.
    pub fn take(&mut self) -> Vec<u8> {
        self.discard();
        std::mem::take(&mut self.buf)
    }

    /// Forgets every frame.
    pub fn clear(&mut self) {
        self.open = None;
        self.buf.clear();
    }
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(bytes);
}

fn check(generation: u64, attempt: u64, payload: &[u8]) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&generation.to_le_bytes());
    hasher.update(&attempt.to_le_bytes());
    hasher.update(payload);
    let mut first = [0; 8];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Fills in the attempt and check of complete frames (lengths already set).
fn seal(frames: &mut [u8], generation: u64, attempt: u64) {
    let mut at = 0;
    while at + FRAME_HEAD <= frames.len() {
        let len = u32::from_le_bytes([frames[at], frames[at + 1], frames[at + 2], frames[at + 3]])
            as usize;
        let end = (at + FRAME_HEAD + len).min(frames.len());
        let sum = check(generation, attempt, &frames[at + FRAME_HEAD..end]);
        frames[at + 4..at + 12].copy_from_slice(&attempt.to_le_bytes());
        frames[at + 12..at + FRAME_HEAD].copy_from_slice(&sum.to_le_bytes());
        at = end;
    }
}

/// The payloads of the intact frames of `generation` at the start of `bytes`, and where
/// they end.
pub fn frames(bytes: &[u8], generation: u64) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    let mut last_attempt = 0;
    while let Some(head) = bytes.get(at..at + FRAME_HEAD) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let mut attempt = [0; 8];
        attempt.copy_from_slice(&head[4..12]);
        let attempt = u64::from_le_bytes(attempt);
        let mut sum = [0; 8];
        sum.copy_from_slice(&head[12..]);
        let Some(payload) = bytes.get(at + FRAME_HEAD..at + FRAME_HEAD + len) else {
            break;
        };
        if len == 0
            || attempt < last_attempt
            || check(generation, attempt, payload) != u64::from_le_bytes(sum)
            || decode(payload).is_none()
        {
            break;
        }
        last_attempt = attempt;
        out.push(payload);
        at += FRAME_HEAD + len;
    }
    (out, at)
}

/// The operations of a payload, or `None` if it is malformed.
pub fn decode(payload: &[u8]) -> Option<Vec<Op<'_>>> {
    let mut ops = Vec::new();
    let mut rest = payload;
    while let Some((&tag, tail)) = rest.split_first() {
        rest = tail;
        let op = match tag {
            PUT => {
                let key = take_bytes(&mut rest)?;
                let value = take_bytes(&mut rest)?;
                Op::Put { key, value }
            }
            DELETE => Op::Delete {
                key: take_bytes(&mut rest)?,
            },
            AUDIT => {
                let (seq, tail) = rest.split_first_chunk::<8>()?;
                rest = tail;
                Op::Audit {
                    seq: u64::from_le_bytes(*seq),
                    entry: take_bytes(&mut rest)?,
                }
            }
            _ => return None,
        };
        ops.push(op);
    }
    Some(ops)
}

fn take_bytes<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, tail) = rest.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    let bytes = tail.get(..len)?;
    *rest = &tail[len..];
    Some(bytes)
}

/// What starts every journal file: a magic and the file's generation.
const MAGIC: &[u8; 8] = b"ASTRIDJ1";
const HEADER_LEN: usize = 16;
const HEADER: u64 = 16;
/// Files grow by this much at a time.
const GROW: u64 = 1024 * 1024;
/// A file emptied while larger than this is cut back to [`GROW`]: the journal shrinks back
/// after a burst, and a steady load (which fills a file a few megabytes between
/// checkpoints) keeps its blocks allocated.
const KEPT_AFTER_BURST: u64 = 4 * GROW;

/// One of the two journal files.
#[derive(Debug)]
struct Segment {
    file: Box<dyn JournalFile>,
    /// Where the next frame goes (0: the file holds nothing, not even a header).
    len: u64,
    /// The file's size (zeros past `len`, or frames of earlier generations).
    size: u64,
    generation: u64,
    /// Writes attempted in this generation.
    attempts: u64,
}

impl Segment {
    /// Reads the segment: its generation and the payloads of its intact frames (nothing for
    /// a file without a valid header).
    fn open(mut file: Box<dyn JournalFile>) -> io::Result<(Self, Vec<Vec<u8>>)> {
        let size = file.size()?;
        let head = file.read_prefix(HEADER_LEN)?;
        let mut segment = Self {
            file,
            len: 0,
            size,
            generation: 0,
            attempts: 0,
        };
        let Some(generation) = parse_header(&head) else {
            return Ok((segment, Vec::new()));
        };
        segment.generation = generation;
        let bytes = segment.file.read_all()?;
        let body = bytes.get(HEADER_LEN..).unwrap_or_default();
        let (payloads, intact) = frames(body, generation);
        segment.len = HEADER + intact as u64;
        let payloads = payloads.into_iter().map(<[u8]>::to_vec).collect();
        Ok((segment, payloads))
    }

    /// Bytes of frames in the segment.
    fn frames_len(&self) -> u64 {
        self.len.saturating_sub(HEADER)
    }

    fn write_header(&mut self, generation: u64) -> io::Result<()> {
        let mut head = [0; HEADER_LEN];
        if generation > 0 {
            head[..8].copy_from_slice(MAGIC);
            head[8..].copy_from_slice(&generation.to_le_bytes());
        }
        self.file.write_all_at(&head, 0)?;
        self.file.sync_data()?;
        self.size = self.size.max(HEADER);
        Ok(())
    }

    /// Marks the file empty, durably, before anything else is written to it.
    fn clear(&mut self) -> io::Result<()> {
        if self.len == 0 && self.generation == 0 {
            return Ok(());
        }
        self.write_header(0)?;
        self.len = 0;
        if self.size > KEPT_AFTER_BURST {
            // A burst grew it: back to its usual size (what it held is in the database, and
            // its header says it holds nothing; a crash before the cut leaves it as long).
            self.file.shrink_to(GROW)?;
            self.size = GROW;
        }
        Ok(())
    }

    /// Starts the file as generation `generation`.
    fn start(&mut self, generation: u64) -> io::Result<()> {
        self.write_header(generation)?;
        self.len = HEADER;
        self.generation = generation;
        self.attempts = 0;
        Ok(())
    }

    /// Extends the file with zeros so that `extra` more bytes fit without growing it.
    fn make_room(&mut self, extra: u64) -> io::Result<()> {
        let needed = self.len + extra;
        if needed <= self.size {
            return Ok(());
        }
        let target = needed.div_ceil(GROW) * GROW;
        let zeros = vec![0; usize::try_from(target - self.size).unwrap_or(0)];
        self.file.write_all_at(&zeros, self.size)?;
        self.size = target;
        Ok(())
    }

    fn read(&mut self) -> io::Result<Vec<Vec<u8>>> {
        if self.len == 0 {
            return Ok(Vec::new());
        }
        let bytes = self.file.read_all()?;
        let end = usize::try_from(self.len)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let body = bytes.get(HEADER_LEN..end).unwrap_or_default();
        Ok(frames(body, self.generation)
            .0
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect())
    }
}

fn parse_header(head: &[u8]) -> Option<u64> {
    let (magic, rest) = head.split_first_chunk::<8>()?;
    let (generation, _) = rest.split_first_chunk::<8>()?;
    let generation = u64::from_le_bytes(*generation);
    (magic == MAGIC && generation > 0).then_some(generation)
}

/// The journal: two files that take turns. New frames go to the active one. A checkpoint
/// retires it and starts the other; once the database holds everything the retired file
/// holds durably, it is emptied. Each file starts with a generation number, so replay reads
/// them in the order they were written.
#[derive(Debug)]
pub struct Journal {
    active: Segment,
    retired: Segment,
}

impl Journal {
    /// A journal over its two files, with the payloads of the intact frames they hold,
    /// oldest first (to replay, after which the caller calls [`Journal::reset`]).
    ///
    /// # Errors
    ///
    /// When a file cannot be read.
    pub fn open(
        first: Box<dyn JournalFile>,
        second: Box<dyn JournalFile>,
    ) -> io::Result<(Self, Vec<Vec<u8>>)> {
        let (a, a_frames) = Segment::open(first)?;
        let (b, b_frames) = Segment::open(second)?;
        let ((older, mut payloads), (newer, mut newer_frames)) = if a.generation <= b.generation {
            ((a, a_frames), (b, b_frames))
        } else {
            ((b, b_frames), (a, a_frames))
        };
        payloads.append(&mut newer_frames);
        Ok((
            Self {
                active: newer,
                retired: older,
            },
            payloads,
        ))
    }

    /// Bytes of frames in the active file.
    pub fn active_len(&self) -> u64 {
        self.active.frames_len()
    }

    /// Whether neither file holds a frame.
    pub fn is_empty(&self) -> bool {
        self.active.frames_len() == 0 && self.retired.frames_len() == 0
    }

    /// The payloads of everything journaled and not yet known durable in the database,
    /// oldest first (for replay after the database was lost).
    ///
    /// # Errors
    ///
    /// When a file cannot be read.
    pub fn read(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let mut payloads = self.retired.read()?;
        payloads.append(&mut self.active.read()?);
        Ok(payloads)
    }

    /// Appends complete `frames` (built with [`Frames`]) to the active file and makes them
    /// durable with one `fdatasync`. On failure nothing of them counts: the next write goes
    /// over them.
    ///
    /// # Errors
    ///
    /// The write or sync error.
    pub fn append(&mut self, frames: &mut [u8]) -> io::Result<()> {
        let active = &mut self.active;
        if active.len == 0 {
            let generation = active.generation.max(self.retired.generation) + 1;
            active.start(generation)?;
        }
        active.attempts += 1;
        seal(frames, active.generation, active.attempts);
        active.make_room(frames.len() as u64)?;
        active.file.write_all_at(frames, active.len)?;
        active.file.sync_data()?;
        active.len += frames.len() as u64;
        Ok(())
    }

    /// Retires the active file and starts the other one, for a checkpoint. Returns false
    /// (and changes nothing) while the other file still holds frames of an unfinished
    /// checkpoint, or when the active one holds none.
    ///
    /// # Errors
    ///
    /// When the other file cannot be started.
    pub fn rotate(&mut self) -> io::Result<bool> {
        if self.retired.frames_len() > 0 || self.active.frames_len() == 0 {
            return Ok(false);
        }
        let generation = self.active.generation + 1;
        self.retired.start(generation)?;
        std::mem::swap(&mut self.active, &mut self.retired);
        Ok(true)
    }

    /// Empties the retired file, once the database holds its content durably.
    ///
    /// # Errors
    ///
    /// When its header cannot be rewritten.
    pub fn clear_retired(&mut self) -> io::Result<()> {
        self.retired.clear()
    }

    /// Empties both files, once the database holds everything durably.
    ///
    /// # Errors
    ///
    /// When a header cannot be rewritten.
    pub fn reset(&mut self) -> io::Result<()> {
        self.retired.clear()?;
        self.active.clear()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEN: u64 = 3;

    /// One sealed frame of `ops`, for generation [`GEN`].
    fn frame(ops: &[Op<'_>]) -> Vec<u8> {
        let mut f = Frames::default();
        f.begin();
        for op in ops {
            f.push(*op);
        }
        f.finish();
        let mut bytes = f.take();
        seal(&mut bytes, GEN, 1);
        bytes
    }

    const OPS: [Op<'static>; 3] = [
        Op::Put {
            key: b"client\0a",
            value: b"1",
        },
        Op::Delete { key: b"client\0b" },
        Op::Audit {
            seq: 7,
            entry: b"entry",
        },
    ];

    #[test]
    fn operations_round_trip_through_a_frame() {
        let frame = frame(&OPS);
        let (payloads, end) = frames(&frame, GEN);
        assert_eq!(end, frame.len());
        assert_eq!(decode(payloads[0]).unwrap(), OPS);
    }

    #[test]
    fn reading_stops_at_a_torn_altered_or_older_frame() {
        let mut bytes = frame(&OPS[..1]);
        let first = bytes.len();
        bytes.extend_from_slice(&frame(&OPS[1..]));
        assert_eq!(frames(&bytes, GEN).0.len(), 2);
        // Torn: the second frame lost its last byte.
        let (payloads, end) = frames(&bytes[..bytes.len() - 1], GEN);
        assert_eq!((payloads.len(), end), (1, first));
        // Altered: one byte of the second payload flipped.
        let mut altered = bytes.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(frames(&altered, GEN).1, first);
        // Zeros (a file grown ahead) and garbage after the frames are not frames.
        for tail in [[0_u8; 40], [0xff; 40]] {
            let mut longer = bytes.clone();
            longer.extend_from_slice(&tail);
            assert_eq!(frames(&longer, GEN).1, bytes.len());
        }
        // Intact frames of another generation are not read as this one's.
        assert_eq!(frames(&bytes, GEN + 1).1, 0);
    }

    #[test]
    fn malformed_payloads_are_refused() {
        assert_eq!(decode(&[]), Some(vec![]));
        assert_eq!(decode(&[9]), None);
        assert_eq!(decode(&[PUT, 5, 0, 0, 0, b'a']), None);
        assert_eq!(decode(&[AUDIT, 1, 2]), None);
    }

    fn open(dir: &std::path::Path) -> (Journal, Vec<Vec<u8>>) {
        let file = |name: &str| -> Box<dyn JournalFile> {
            Box::new(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(dir.join(name))
                    .unwrap(),
            )
        };
        Journal::open(file("a"), file("b")).unwrap()
    }

    /// The keys of the puts in `payloads`.
    fn keys(payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
        payloads
            .iter()
            .flat_map(|p| decode(p).unwrap())
            .filter_map(|op| match op {
                Op::Put { key, .. } => Some(key.to_vec()),
                _ => None,
            })
            .collect()
    }

    fn put(key: &[u8]) -> Vec<u8> {
        let mut f = Frames::default();
        f.begin();
        f.push(Op::Put { key, value: b"v" });
        f.finish();
        f.take()
    }

    #[test]
    fn files_replay_oldest_first_and_rotation_keeps_both_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, payloads) = open(dir.path());
        assert!(payloads.is_empty() && journal.is_empty());
        assert!(!journal.rotate().unwrap(), "nothing to retire");
        journal.append(&mut put(b"1")).unwrap();
        assert!(journal.rotate().unwrap());
        journal.append(&mut put(b"2")).unwrap();
        assert!(
            !journal.rotate().unwrap(),
            "the retired file still holds a frame"
        );
        assert_eq!(
            keys(&journal.read().unwrap()),
            [b"1".to_vec(), b"2".to_vec()]
        );
        drop(journal);
        // Reopened: the older generation comes first, whichever file it is in.
        let (mut journal, payloads) = open(dir.path());
        assert_eq!(keys(&payloads), [b"1".to_vec(), b"2".to_vec()]);
        journal.clear_retired().unwrap();
        assert!(journal.rotate().unwrap());
        journal.append(&mut put(b"3")).unwrap();
        drop(journal);
        let (mut journal, payloads) = open(dir.path());
        assert_eq!(keys(&payloads), [b"2".to_vec(), b"3".to_vec()]);
        journal.reset().unwrap();
        assert!(journal.is_empty());
        drop(journal);
        assert!(open(dir.path()).1.is_empty(), "reset files replay nothing");
    }

    #[test]
    fn a_file_a_burst_grew_shrinks_back_once_emptied_and_a_small_one_keeps_its_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let size = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().len();
        let (mut journal, _) = open(dir.path());
        let big = vec![7u8; 1 << 20];
        let mut burst = Frames::default();
        for _ in 0..6 {
            burst.begin();
            burst.push(Op::Put {
                key: b"k",
                value: &big,
            });
            burst.finish();
        }
        journal.append(&mut burst.take()).unwrap();
        let grown = size("a").max(size("b"));
        assert!(grown > KEPT_AFTER_BURST, "{grown}");
        journal.reset().unwrap();
        assert!(
            size("a") <= GROW && size("b") <= GROW,
            "{} {}",
            size("a"),
            size("b")
        );
        drop(journal);
        assert!(open(dir.path()).1.is_empty(), "a cut file replays nothing");

        // A file that stayed small is emptied in place.
        let (mut journal, _) = open(dir.path());
        journal.append(&mut put(b"small")).unwrap();
        let before = size("a").max(size("b"));
        journal.reset().unwrap();
        assert_eq!(size("a").max(size("b")), before);
        // And a journal cut back still takes new frames and replays them.
        journal.append(&mut put(b"after")).unwrap();
        drop(journal);
        assert_eq!(keys(&open(dir.path()).1), [b"after".to_vec()]);
    }

    #[test]
    fn files_grow_ahead_and_old_frames_never_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path());
        for key in [b"a", b"b", b"c"] {
            journal.append(&mut put(key)).unwrap();
        }
        let sizes = || ["a", "b"].map(|n| std::fs::metadata(dir.path().join(n)).unwrap().len());
        assert!(sizes().contains(&GROW), "{:?}", sizes());
        // Emptied, then reused: the new generation's frame overwrites the first old one,
        // and the old ones after it are not replayed.
        journal.reset().unwrap();
        journal.append(&mut put(b"new")).unwrap();
        drop(journal);
        let (_, payloads) = open(dir.path());
        assert_eq!(keys(&payloads), [b"new".to_vec()]);
        assert!(sizes().contains(&GROW), "files are not shortened");
    }

    /// A file whose syncs fail on demand, after the data reached it (as with EIO).
    #[derive(Debug)]
    struct FailingSync(std::fs::File, std::sync::Arc<std::sync::atomic::AtomicBool>);

    impl JournalFile for FailingSync {
        fn read_all(&mut self) -> io::Result<Vec<u8>> {
            self.0.read_all()
        }
        fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
            JournalFile::write_all_at(&mut self.0, buf, offset)
        }
        fn sync_data(&mut self) -> io::Result<()> {
            if self.1.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(io::Error::other("injected: sync failed"));
            }
            JournalFile::sync_data(&mut self.0)
        }
        fn shrink_to(&mut self, len: u64) -> io::Result<()> {
            self.0.shrink_to(len)
        }
    }

    #[test]
    fn frames_of_a_failed_write_never_come_back_even_behind_an_identical_retry() {
        let dir = tempfile::tempdir().unwrap();
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let file = |name: &str| -> Box<dyn JournalFile> {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.path().join(name))
                .unwrap();
            Box::new(FailingSync(file, std::sync::Arc::clone(&failing)))
        };
        let (mut journal, _) = Journal::open(file("a"), file("b")).unwrap();
        journal.append(&mut put(b"kept")).unwrap();
        // One write of two frames whose sync fails: both are refused, though on disk.
        failing.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut both = put(b"retried");
        both.extend_from_slice(&put(b"lost"));
        assert!(journal.append(&mut both).is_err());
        failing.store(false, std::sync::atomic::Ordering::SeqCst);
        // The retry is byte for byte the first frame again and ends where it ended.
        journal.append(&mut put(b"retried")).unwrap();
        drop(journal);
        let (_, payloads) = open(dir.path());
        assert_eq!(keys(&payloads), [b"kept".to_vec(), b"retried".to_vec()]);
    }

    #[test]
    fn a_torn_frame_at_the_end_is_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path());
        journal.append(&mut put(b"kept")).unwrap();
        let mut torn = put(b"torn");
        seal(&mut torn, 1, 2);
        drop(journal);
        let path = ["a", "b"]
            .map(|n| dir.path().join(n))
            .into_iter()
            .find(|p| std::fs::read(p).unwrap().starts_with(MAGIC))
            .unwrap();
        let raw = std::fs::read(&path).unwrap();
        let (_, end) = frames(&raw[HEADER_LEN..], 1);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        FileExt::write_all_at(&file, &torn[..torn.len() - 2], HEADER + end as u64).unwrap();
        let (_, payloads) = open(dir.path());
        assert_eq!(keys(&payloads), [b"kept".to_vec()]);
    }
}
