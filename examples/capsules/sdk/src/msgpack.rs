//! Just enough MessagePack for capsules: [`Value`] encodes replies and payloads (nil,
//! booleans, integers, floats, strings, binary, arrays and maps with string keys),
//! [`decode`] reads any value (an event's payload), [`decode_command`] reads the command
//! input `{"command": <str>, "args": [<str>, ...]}` and [`decode_event`] the event and
//! interceptor input `{"topic": <str>, "payload": <any>}`.

use std::fmt;

/// A MessagePack value: a reply, a payload to publish, or a payload received.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `nil`.
    Nil,
    /// `true` or `false`.
    Bool(bool),
    /// An integer, in the smallest encoding that holds it.
    Int(i64),
    /// A 64-bit float (a received 32-bit float is widened).
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// Binary data.
    Bin(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
    /// A map with string keys, in this order.
    Map(Vec<(String, Value)>),
    /// Any other value as its MessagePack bytes, written out as they are: what [`decode`]
    /// reads but [`Value`] does not model (extension types, unsigned integers above
    /// `i64::MAX`, maps with a key that is not a string, values nested deeper than
    /// [`MAX_DEPTH`]).
    Raw(Vec<u8>),
}

impl Value {
    /// The MessagePack bytes of this value.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the MessagePack bytes of this value to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Nil => out.push(0xc0),
            Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
            Value::Int(n) => write_int(out, *n),
            Value::Float(x) => {
                out.push(0xcb);
                out.extend_from_slice(&x.to_be_bytes());
            }
            Value::Str(s) => write_str(out, s),
            Value::Bin(bytes) => {
                write_len(out, bytes.len(), 0, 0, [0xc4, 0xc5, 0xc6]);
                out.extend_from_slice(bytes);
            }
            Value::Array(items) => {
                write_array_len(out, items.len());
                for item in items {
                    item.encode_into(out);
                }
            }
            Value::Map(entries) => {
                write_map_len(out, entries.len());
                for (key, value) in entries {
                    write_str(out, key);
                    value.encode_into(out);
                }
            }
            Value::Raw(bytes) => out.extend_from_slice(bytes),
        }
    }

    /// The string, if this is one.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one.
    #[must_use]
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The value under `key`, if this is a map that has it.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

/// Appends an integer: a fixint when it fits, else the smallest `uint` or `int` family.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn write_int(out: &mut Vec<u8>, n: i64) {
    match n {
        // Positive fixint 0x00..=0x7f, negative fixint 0xe0..=0xff.
        -32..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, n as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        0x1_0000_0000.. => {
            out.push(0xcf);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        -0x80..=-33 => out.extend_from_slice(&[0xd0, n as u8]),
        -0x8000..=-0x81 => {
            out.push(0xd1);
            out.extend_from_slice(&(n as i16).to_be_bytes());
        }
        -0x8000_0000..=-0x8001 => {
            out.push(0xd2);
            out.extend_from_slice(&(n as i32).to_be_bytes());
        }
        _ => {
            out.push(0xd3);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// Appends a string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_len(out, s.len(), 0xa0, 32, [0xd9, 0xda, 0xdb]);
    out.extend_from_slice(s.as_bytes());
}

/// Appends the header of an array of `n` items (the items follow).
pub fn write_array_len(out: &mut Vec<u8>, n: usize) {
    write_len(out, n, 0x90, 16, [0, 0xdc, 0xdd]);
}

/// Appends the header of a map of `n` entries (key, value, key, value... follow).
pub fn write_map_len(out: &mut Vec<u8>, n: usize) {
    write_len(out, n, 0x80, 16, [0, 0xde, 0xdf]);
}

/// A length: in the `fix` byte below `fix_max`, else after the 8-, 16- or 32-bit marker
/// (a 0 marker: no 8-bit form; a `fix_max` of 0: no fix form). Lengths are at most 4 GiB in
/// wasm32 memory.
#[allow(clippy::cast_possible_truncation)]
fn write_len(out: &mut Vec<u8>, n: usize, fix: u8, fix_max: usize, markers: [u8; 3]) {
    if n < fix_max {
        out.push(fix | n as u8);
    } else if n <= 0xff && markers[0] != 0 {
        out.extend_from_slice(&[markers[0], n as u8]);
    } else if n <= 0xffff {
        out.push(markers[1]);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(markers[2]);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// The input of `astrid_command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The command's name, without the slash.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
}

/// Why the input could not be read as a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError(&'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Reads `{"command": <str>, "args": [<str>, ...]}`. Other keys are skipped; a missing
/// `args` is an empty list.
///
/// # Errors
///
/// Anything else: not a map, a missing or mistyped `command`, a mistyped `args`, truncated
/// input or bytes after the map.
pub fn decode_command(bytes: &[u8]) -> Result<Command, DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    let mut command = None;
    let mut args = Vec::new();
    for _ in 0..r.map_len()? {
        match r.str()? {
            "command" => command = Some(r.str()?.to_owned()),
            "args" => {
                let n = r.array_len()?;
                // Each item takes at least a byte: do not trust `n` for the capacity.
                args = Vec::with_capacity(n.min(r.bytes.len() - r.pos));
                for _ in 0..n {
                    args.push(r.str()?.to_owned());
                }
            }
            _ => r.skip()?,
        }
    }
    if r.pos != bytes.len() {
        return Err(DecodeError("bytes after the input map"));
    }
    let command = command.ok_or(DecodeError("no `command` string in the input map"))?;
    Ok(Command { command, args })
}

/// The input of `astrid_event` and `astrid_intercept`: an event on the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Value,
}

/// Reads `{"topic": <str>, "payload": <any>}`. Other keys are skipped; a missing `payload`
/// is nil.
///
/// # Errors
///
/// Anything else: not a map, a missing or mistyped `topic`, a payload that is not
/// MessagePack, truncated input or bytes after the map.
pub fn decode_event(bytes: &[u8]) -> Result<Event, DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    let mut topic = None;
    let mut payload = Value::Nil;
    for _ in 0..r.map_len()? {
        match r.str()? {
            "topic" => topic = Some(r.str()?.to_owned()),
            "payload" => payload = r.value(1)?,
            _ => r.skip()?,
        }
    }
    if r.pos != bytes.len() {
        return Err(DecodeError("bytes after the input map"));
    }
    let topic = topic.ok_or(DecodeError("no `topic` string in the input map"))?;
    Ok(Event { topic, payload })
}

/// How deep [`decode`] builds values: anything nested deeper is kept as [`Value::Raw`] (so
/// that no input can overflow the guest's stack).
pub const MAX_DEPTH: usize = 32;

/// Reads one MessagePack value, the whole of `bytes`.
///
/// # Errors
///
/// Bytes that are not one MessagePack value: truncated, followed by more bytes, `0xc1`, or a
/// string that is not UTF-8.
pub fn decode(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    let value = r.value(0)?;
    if r.pos != bytes.len() {
        return Err(DecodeError("bytes after the value"));
    }
    Ok(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(DecodeError("truncated input"))?;
        let taken = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.bytes
            .get(self.pos)
            .copied()
            .ok_or(DecodeError("truncated input"))
    }

    /// A big-endian unsigned integer of `n` (1, 2, 4 or 8) bytes.
    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// A big-endian two's complement integer of `n` (1, 2, 4 or 8) bytes.
    fn be_signed(&mut self, n: usize) -> Result<i64, DecodeError> {
        let bits = self.be(n)?;
        // Sign-extend from `8 * n` bits.
        let unused = 64 - 8 * u32::try_from(n).unwrap_or(8);
        Ok((bits << unused).cast_signed() >> unused)
    }

    /// A length of `n` (1, 2 or 4) bytes.
    fn uint(&mut self, n: usize) -> Result<usize, DecodeError> {
        usize::try_from(self.be(n)?).map_err(|_| DecodeError("a length beyond memory"))
    }

    /// Room for `n` items, each of which takes at least a byte of what is left.
    fn capacity(&self, n: usize) -> usize {
        n.min(self.bytes.len() - self.pos)
    }

    /// The value at `start..pos` (after skipping it), as it is.
    fn raw_from(&mut self, start: usize) -> Result<Value, DecodeError> {
        self.pos = start;
        self.skip()?;
        Ok(Value::Raw(self.bytes[start..self.pos].to_vec()))
    }

    /// One value of any type, at nesting `depth` (0 for the outermost).
    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let start = self.pos;
        if depth > MAX_DEPTH {
            return self.raw_from(start);
        }
        let value = match self.peek()? {
            0xa0..=0xbf | 0xd9..=0xdb => Value::Str(self.str()?.to_owned()),
            0x90..=0x9f | 0xdc | 0xdd => {
                let n = self.array_len()?;
                let mut items = Vec::with_capacity(self.capacity(n));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            0x80..=0x8f | 0xde | 0xdf => {
                let n = self.map_len()?;
                let mut entries = Vec::with_capacity(self.capacity(n));
                for _ in 0..n {
                    if !matches!(self.peek()?, 0xa0..=0xbf | 0xd9..=0xdb) {
                        // A key that is not a string: keep the whole map as it is.
                        return self.raw_from(start);
                    }
                    let key = self.str()?.to_owned();
                    entries.push((key, self.value(depth + 1)?));
                }
                Value::Map(entries)
            }
            marker => {
                self.pos += 1;
                match marker {
                    0x00..=0x7f | 0xe0..=0xff => Value::Int(i64::from(marker.cast_signed())),
                    0xc0 => Value::Nil,
                    0xc2 => Value::Bool(false),
                    0xc3 => Value::Bool(true),
                    0xcc..=0xce => Value::Int(self.be(1 << (marker - 0xcc))?.cast_signed()),
                    0xcf => match i64::try_from(self.be(8)?) {
                        Ok(n) => Value::Int(n),
                        Err(_) => return self.raw_from(start),
                    },
                    0xd0..=0xd3 => Value::Int(self.be_signed(1 << (marker - 0xd0))?),
                    0xca => {
                        let bits = u32::try_from(self.be(4)?).unwrap_or_default();
                        Value::Float(f64::from(f32::from_bits(bits)))
                    }
                    0xcb => Value::Float(f64::from_bits(self.be(8)?)),
                    0xc4..=0xc6 => {
                        let n = self.uint(1 << (marker - 0xc4))?;
                        Value::Bin(self.take(n)?.to_vec())
                    }
                    0xc1 => return Err(DecodeError("0xc1 is not MessagePack")),
                    // Extension types.
                    _ => return self.raw_from(start),
                }
            }
        };
        Ok(value)
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = match self.byte()? {
            b @ 0xa0..=0xbf => usize::from(b & 0x1f),
            0xd9 => self.uint(1)?,
            0xda => self.uint(2)?,
            0xdb => self.uint(4)?,
            _ => return Err(DecodeError("expected a string")),
        };
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError("a string is not UTF-8"))
    }

    fn array_len(&mut self) -> Result<usize, DecodeError> {
        match self.byte()? {
            b @ 0x90..=0x9f => Ok(usize::from(b & 0x0f)),
            0xdc => self.uint(2),
            0xdd => self.uint(4),
            _ => Err(DecodeError("expected an array")),
        }
    }

    fn map_len(&mut self) -> Result<usize, DecodeError> {
        match self.byte()? {
            b @ 0x80..=0x8f => Ok(usize::from(b & 0x0f)),
            0xde => self.uint(2),
            0xdf => self.uint(4),
            _ => Err(DecodeError("expected a map")),
        }
    }

    /// Skips one value of any type, nested ones included (iteratively: no recursion, so a
    /// deeply nested input cannot overflow the stack).
    fn skip(&mut self) -> Result<(), DecodeError> {
        let mut pending: usize = 1;
        while pending > 0 {
            pending -= 1;
            let (bytes, items) = match self.byte()? {
                0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (0, 0),
                b @ 0x80..=0x8f => (0, 2 * usize::from(b & 0x0f)),
                b @ 0x90..=0x9f => (0, usize::from(b & 0x0f)),
                b @ 0xa0..=0xbf => (usize::from(b & 0x1f), 0),
                0xc4 | 0xd9 => (self.uint(1)?, 0),
                0xc5 | 0xda => (self.uint(2)?, 0),
                0xc6 | 0xdb => (self.uint(4)?, 0),
                0xc7 => (self.uint(1)?.saturating_add(1), 0), // ext: length, type, data
                0xc8 => (self.uint(2)?.saturating_add(1), 0),
                0xc9 => (self.uint(4)?.saturating_add(1), 0),
                // uint and int 8, 16, 32, 64; float 32, 64; fixext (type, data) 1, 2, 4, 8, 16.
                0xcc | 0xd0 => (1, 0),
                0xcd | 0xd1 | 0xd4 => (2, 0),
                0xd5 => (3, 0),
                0xca | 0xce | 0xd2 => (4, 0),
                0xd6 => (5, 0),
                0xcb | 0xcf | 0xd3 => (8, 0),
                0xd7 => (9, 0),
                0xd8 => (17, 0),
                0xdc => (0, self.uint(2)?),
                0xdd => (0, self.uint(4)?),
                0xde => (0, self.uint(2)?.saturating_mul(2)),
                0xdf => (0, self.uint(4)?.saturating_mul(2)),
                0xc1 => return Err(DecodeError("0xc1 is not MessagePack")),
            };
            self.take(bytes)?;
            // Every item takes at least a byte, so more than what is left cannot be there.
            pending = pending.saturating_add(items);
            if pending > self.bytes.len() - self.pos {
                return Err(DecodeError("truncated input"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_take_the_smallest_form() {
        let cases: [(i64, &[u8]); 14] = [
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0xcc, 0x80]),
            (256, &[0xcd, 0x01, 0x00]),
            (65_536, &[0xce, 0x00, 0x01, 0x00, 0x00]),
            (1 << 32, &[0xcf, 0, 0, 0, 1, 0, 0, 0, 0]),
            (-1, &[0xff]),
            (-32, &[0xe0]),
            (-33, &[0xd0, 0xdf]),
            (-128, &[0xd0, 0x80]),
            (-129, &[0xd1, 0xff, 0x7f]),
            (-32_769, &[0xd2, 0xff, 0xff, 0x7f, 0xff]),
            (i64::MIN, &[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            (
                i64::MAX,
                &[0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ),
        ];
        for (n, bytes) in cases {
            assert_eq!(Value::Int(n).encode(), bytes, "{n}");
        }
    }

    #[test]
    fn strings_arrays_and_maps() {
        assert_eq!(Value::from("").encode(), [0xa0]);
        assert_eq!(Value::from("hi").encode(), [0xa2, b'h', b'i']);
        let s31 = "x".repeat(31);
        assert_eq!(Value::from(s31.as_str()).encode()[0], 0xbf);
        let s32 = "x".repeat(32);
        assert_eq!(Value::from(s32.as_str()).encode()[..2], [0xd9, 32]);
        let s256 = "x".repeat(256);
        assert_eq!(Value::from(s256.as_str()).encode()[..3], [0xda, 1, 0]);
        let s65536 = "x".repeat(65_536);
        assert_eq!(
            Value::from(s65536.as_str()).encode()[..5],
            [0xdb, 0, 1, 0, 0]
        );
        assert_eq!(
            Value::Array(vec![Value::Nil; 16]).encode()[..3],
            [0xdc, 0, 16]
        );
        assert_eq!(
            Value::Map(vec![("error".into(), "no".into())]).encode(),
            [0x81, 0xa5, b'e', b'r', b'r', b'o', b'r', 0xa2, b'n', b'o']
        );
        assert_eq!(
            Value::Array(vec![true.into(), false.into(), Value::Nil]).encode(),
            [0x93, 0xc3, 0xc2, 0xc0]
        );
    }

    fn input(extra: &[u8], entries: u8) -> Vec<u8> {
        let mut out = vec![0x80 | entries];
        write_str(&mut out, "command");
        write_str(&mut out, "hello");
        out.extend_from_slice(extra);
        write_str(&mut out, "args");
        write_array_len(&mut out, 2);
        write_str(&mut out, "big");
        write_str(&mut out, &"w".repeat(40));
        out
    }

    #[test]
    fn commands_decode_and_unknown_keys_are_skipped() {
        let expected = Command {
            command: "hello".into(),
            args: vec!["big".into(), "w".repeat(40)],
        };
        assert_eq!(decode_command(&input(&[], 2)), Ok(expected.clone()));
        // An extra key whose value nests every other type.
        let mut extra = Vec::new();
        write_str(&mut extra, "meta");
        extra.extend_from_slice(&[0x94, 0x81, 0xa1, b'k', 0xcb]);
        extra.extend_from_slice(&1.5f64.to_be_bytes());
        extra.extend_from_slice(&[0xc4, 2, 9, 9, 0xd4, 1, 2, 0xdc, 0, 1, 0xd3]);
        extra.extend_from_slice(&[0; 8]);
        assert_eq!(decode_command(&input(&extra, 3)), Ok(expected));
        // No args: an empty list.
        let mut only = vec![0x81];
        write_str(&mut only, "command");
        write_str(&mut only, "x");
        assert_eq!(
            decode_command(&only),
            Ok(Command {
                command: "x".into(),
                args: vec![]
            })
        );
    }

    #[test]
    fn values_decode_as_they_encode() {
        let values = [
            Value::Nil,
            true.into(),
            false.into(),
            Value::Int(0),
            Value::Int(-1),
            Value::Int(-33),
            Value::Int(200),
            Value::Int(70_000),
            Value::Int(1 << 40),
            Value::Int(i64::MIN),
            Value::Int(i64::MAX),
            Value::Float(-2.5),
            "".into(),
            "x".repeat(300).into(),
            Value::Bin(vec![]),
            Value::Bin(vec![7; 256]),
            Value::Bin(vec![1; 70_000]),
            Value::Array(vec![Value::Nil; 20]),
            Value::Map(vec![
                ("a".into(), Value::Array(vec![1.into(), "b".into()])),
                ("c".into(), Value::Map(vec![])),
            ]),
        ];
        for value in values {
            assert_eq!(decode(&value.encode()), Ok(value.clone()), "{value:?}");
        }
        assert_eq!(decode(&[0xca, 0x3f, 0xc0, 0, 0]), Ok(Value::Float(1.5)));
        assert_eq!(decode(&[0xcc, 0xff]), Ok(Value::Int(255)));
        assert_eq!(decode(&[0xd1, 0xff, 0x7f]), Ok(Value::Int(-129)));
    }

    #[test]
    fn what_value_does_not_model_is_kept_raw() {
        let raws: [&[u8]; 4] = [
            &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // u64::MAX
            &[0xd4, 1, 2],                                           // fixext 1
            &[0xc7, 2, 5, 1, 2],                                     // ext 8
            &[0x82, 0xa1, b'k', 0xc0, 0x01, 0xc0],                   // a non-string key
        ];
        for raw in raws {
            assert_eq!(decode(raw), Ok(Value::Raw(raw.to_vec())), "{raw:x?}");
            assert_eq!(Value::Raw(raw.to_vec()).encode(), raw);
        }
        // Nested in an array, and written back byte for byte.
        let mut nested = vec![0x92, 0x01];
        nested.extend_from_slice(raws[1]);
        let value = decode(&nested).unwrap();
        assert_eq!(
            value,
            Value::Array(vec![1.into(), Value::Raw(raws[1].to_vec())])
        );
        assert_eq!(value.encode(), nested);
    }

    #[test]
    fn deep_nesting_is_kept_raw_past_the_limit() {
        let depth = 10_000;
        let mut deep = vec![0x91; depth];
        deep.push(0x01);
        let mut value = &decode(&deep).unwrap();
        for _ in 0..=MAX_DEPTH {
            match value {
                Value::Array(items) => value = &items[0],
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(value, Value::Raw(bytes) if bytes.len() == depth - MAX_DEPTH));
        assert_eq!(decode(&deep).unwrap().encode(), deep);
    }

    #[test]
    fn events_decode() {
        let mut input = vec![0x83];
        write_str(&mut input, "seq");
        input.push(0x07);
        write_str(&mut input, "topic");
        write_str(&mut input, "user.x");
        write_str(&mut input, "payload");
        input.extend(Value::Map(vec![("n".into(), 1.into())]).encode());
        let event = decode_event(&input).unwrap();
        assert_eq!(event.topic, "user.x");
        assert_eq!(event.payload.get("n").and_then(Value::as_int), Some(1));
        // No payload: nil.
        let mut bare = vec![0x81];
        write_str(&mut bare, "topic");
        write_str(&mut bare, "a");
        assert_eq!(
            decode_event(&bare),
            Ok(Event {
                topic: "a".into(),
                payload: Value::Nil
            })
        );
        for cut in 0..input.len() {
            assert!(decode_event(&input[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_event(&[0x80]).is_err(), "no topic");
        assert!(decode(&[0x01, 0x02]).is_err(), "trailing bytes");
        assert!(decode(&[0x92, 0x01, 0xc1]).is_err());
        assert!(decode(&[0xa1, 0xff]).is_err(), "not UTF-8");
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let good = input(&[], 2);
        for cut in 0..good.len() {
            assert!(decode_command(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode_command(&trailing).is_err());
        assert!(decode_command(&[0x90]).is_err());
        assert!(decode_command(&[0x81, 0xa1, b'x', 0xc1]).is_err());
        // A claimed array of 2^32 - 1 items in a few bytes.
        assert!(decode_command(&[0x81, 0xa1, b'x', 0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(
            decode_command(&[
                0x81, 0xa4, b'a', b'r', b'g', b's', 0xdd, 0xff, 0xff, 0xff, 0xff
            ])
            .is_err()
        );
        // No command.
        assert!(decode_command(&[0x80]).is_err());
    }
}
