//! [`RawValue`]: one MessagePack value of someone else's (a client's event payload, a
//! capsule's, an MCP tool's arguments), kept as its bytes.
//!
//! The daemon never decodes such a value into a tree: a tree of small values costs tens of
//! times its encoded size (a 16 MiB array of nils is over a gigabyte as `rmpv::Value`s).
//! A `RawValue` is checked once, where it enters (one well-formed value, nested no deeper
//! than [`MAX_DEPTH`]), then shared by reference count and written out as it is
//! (see [`raw`](super::raw)).
//!
//! Through serde it behaves like any value: serializing it streams its items to the
//! serializer (JSON for the CLI, MessagePack for a client's request); deserializing one
//! writes the items the deserializer visits straight back into MessagePack bytes. Neither
//! builds a tree, and both stop at the same depth.

use std::fmt;

use bytes::Bytes;
use rmp::encode::{self, ValueWriteError};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use super::EncodeError;
use super::raw::{Cursor, Item, MAX_DEPTH, MalformedValue, value_len};

/// The name `rmp_serde` and `rmpv` give a MessagePack extension seen through serde: a
/// newtype struct around `(type, data)`.
const EXT_STRUCT: &str = "_ExtStruct";

/// One MessagePack value, as its bytes: well formed, nested no deeper than [`MAX_DEPTH`].
/// Cloning shares the bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RawValue(Bytes);

impl RawValue {
    /// `nil`.
    pub fn nil() -> Self {
        Self(Bytes::from_static(&[0xc0]))
    }

    /// Checks that `bytes` are exactly one value, and keeps them.
    ///
    /// # Errors
    ///
    /// When they are not one well-formed value, nest too deep, or have bytes after it.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, MalformedValue> {
        let len = value_len(&bytes)?;
        if len != bytes.len() {
            return Err(MalformedValue::Trailing(bytes.len() - len));
        }
        Ok(Self(bytes))
    }

    /// As [`from_bytes`](Self::from_bytes), copying `bytes`.
    ///
    /// # Errors
    ///
    /// As [`from_bytes`](Self::from_bytes).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, MalformedValue> {
        // Checked before copying: a refused value costs no allocation.
        let len = value_len(bytes)?;
        if len != bytes.len() {
            return Err(MalformedValue::Trailing(bytes.len() - len));
        }
        Ok(Self(Bytes::copy_from_slice(bytes)))
    }

    /// A copy of `bytes`, which the caller has checked (with [`value_len`]) to be exactly
    /// one value.
    pub(super) fn checked(bytes: &[u8]) -> Self {
        Self(Bytes::copy_from_slice(bytes))
    }

    /// `value` as MessagePack, structs as maps keyed by field names (the shape of every
    /// payload on the wire).
    ///
    /// # Errors
    ///
    /// When `value` cannot be serialized, or nests too deep.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, EncodeError> {
        let bytes = rmp_serde::to_vec_named(value)?;
        Self::from_bytes(bytes.into())
            .map_err(|e| EncodeError::Encode(rmp_serde::encode::Error::Syntax(e.to_string())))
    }

    /// A decoded value, encoded (for clients and tests).
    ///
    /// # Errors
    ///
    /// When `value` nests too deep.
    pub fn from_value(value: &rmpv::Value) -> Result<Self, MalformedValue> {
        let mut bytes = Vec::new();
        // Writing into a `Vec` cannot fail.
        let _ = rmpv::encode::write_value(&mut bytes, value);
        Self::from_bytes(bytes.into())
    }

    /// The value decoded into a tree, for clients and tests: never in the daemon, where a
    /// tree costs many times the bytes.
    pub fn to_value(&self) -> rmpv::Value {
        // Checked when made: decoding cannot fail.
        rmpv::decode::read_value(&mut &self.0[..]).unwrap_or(rmpv::Value::Nil)
    }

    /// The value's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// How many bytes the value takes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a value takes at least one byte.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the value is `nil`.
    pub fn is_nil(&self) -> bool {
        self.0[..] == [0xc0]
    }
}

impl Default for RawValue {
    fn default() -> Self {
        Self::nil()
    }
}

impl fmt::Debug for RawValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A payload may be megabytes: its start is enough to tell values apart.
        const SHOWN: usize = 32;
        write!(f, "RawValue({} bytes: ", self.0.len())?;
        for byte in self.0.iter().take(SHOWN) {
            write!(f, "{byte:02x}")?;
        }
        if self.0.len() > SHOWN {
            f.write_str("..")?;
        }
        f.write_str(")")
    }
}

impl TryFrom<rmpv::Value> for RawValue {
    type Error = MalformedValue;

    fn try_from(value: rmpv::Value) -> Result<Self, MalformedValue> {
        Self::from_value(&value)
    }
}

impl TryFrom<&rmpv::Value> for RawValue {
    type Error = MalformedValue;

    fn try_from(value: &rmpv::Value) -> Result<Self, MalformedValue> {
        Self::from_value(value)
    }
}

// ----------------------------------------------------------------------------------------
// Serializing: the items, streamed to the serializer.

/// The next value under a cursor, serialized when asked (the cursor is shared by the items
/// of one array or map, which are read in order).
struct Next<'c, 'a>(&'c std::cell::RefCell<Cursor<'a>>);

impl Serialize for Next<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let item = self
            .0
            .borrow_mut()
            .item()
            .map_err(|e| ser::Error::custom(format!("a raw value is malformed: {e}")))?;
        match item {
            Item::Nil => serializer.serialize_unit(),
            Item::Bool(b) => serializer.serialize_bool(b),
            Item::UInt(n) => serializer.serialize_u64(n),
            Item::Int(n) => serializer.serialize_i64(n),
            Item::F32(x) => serializer.serialize_f32(x),
            Item::F64(x) => serializer.serialize_f64(x),
            // As `rmpv` does: a string that is not UTF-8 goes on as bytes.
            Item::Str(bytes) => match std::str::from_utf8(bytes) {
                Ok(s) => serializer.serialize_str(s),
                Err(_) => serializer.serialize_bytes(bytes),
            },
            Item::Bin(bytes) => serializer.serialize_bytes(bytes),
            Item::Ext(tag, data) => serializer
                .serialize_newtype_struct(EXT_STRUCT, &(tag, serde_bytes::Bytes::new(data))),
            Item::Array(n) => {
                let mut seq = serializer.serialize_seq(Some(n as usize))?;
                for _ in 0..n {
                    seq.serialize_element(&Next(self.0))?;
                }
                seq.end()
            }
            Item::Map(n) => {
                let mut map = serializer.serialize_map(Some(n as usize))?;
                for _ in 0..n {
                    map.serialize_key(&Next(self.0))?;
                    map.serialize_value(&Next(self.0))?;
                }
                map.end()
            }
        }
    }
}

impl Serialize for RawValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The value was checked when made: nesting, and so recursion, is bounded.
        Next(&std::cell::RefCell::new(Cursor::new(&self.0))).serialize(serializer)
    }
}

// ----------------------------------------------------------------------------------------
// Deserializing: what the deserializer visits, written back as MessagePack.

/// Writes the value a deserializer visits into `out`; `depth` arrays and maps are open
/// around it.
struct Transcode<'o> {
    out: &'o mut Vec<u8>,
    depth: usize,
}

impl Transcode<'_> {
    fn written<E: de::Error>(result: Result<(), ValueWriteError>) -> Result<(), E> {
        result.map_err(|e| E::custom(format!("cannot write MessagePack: {e}")))
    }

    /// Opens an array or map of `len` items (empty ones open nothing, as in `value_len`).
    fn open<E: de::Error>(&self, len: usize) -> Result<usize, E> {
        if len > 0 && self.depth + 1 > MAX_DEPTH {
            return Err(E::custom(format!(
                "arrays and maps are nested deeper than {MAX_DEPTH}"
            )));
        }
        Ok(self.depth + 1)
    }

    fn len<E: de::Error>(len: usize) -> Result<u32, E> {
        u32::try_from(len).map_err(|_| E::custom("more than 2^32 items"))
    }
}

impl<'de> DeserializeSeed<'de> for Transcode<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Transcode<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any MessagePack value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.out.push(0xc0);
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.out.push(if v { 0xc3 } else { 0xc2 });
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        Self::written(encode::write_uint(self.out, v).map(drop))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        Self::written(encode::write_sint(self.out, v).map(drop))
    }

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<(), E> {
        Self::written(encode::write_f32(self.out, v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        Self::written(encode::write_f64(self.out, v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        Self::written(encode::write_str(self.out, v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        Self::written(encode::write_bin(self.out, v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Deserializers that do not announce lengths (not MessagePack's) have their items
        // written apart, then counted.
        let Some(len) = seq.size_hint() else {
            let depth = self.open(1)?;
            let mut items = Vec::new();
            let mut len = 0;
            while seq
                .next_element_seed(Transcode {
                    out: &mut items,
                    depth,
                })?
                .is_some()
            {
                len += 1;
            }
            Self::written(encode::write_array_len(self.out, Self::len(len)?).map(drop))?;
            self.out.extend_from_slice(&items);
            return Ok(());
        };
        let depth = self.open(len)?;
        Self::written(encode::write_array_len(self.out, Self::len(len)?).map(drop))?;
        for _ in 0..len {
            let item = Transcode {
                out: &mut *self.out,
                depth,
            };
            if seq.next_element_seed(item)?.is_none() {
                return Err(de::Error::invalid_length(
                    len,
                    &"as many items as announced",
                ));
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let size_hint = map.size_hint();
        let mut entry = |out: &mut Vec<u8>, depth| -> Result<bool, A::Error> {
            if map.next_key_seed(Transcode { out, depth })?.is_none() {
                return Ok(false);
            }
            map.next_value_seed(Transcode {
                out: &mut *out,
                depth,
            })?;
            Ok(true)
        };
        let Some(len) = size_hint else {
            let depth = self.open(1)?;
            let mut entries = Vec::new();
            let mut len = 0;
            while entry(&mut entries, depth)? {
                len += 1;
            }
            Self::written(encode::write_map_len(self.out, Self::len(len)?).map(drop))?;
            self.out.extend_from_slice(&entries);
            return Ok(());
        };
        let depth = self.open(len)?;
        Self::written(encode::write_map_len(self.out, Self::len(len)?).map(drop))?;
        for _ in 0..len {
            if !entry(self.out, depth)? {
                return Err(de::Error::invalid_length(
                    len,
                    &"as many entries as announced",
                ));
            }
        }
        Ok(())
    }

    /// `rmp_serde` shows an extension as a newtype struct around `(type, data)`.
    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let (tag, data): (i8, serde_bytes::ByteBuf) = Deserialize::deserialize(deserializer)?;
        let len = Self::len(data.len())?;
        Self::written(encode::write_ext_meta(self.out, len, tag).map(drop))?;
        self.out.extend_from_slice(&data);
        Ok(())
    }
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        deserializer.deserialize_any(Transcode {
            out: &mut out,
            depth: 0,
        })?;
        Ok(Self(out.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(value: &rmpv::Value) -> Vec<u8> {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, value).unwrap();
        bytes
    }

    fn samples() -> Vec<rmpv::Value> {
        use rmpv::Value;
        vec![
            Value::Nil,
            Value::from(false),
            Value::from(7),
            Value::from(-3),
            Value::from(u64::MAX),
            Value::from(i64::MIN),
            Value::F32(1.5),
            Value::F64(-2.25),
            Value::from("hi"),
            Value::from("é".repeat(200)),
            Value::Binary(vec![0, 1, 255]),
            Value::Ext(-5, vec![1, 2, 3]),
            Value::Ext(9, vec![7; 16]),
            Value::Array(vec![Value::Nil, Value::from(1), Value::Array(vec![])]),
            Value::Map(vec![
                (Value::from("k"), Value::Map(vec![])),
                (Value::from(3), Value::Array(vec![Value::from("x")])),
            ]),
        ]
    }

    #[test]
    fn only_one_whole_value_is_a_raw_value() {
        assert!(RawValue::from_slice(&[0xc0]).unwrap().is_nil());
        assert_eq!(RawValue::from_slice(&[]), Err(MalformedValue::Truncated(0)));
        assert_eq!(
            RawValue::from_slice(&[0xc0, 0xc0]),
            Err(MalformedValue::Trailing(1))
        );
        let mut deep = vec![0x91; MAX_DEPTH + 1];
        deep.push(0xc0);
        assert!(matches!(
            RawValue::from_slice(&deep),
            Err(MalformedValue::TooDeep(_))
        ));
        assert!(RawValue::from_slice(&deep[1..]).is_ok());
    }

    #[test]
    fn serializing_writes_the_same_value() {
        for value in samples() {
            let raw = RawValue::from_value(&value).unwrap();
            assert_eq!(raw.to_value(), value);
            // Through serde into MessagePack, and into JSON as `rmpv` would write it.
            let again = rmp_serde::to_vec_named(&raw).unwrap();
            assert_eq!(rmpv::decode::read_value(&mut &again[..]).unwrap(), value);
            assert_eq!(
                serde_json::to_value(&raw).unwrap(),
                serde_json::to_value(&value).unwrap()
            );
        }
    }

    #[test]
    fn deserializing_writes_the_same_value() {
        for value in samples() {
            let bytes = encoded(&value);
            let raw: RawValue = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(raw.to_value(), value, "{raw:?}");
            // From a deserializer that does not announce lengths.
            let json = serde_json::to_string(&serde_json::json!([{"a": [1, "b"]}, {}])).unwrap();
            let raw: RawValue = serde_json::from_str(&json).unwrap();
            assert_eq!(
                raw.to_value(),
                rmpv::Value::Array(vec![
                    rmpv::Value::Map(vec![(
                        "a".into(),
                        rmpv::Value::Array(vec![1.into(), "b".into()])
                    )]),
                    rmpv::Value::Map(vec![]),
                ])
            );
        }
    }

    #[test]
    fn deserializing_stops_at_the_depth_limit() {
        let nested = |depth: usize| {
            let mut bytes = vec![0x91; depth];
            bytes.push(0xc0);
            bytes
        };
        let ok: RawValue = rmp_serde::from_slice(&nested(MAX_DEPTH)).unwrap();
        assert_eq!(ok.len(), MAX_DEPTH + 1);
        let err = rmp_serde::from_slice::<RawValue>(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert!(err.to_string().contains("deeper than 128"), "{err}");
        // Empty containers open nothing.
        let mut empty_inside = vec![0x91; MAX_DEPTH];
        empty_inside.push(0x90);
        assert!(rmp_serde::from_slice::<RawValue>(&empty_inside).is_ok());
    }

    #[test]
    fn debug_shows_the_start_only() {
        let raw = RawValue::from_value(&rmpv::Value::Binary(vec![0; 1000])).unwrap();
        let shown = format!("{raw:?}");
        assert!(shown.starts_with("RawValue(1003 bytes: c5"), "{shown}");
        assert!(shown.len() < 100, "{shown}");
    }
}
