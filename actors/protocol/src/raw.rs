//! MessagePack passed on as it is: a capsule's command output, event payloads, tool
//! arguments.
//!
//! Rather than decode a value into a tree and encode the tree again, the daemon checks that
//! the bytes hold one well-formed value ([`value_len`], which walks the markers without
//! decoding them) and writes frames around those bytes: a command's reply
//! ([`encode_command_reply`]), an event ([`encode_event_frame`]), a capsule's event input
//! ([`write_event_input`]). Each writes what [`encode_frame`](super::encode_frame) or
//! `rmp_serde` writes for the same value; tests hold them to the same bytes. [`Cursor`] reads
//! a value's items one at a time, for the few places that look inside one (the request
//! envelope, a guest's error reply).

use std::io::Write;

use bytes::{BufMut, BytesMut};
use rmp::Marker;
use rmp::encode::{ValueWriteError, write_map_len, write_str, write_uint};

use super::codec::{EncodeError, LENGTH_PREFIX};
use super::value::RawValue;
use crate::RawEvent as Event;

/// Arrays and maps nested deeper than this are refused, so that clients decoding a reply
/// recursively (as serde does) cannot run out of stack; `serde_json`'s default limit is the
/// same.
pub const MAX_DEPTH: usize = 128;

/// Why bytes are not one MessagePack value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedValue {
    /// The bytes end inside a value.
    #[error("it ends in the middle of a value (at byte {0})")]
    Truncated(usize),
    /// A byte that MessagePack does not use as a marker (0xc1).
    #[error("byte {0} is not a MessagePack marker")]
    Reserved(usize),
    /// Arrays or maps nested deeper than [`MAX_DEPTH`].
    #[error("arrays and maps are nested deeper than {MAX_DEPTH} (at byte {0})")]
    TooDeep(usize),
    /// More bytes follow the value where it should stand alone.
    #[error("{0} bytes follow the value")]
    Trailing(usize),
}

impl MalformedValue {
    /// The same error, with its position counted from `by` bytes earlier.
    fn shifted(self, by: usize) -> Self {
        match self {
            Self::Truncated(at) => Self::Truncated(at + by),
            Self::Reserved(at) => Self::Reserved(at + by),
            Self::TooDeep(at) => Self::TooDeep(at + by),
            Self::Trailing(n) => Self::Trailing(n),
        }
    }
}

/// The length of the MessagePack value at the start of `bytes`: what follows it is not part
/// of it. Checks every marker and length on the way, without decoding strings or building
/// a tree (it keeps only a count per open array or map); the work is linear in the length
/// of `bytes`, whatever lengths they declare.
///
/// # Errors
///
/// When `bytes` do not start with one complete value, or nest deeper than [`MAX_DEPTH`].
pub fn value_len(bytes: &[u8]) -> Result<usize, MalformedValue> {
    let mut at: usize = 0;
    // Values still to read in each array or map being read (keys and values both count),
    // the outermost first; the bottom entry is the value itself.
    let mut open: Vec<u64> = Vec::with_capacity(8);
    open.push(1);
    while let Some(left) = open.last_mut() {
        if *left == 0 {
            open.pop();
            continue;
        }
        // A run of one-byte values (nil, booleans, small integers), as large arrays and
        // maps hold, is stepped over in one go.
        let run_end = bytes
            .len()
            .min(at.saturating_add(usize::try_from(*left).unwrap_or(usize::MAX)));
        let run_start = at;
        // Eight at a time while they are all nils or all small integers, then one by one.
        while let Some(word) = bytes.get(at..at + 8).filter(|_| at + 8 <= run_end) {
            let word = u64::from_le_bytes(word.try_into().unwrap_or([0x80; 8]));
            if word != EIGHT_NILS && word & EIGHT_HIGH_BITS != 0 {
                break;
            }
            at += 8;
        }
        while at < run_end && is_one_byte(bytes[at]) {
            at += 1;
        }
        *left -= (at - run_start) as u64;
        if *left == 0 {
            continue;
        }
        *left -= 1;
        let start = at;
        let byte = *bytes.get(at).ok_or(MalformedValue::Truncated(at))?;
        at += 1;
        // Bytes to step over (data, or an extension's type byte and data), and items that
        // follow (an array's values, a map's keys and values).
        let (skip, items) = match byte {
            0x80..=0x8f => (0, 2 * u64::from(byte & 0x0f)),
            0x90..=0x9f => (0, u64::from(byte & 0x0f)),
            0xa0..=0xbf => (usize::from(byte & 0x1f), 0),
            0xc1 => return Err(MalformedValue::Reserved(start)),
            0xc4 | 0xd9 => (read_len(bytes, &mut at, 1)?, 0),
            0xc5 | 0xda => (read_len(bytes, &mut at, 2)?, 0),
            0xc6 | 0xdb => (read_len(bytes, &mut at, 4)?, 0),
            0xc7 => (read_len(bytes, &mut at, 1)? + 1, 0),
            0xc8 => (read_len(bytes, &mut at, 2)? + 1, 0),
            0xc9 => (read_len(bytes, &mut at, 4)? + 1, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 | 0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xd6 => (5, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, read_len(bytes, &mut at, 2)? as u64),
            0xdd => (0, read_len(bytes, &mut at, 4)? as u64),
            0xde => (0, 2 * read_len(bytes, &mut at, 2)? as u64),
            0xdf => (0, 2 * read_len(bytes, &mut at, 4)? as u64),
            // The one-byte values: nil, booleans, fixints.
            _ => (0, 0),
        };
        at = at
            .checked_add(skip)
            .filter(|end| *end <= bytes.len())
            .ok_or(MalformedValue::Truncated(bytes.len()))?;
        if items > 0 {
            // `open` holds the value's own entry under the containers.
            if open.len() > MAX_DEPTH {
                return Err(MalformedValue::TooDeep(start));
            }
            open.push(items);
        }
    }
    Ok(at)
}

/// Eight nils, as one word.
const EIGHT_NILS: u64 = 0xc0c0_c0c0_c0c0_c0c0;
/// The high bit of each of eight bytes: clear in all of them when all are positive fixints.
const EIGHT_HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Whether `byte` is a whole value: nil, a boolean or a fixint.
#[allow(
    clippy::inline_always,
    reason = "called once a byte in the walker's hottest loop, also in debug builds"
)]
#[inline(always)]
fn is_one_byte(byte: u8) -> bool {
    !(0x80..0xe0).contains(&byte) || matches!(byte, 0xc0 | 0xc2 | 0xc3)
}

/// Reads a big-endian length of `width` bytes at `at`, and moves past it.
fn read_len(bytes: &[u8], at: &mut usize, width: usize) -> Result<usize, MalformedValue> {
    let field = bytes
        .get(*at..*at + width)
        .ok_or(MalformedValue::Truncated(*at))?;
    *at += width;
    Ok(field.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b)))
}

/// One item of a MessagePack value as a [`Cursor`] reads it: a scalar, or the header of an
/// array or map (whose items follow it: `n` values, or `n` keys and values).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Item<'a> {
    /// `nil`.
    Nil,
    /// `true` or `false`.
    Bool(bool),
    /// A non-negative integer.
    UInt(u64),
    /// An integer written with a signed marker, or a negative fixint.
    Int(i64),
    /// A 32-bit float.
    F32(f32),
    /// A 64-bit float.
    F64(f64),
    /// A string's bytes (UTF-8 is not checked).
    Str(&'a [u8]),
    /// Binary data.
    Bin(&'a [u8]),
    /// An extension: its type and data.
    Ext(i8, &'a [u8]),
    /// An array of this many values.
    Array(u32),
    /// A map of this many entries.
    Map(u32),
}

/// Reads MessagePack items one at a time, without decoding more than the item asked for.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.at
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.bytes[self.at..]
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], MalformedValue> {
        let field = self
            .at
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.at..end))
            .ok_or(MalformedValue::Truncated(self.bytes.len()))?;
        self.at += n;
        Ok(field)
    }

    fn uint(&mut self, width: usize) -> Result<u64, MalformedValue> {
        Ok(self
            .take(width)?
            .iter()
            .fold(0u64, |n, b| (n << 8) | u64::from(*b)))
    }

    fn len(&mut self, width: usize) -> Result<usize, MalformedValue> {
        // At most 32 bits wide: fits a `usize` on every target this daemon builds for.
        Ok(usize::try_from(self.uint(width)?).unwrap_or(usize::MAX))
    }

    fn ext(&mut self, len: usize) -> Result<Item<'a>, MalformedValue> {
        let tag = self.take(1)?[0].cast_signed();
        Ok(Item::Ext(tag, self.take(len)?))
    }

    /// Steps over `n` bytes (no further than the end).
    pub fn skip_bytes(&mut self, n: usize) {
        self.at = self.at.saturating_add(n).min(self.bytes.len());
    }

    /// Reads the next item: a whole scalar, or only the header of an array or map.
    ///
    /// # Errors
    ///
    /// When the bytes end inside the item, or hold a reserved marker.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the width read is the type's"
    )]
    pub fn item(&mut self) -> Result<Item<'a>, MalformedValue> {
        let start = self.at;
        let byte = self.take(1)?[0];
        Ok(match Marker::from_u8(byte) {
            Marker::Null => Item::Nil,
            Marker::True => Item::Bool(true),
            Marker::False => Item::Bool(false),
            Marker::FixPos(n) => Item::UInt(u64::from(n)),
            Marker::FixNeg(n) => Item::Int(i64::from(n)),
            Marker::U8 => Item::UInt(self.uint(1)?),
            Marker::U16 => Item::UInt(self.uint(2)?),
            Marker::U32 => Item::UInt(self.uint(4)?),
            Marker::U64 => Item::UInt(self.uint(8)?),
            Marker::I8 => Item::Int(i64::from((self.uint(1)? as u8).cast_signed())),
            Marker::I16 => Item::Int(i64::from((self.uint(2)? as u16).cast_signed())),
            Marker::I32 => Item::Int(i64::from((self.uint(4)? as u32).cast_signed())),
            Marker::I64 => Item::Int(self.uint(8)?.cast_signed()),
            Marker::F32 => Item::F32(f32::from_bits(self.uint(4)? as u32)),
            Marker::F64 => Item::F64(f64::from_bits(self.uint(8)?)),
            Marker::FixStr(n) => Item::Str(self.take(usize::from(n))?),
            Marker::Str8 => Item::Str(self.len(1).and_then(|n| self.take(n))?),
            Marker::Str16 => Item::Str(self.len(2).and_then(|n| self.take(n))?),
            Marker::Str32 => Item::Str(self.len(4).and_then(|n| self.take(n))?),
            Marker::Bin8 => Item::Bin(self.len(1).and_then(|n| self.take(n))?),
            Marker::Bin16 => Item::Bin(self.len(2).and_then(|n| self.take(n))?),
            Marker::Bin32 => Item::Bin(self.len(4).and_then(|n| self.take(n))?),
            Marker::FixArray(n) => Item::Array(u32::from(n)),
            Marker::Array16 => Item::Array(self.uint(2)? as u32),
            Marker::Array32 => Item::Array(self.uint(4)? as u32),
            Marker::FixMap(n) => Item::Map(u32::from(n)),
            Marker::Map16 => Item::Map(self.uint(2)? as u32),
            Marker::Map32 => Item::Map(self.uint(4)? as u32),
            Marker::FixExt1 => self.ext(1)?,
            Marker::FixExt2 => self.ext(2)?,
            Marker::FixExt4 => self.ext(4)?,
            Marker::FixExt8 => self.ext(8)?,
            Marker::FixExt16 => self.ext(16)?,
            Marker::Ext8 => self.len(1).and_then(|n| self.ext(n))?,
            Marker::Ext16 => self.len(2).and_then(|n| self.ext(n))?,
            Marker::Ext32 => self.len(4).and_then(|n| self.ext(n))?,
            Marker::Reserved => return Err(MalformedValue::Reserved(start)),
        })
    }

    /// Reads the next whole value (nested no deeper than [`MAX_DEPTH`]) and returns its
    /// bytes.
    ///
    /// # Errors
    ///
    /// As [`value_len`]; positions count from the start of the cursor's bytes.
    pub fn value(&mut self) -> Result<&'a [u8], MalformedValue> {
        let len = value_len(self.rest()).map_err(|e| e.shifted(self.at))?;
        self.take(len)
    }
}

/// The message of a guest's `{"error": "..."}` reply: a map of that one entry, whose value
/// is a string. Reads no further than that entry.
pub fn error_message(bytes: &[u8]) -> Option<String> {
    let mut cursor = Cursor::new(bytes);
    if cursor.item().ok()? != Item::Map(1) || cursor.item().ok()? != Item::Str(b"error") {
        return None;
    }
    match cursor.item().ok()? {
        Item::Str(message) => Some(String::from_utf8_lossy(message).into_owned()),
        _ => None,
    }
}

/// Appends one frame whose body `write` writes: the length prefix, then the body.
///
/// # Errors
///
/// When the body does not fit a 32-bit length; `dst` is left as it was.
fn write_frame(
    dst: &mut BytesMut,
    write: impl FnOnce(&mut bytes::buf::Writer<&mut BytesMut>) -> Result<(), ValueWriteError>,
) -> Result<(), EncodeError> {
    let start = dst.len();
    dst.put_u32(0);
    let mut out = dst.writer();
    let written = write(&mut out);
    let dst = out.into_inner();
    let body = dst.len() - start - LENGTH_PREFIX;
    // Writing into memory fails only when a length does not fit MessagePack's 32 bits.
    let len = written
        .ok()
        .and_then(|()| u32::try_from(body).ok())
        .ok_or(EncodeError::TooLarge(body));
    match len {
        Ok(len) => {
            dst[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
            Ok(())
        }
        Err(e) => {
            dst.truncate(start);
            Err(e)
        }
    }
}

fn write_raw(out: &mut impl Write, bytes: &[u8]) -> Result<(), ValueWriteError> {
    out.write_all(bytes)
        .map_err(ValueWriteError::InvalidDataWrite)
}

/// Appends the reply frame to request `id` whose result is the [`CommandOutput`]
/// (`capsule`, `command`, `output`), with `output` copied as it is: it must be one
/// MessagePack value (see [`value_len`]).
///
/// [`CommandOutput`]: super::CommandOutput
///
/// # Errors
///
/// When the frame would not fit a 32-bit length; `dst` is left as it was.
pub fn encode_command_reply(
    dst: &mut BytesMut,
    id: u64,
    capsule: &str,
    command: &str,
    output: &[u8],
) -> Result<(), EncodeError> {
    dst.reserve(LENGTH_PREFIX + 64 + capsule.len() + command.len() + output.len());
    write_frame(dst, |out| {
        write_map_len(out, 2)?;
        write_str(out, "id")?;
        write_uint(out, id)?;
        write_str(out, "result")?;
        write_map_len(out, 3)?;
        write_str(out, "capsule")?;
        write_str(out, capsule)?;
        write_str(out, "command")?;
        write_str(out, command)?;
        write_str(out, "output")?;
        write_raw(out, output)
    })
}

/// An event frame's body is at most its payload, topic and source, plus this many bytes
/// (field names, headers, and the two integers at their widest).
pub const EVENT_ENVELOPE: usize = 96;

/// Appends the frame `{"event": event}` that a subscriber receives, with the payload copied
/// as it is (the frame [`encode_frame`](super::encode_frame) writes for an
/// [`EventFrame`](super::EventFrame)).
///
/// # Errors
///
/// When the frame would not fit a 32-bit length; `dst` is left as it was.
pub fn encode_event_frame(dst: &mut BytesMut, event: &Event) -> Result<(), EncodeError> {
    // Room for the whole frame at once: a large payload is copied once, not once per growth.
    dst.reserve(
        LENGTH_PREFIX
            + event.payload.len()
            + event.topic.len()
            + event.source.len()
            + EVENT_ENVELOPE,
    );
    write_frame(dst, |out| {
        write_map_len(out, 1)?;
        write_str(out, "event")?;
        write_map_len(out, 5)?;
        write_str(out, "topic")?;
        write_str(out, &event.topic)?;
        write_str(out, "payload")?;
        write_raw(out, event.payload.as_bytes())?;
        write_str(out, "seq")?;
        write_uint(out, event.seq)?;
        write_str(out, "source")?;
        write_str(out, &event.source)?;
        write_str(out, "time_ms")?;
        write_uint(out, event.time_ms)?;
        Ok(())
    })
}

/// Writes `{"topic": topic, "payload": payload}` (a capsule's `astrid_event` and
/// `astrid_intercept` input) into `out`, after what it holds.
pub fn write_event_input(out: &mut Vec<u8>, topic: &str, payload: &RawValue) {
    // Writing into a `Vec` cannot fail; a topic is at most 255 bytes.
    let _ = (|| -> Result<(), ValueWriteError> {
        write_map_len(out, 2)?;
        write_str(out, "topic")?;
        write_str(out, topic)?;
        write_str(out, "payload")?;
        write_raw(out, payload.as_bytes())
    })();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CommandOutput, ReplyFrame, encode_frame};

    fn encoded(value: &rmpv::Value) -> Vec<u8> {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, value).unwrap();
        bytes
    }

    fn samples() -> Vec<rmpv::Value> {
        use rmpv::Value;
        vec![
            Value::Nil,
            Value::from(true),
            Value::from(7),
            Value::from(-3),
            Value::from(200u64),
            Value::from(-200),
            Value::from(70_000),
            Value::from(u64::MAX),
            Value::from(i64::MIN),
            Value::F32(1.5),
            Value::F64(2.5),
            Value::from("hi"),
            Value::from("x".repeat(40)),
            Value::from("y".repeat(300)),
            Value::from("z".repeat(70_000)),
            Value::Binary(vec![1, 2, 3]),
            Value::Binary(vec![0; 300]),
            Value::Binary(vec![0; 70_000]),
            Value::Ext(1, vec![9]),
            Value::Ext(2, vec![9; 2]),
            Value::Ext(3, vec![9; 4]),
            Value::Ext(4, vec![9; 8]),
            Value::Ext(5, vec![9; 16]),
            Value::Ext(6, vec![9; 3]),
            Value::Ext(7, vec![9; 300]),
            Value::Ext(8, vec![9; 70_000]),
            Value::Array((0..20).map(Value::from).collect()),
            Value::Array((0..70_000).map(Value::from).collect()),
            Value::Map(vec![
                ("command".into(), "echo".into()),
                ("args".into(), Value::Array(vec!["a".into(), "b".into()])),
            ]),
            Value::Map((0..20).map(|i| (Value::from(i), Value::Nil)).collect()),
            Value::Map((0..70_000).map(|i| (Value::from(i), Value::Nil)).collect()),
        ]
    }

    #[test]
    fn the_length_of_every_kind_of_value_is_found() {
        for value in samples() {
            let mut bytes = encoded(&value);
            let len = bytes.len();
            assert_eq!(value_len(&bytes), Ok(len), "{value:?}");
            bytes.extend_from_slice(&[0xc0, 0x01]);
            assert_eq!(
                value_len(&bytes),
                Ok(len),
                "trailing bytes are not the value's"
            );
        }
    }

    #[test]
    fn a_cut_value_is_refused() {
        for value in samples() {
            let bytes = encoded(&value);
            for cut in 0..bytes.len().min(64) {
                assert!(
                    matches!(value_len(&bytes[..cut]), Err(MalformedValue::Truncated(_))),
                    "{value:?} cut at {cut}"
                );
            }
            assert!(value_len(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    #[test]
    fn reserved_bytes_and_impossible_lengths_are_refused() {
        assert_eq!(value_len(&[0xc1]), Err(MalformedValue::Reserved(0)));
        assert_eq!(
            value_len(&[0x92, 0x01, 0xc1]),
            Err(MalformedValue::Reserved(2))
        );
        // An array claiming four billion items, and a string claiming four gigabytes.
        assert!(value_len(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        assert!(value_len(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'a']).is_err());
        assert_eq!(value_len(&[]), Err(MalformedValue::Truncated(0)));
    }

    #[test]
    fn nesting_is_allowed_up_to_the_limit() {
        let nested = |depth: usize| {
            let mut bytes = vec![0x91; depth];
            bytes.push(0xc0);
            bytes
        };
        let deepest = nested(MAX_DEPTH);
        assert_eq!(value_len(&deepest), Ok(deepest.len()));
        assert_eq!(
            value_len(&nested(MAX_DEPTH + 1)),
            Err(MalformedValue::TooDeep(MAX_DEPTH))
        );
        // Empty containers open nothing.
        let flat = vec![0x90; 10_000];
        assert_eq!(value_len(&flat), Ok(1));
        let mut wide = vec![0xdc, 0x27, 0x10];
        wide.extend(std::iter::repeat_n(0x90, 10_000));
        assert_eq!(value_len(&wide), Ok(wide.len()));
    }

    #[test]
    fn only_a_single_error_key_is_a_guest_error() {
        let err = rmpv::Value::Map(vec![("error".into(), "no".into())]);
        assert_eq!(error_message(&encoded(&err)).as_deref(), Some("no"));
        // The same map with a wider length field than needed.
        let mut wide = vec![0xde, 0, 1];
        wide.extend_from_slice(&encoded(&err)[1..]);
        assert_eq!(error_message(&wide).as_deref(), Some("no"));
        let more = rmpv::Value::Map(vec![
            ("error".into(), "no".into()),
            ("data".into(), 1.into()),
        ]);
        assert_eq!(error_message(&encoded(&more)), None);
        let not_text = rmpv::Value::Map(vec![("error".into(), 1.into())]);
        assert_eq!(error_message(&encoded(&not_text)), None);
        assert_eq!(error_message(&encoded(&rmpv::Value::from("error"))), None);
        // A huge value under `error` is not read: its header says it is no string.
        let mut huge = vec![0x81, 0xa5];
        huge.extend_from_slice(b"error");
        huge.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(error_message(&huge), None);
    }

    #[test]
    fn the_cursor_reads_every_item_as_rmpv_decodes_it() {
        use rmpv::Value;
        fn read(cursor: &mut Cursor<'_>) -> Value {
            match cursor.item().unwrap() {
                Item::Nil => Value::Nil,
                Item::Bool(b) => Value::from(b),
                Item::UInt(n) => Value::from(n),
                Item::Int(n) => Value::from(n),
                Item::F32(x) => Value::F32(x),
                Item::F64(x) => Value::F64(x),
                Item::Str(s) => Value::from(std::str::from_utf8(s).unwrap()),
                Item::Bin(b) => Value::Binary(b.to_vec()),
                Item::Ext(tag, data) => Value::Ext(tag, data.to_vec()),
                Item::Array(n) => Value::Array((0..n).map(|_| read(cursor)).collect()),
                Item::Map(n) => Value::Map((0..n).map(|_| (read(cursor), read(cursor))).collect()),
            }
        }
        for value in samples() {
            let bytes = encoded(&value);
            let mut cursor = Cursor::new(&bytes);
            assert_eq!(read(&mut cursor), value);
            assert_eq!(cursor.position(), bytes.len());
            assert!(cursor.rest().is_empty());
            let mut cursor = Cursor::new(&bytes);
            assert_eq!(cursor.value().unwrap(), &bytes[..]);
        }
    }

    #[test]
    fn an_event_frame_is_the_frame_serde_writes() {
        use crate::EventFrame;
        use crate::RawEvent as Event;
        for (i, payload) in samples().into_iter().enumerate() {
            let event = Event {
                topic: "user.x".into(),
                payload: RawValue::from_value(&payload).unwrap(),
                seq: [1, 300, u64::MAX][i % 3],
                source: "client:7".into(),
                time_ms: 1_700_000_000_000,
            };
            let mut ours = BytesMut::from(&b"kept"[..]);
            encode_event_frame(&mut ours, &event).unwrap();
            let mut serde = BytesMut::from(&b"kept"[..]);
            encode_frame(&mut serde, &EventFrame { event: &event }).unwrap();
            assert_eq!(ours, serde, "{payload:?}");
            // What a client decodes from it.
            let head: crate::FrameHead = rmp_serde::from_slice(&ours[8..]).unwrap();
            assert_eq!(head.event.unwrap().payload, payload);
        }
    }

    #[test]
    fn an_event_frame_is_no_longer_than_its_parts_and_the_envelope() {
        let event = Event {
            topic: "t".repeat(255),
            payload: RawValue::nil(),
            seq: u64::MAX,
            source: "s".repeat(70_000),
            time_ms: u64::MAX,
        };
        let mut frame = BytesMut::new();
        encode_event_frame(&mut frame, &event).unwrap();
        let body = frame.len() - LENGTH_PREFIX;
        assert!(
            body <= event.payload.len() + event.topic.len() + event.source.len() + EVENT_ENVELOPE
        );
    }

    #[test]
    fn an_event_input_is_what_serde_writes() {
        #[derive(serde::Serialize)]
        struct Input<'a> {
            topic: &'a str,
            payload: &'a rmpv::Value,
        }
        for payload in samples() {
            let mut ours = b"old".to_vec();
            write_event_input(&mut ours, "a.b", &RawValue::from_value(&payload).unwrap());
            let serde = rmp_serde::to_vec_named(&Input {
                topic: "a.b",
                payload: &payload,
            })
            .unwrap();
            assert_eq!(&ours[3..], &serde[..]);
        }
    }

    #[test]
    fn a_command_reply_is_the_frame_serde_writes() {
        for (i, output) in samples().into_iter().enumerate() {
            let id = [0, 5, 300, u64::MAX][i % 4];
            let mut ours = BytesMut::new();
            encode_command_reply(&mut ours, id, "echo", "say", &encoded(&output)).unwrap();
            let mut serde = BytesMut::new();
            let result = CommandOutput {
                capsule: "echo".into(),
                command: "say".into(),
                output,
            };
            encode_frame(
                &mut serde,
                &ReplyFrame {
                    id,
                    result: &result,
                },
            )
            .unwrap();
            assert_eq!(ours, serde, "{result:?}");
        }
        let mut buf = BytesMut::from(&b"kept"[..]);
        encode_command_reply(&mut buf, 1, "c", "d", &[0xc0]).unwrap();
        assert_eq!(&buf[..4], b"kept", "appended after what was there");
    }
}
