//! MessagePack that a capsule wrote, passed on to the client as it is.
//!
//! A command's output is any MessagePack value of the guest's. Rather than decode it into a
//! tree and encode the tree again, the daemon checks that the guest's bytes hold one
//! well-formed value ([`value_len`], which walks the markers without decoding them) and writes
//! the reply frame around those bytes ([`encode_command_reply`]). The frame is the one
//! [`encode_frame`](super::encode_frame) writes for a [`ReplyFrame`](super::ReplyFrame) of a
//! [`CommandOutput`](super::CommandOutput); a test holds the two to the same bytes.

use std::io::Write;

use bytes::{BufMut, BytesMut};
use rmp::Marker;
use rmp::encode::{ValueWriteError, write_map_len, write_str, write_uint};

use super::codec::{EncodeError, LENGTH_PREFIX};

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
    let mut at = 0;
    // Values still to read in each array or map being read (keys and values both count),
    // the outermost first; the bottom entry is the value itself.
    let mut open: Vec<u64> = Vec::with_capacity(8);
    open.push(1);
    while let Some(left) = open.last_mut() {
        if *left == 0 {
            open.pop();
            continue;
        }
        *left -= 1;
        let byte = *bytes.get(at).ok_or(MalformedValue::Truncated(at))?;
        let start = at;
        at += 1;
        let mut length = |width: usize| -> Result<usize, MalformedValue> {
            let field = bytes
                .get(at..at + width)
                .ok_or(MalformedValue::Truncated(at))?;
            at += width;
            Ok(field.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b)))
        };
        let (skip, items) = match Marker::from_u8(byte) {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
                (0, 0)
            }
            // Fixed sizes: a number's bytes, or a fixed extension's type byte and data.
            Marker::U8 | Marker::I8 => (1, 0),
            Marker::U16 | Marker::I16 | Marker::FixExt1 => (2, 0),
            Marker::FixExt2 => (3, 0),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
            Marker::FixExt4 => (5, 0),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
            Marker::FixExt8 => (9, 0),
            Marker::FixExt16 => (17, 0),
            Marker::FixStr(n) => (usize::from(n), 0),
            Marker::Str8 | Marker::Bin8 => (length(1)?, 0),
            Marker::Str16 | Marker::Bin16 => (length(2)?, 0),
            Marker::Str32 | Marker::Bin32 => (length(4)?, 0),
            Marker::FixArray(n) => (0, u64::from(n)),
            Marker::Array16 => (0, length(2)? as u64),
            Marker::Array32 => (0, length(4)? as u64),
            Marker::FixMap(n) => (0, 2 * u64::from(n)),
            Marker::Map16 => (0, 2 * length(2)? as u64),
            Marker::Map32 => (0, 2 * length(4)? as u64),
            // The type byte, then the data.
            Marker::Ext8 => (length(1)? + 1, 0),
            Marker::Ext16 => (length(2)? + 1, 0),
            Marker::Ext32 => (length(4)? + 1, 0),
            Marker::Reserved => return Err(MalformedValue::Reserved(start)),
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

/// Whether a decoded value nests arrays and maps no deeper than [`MAX_DEPTH`] (event
/// payloads, which the bus hands on to every subscriber).
pub fn within_depth(value: &rmpv::Value) -> bool {
    // Values to look into, with the number of arrays and maps around them; as in
    // `value_len`, an empty array or map opens nothing.
    let mut open = vec![(value, 0usize)];
    while let Some((value, around)) = open.pop() {
        let inside = around + 1;
        match value {
            rmpv::Value::Array(items) if !items.is_empty() => {
                if inside > MAX_DEPTH {
                    return false;
                }
                open.extend(items.iter().map(|item| (item, inside)));
            }
            rmpv::Value::Map(entries) if !entries.is_empty() => {
                if inside > MAX_DEPTH {
                    return false;
                }
                open.extend(entries.iter().flat_map(|(k, v)| [(k, inside), (v, inside)]));
            }
            _ => {}
        }
    }
    true
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
    let start = dst.len();
    dst.put_u32(0);
    let mut out = dst.writer();
    let written = (|| -> Result<(), ValueWriteError> {
        write_map_len(&mut out, 2)?;
        write_str(&mut out, "id")?;
        write_uint(&mut out, id)?;
        write_str(&mut out, "result")?;
        write_map_len(&mut out, 3)?;
        write_str(&mut out, "capsule")?;
        write_str(&mut out, capsule)?;
        write_str(&mut out, "command")?;
        write_str(&mut out, command)?;
        write_str(&mut out, "output")?;
        out.write_all(output)
            .map_err(ValueWriteError::InvalidDataWrite)
    })();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CommandOutput, ReplyFrame, encode_frame};

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
    fn decoded_values_are_held_to_the_same_depth() {
        use rmpv::Value;
        let nested = |depth: usize, leaf: Value| {
            (0..depth).fold(leaf, |inner, i| {
                if i % 2 == 0 {
                    Value::Array(vec![inner])
                } else {
                    Value::Map(vec![(Value::from("k"), inner)])
                }
            })
        };
        assert!(within_depth(&Value::from(1)));
        assert!(within_depth(&nested(MAX_DEPTH, Value::Nil)));
        assert!(!within_depth(&nested(MAX_DEPTH + 1, Value::Nil)));
        // The same rule as for bytes, empty containers included.
        for (depth, leaf) in [
            (MAX_DEPTH, Value::Nil),
            (MAX_DEPTH + 1, Value::Nil),
            (MAX_DEPTH, Value::Array(vec![])),
            (MAX_DEPTH, Value::Map(vec![])),
            (MAX_DEPTH, Value::Array(vec![Value::Nil])),
        ] {
            let value = nested(depth, leaf);
            assert_eq!(
                within_depth(&value),
                value_len(&encoded(&value)).is_ok(),
                "{depth}"
            );
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
