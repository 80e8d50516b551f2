//! Tool arguments and results between the wire's MessagePack and MCP's JSON, within bounds.

use crate::protocol::raw::{Cursor, Item};

/// A JSON value as a MessagePack value (the wire's), through serde.
pub fn json_to_msgpack(value: &serde_json::Value) -> rmpv::Value {
    rmpv::ext::to_value(value).unwrap_or(rmpv::Value::Nil)
}

/// Most items (scalars, arrays, maps) in a tool's arguments: a JSON tree costs tens of bytes
/// an item, many times what the item takes in MessagePack.
pub const MAX_ARGUMENT_ITEMS: usize = 65_536;

/// A MessagePack value as JSON: maps need string keys, binary becomes an array of bytes.
///
/// # Errors
///
/// When the value has no JSON form (a map with non-string keys), or more than
/// [`MAX_ARGUMENT_ITEMS`] items.
pub fn msgpack_to_json(value: &crate::protocol::RawValue) -> Result<serde_json::Value, String> {
    json_shaped(&mut Cursor::new(value.as_bytes()), &mut 0)?;
    serde_json::to_value(value).map_err(|e| e.to_string())
}

/// Walks one value, counting its items into `items`, and checks that its maps are keyed by
/// strings; stops at the first item past [`MAX_ARGUMENT_ITEMS`].
fn json_shaped(cursor: &mut Cursor<'_>, items: &mut usize) -> Result<(), String> {
    *items += 1;
    if *items > MAX_ARGUMENT_ITEMS {
        return Err(format!(
            "more than {MAX_ARGUMENT_ITEMS} items (values, arrays and maps)"
        ));
    }
    // The value was checked when it arrived: reading it cannot fail, and nesting is bounded.
    match cursor.item().map_err(|e| e.to_string())? {
        Item::Array(n) => (0..n).try_for_each(|_| json_shaped(cursor, items)),
        Item::Map(n) => (0..n).try_for_each(|_| {
            if !matches!(cursor.item().map_err(|e| e.to_string())?, Item::Str(_)) {
                return Err("a map with keys that are not strings has no JSON form".into());
            }
            *items += 1;
            json_shaped(cursor, items)
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RawValue;

    fn raw(value: &rmpv::Value) -> RawValue {
        RawValue::from_value(value).unwrap()
    }

    #[test]
    fn arguments_become_json_within_their_bounds() {
        let args = raw(&rmpv::Value::Map(vec![
            ("text".into(), "hi".into()),
            (
                "n".into(),
                rmpv::Value::Array(vec![1.into(), rmpv::Value::Nil]),
            ),
        ]));
        assert_eq!(
            msgpack_to_json(&args).unwrap(),
            serde_json::json!({"text": "hi", "n": [1, null]})
        );
        let numbered = raw(&rmpv::Value::Map(vec![(1.into(), 2.into())]));
        assert!(
            msgpack_to_json(&numbered)
                .unwrap_err()
                .contains("not strings")
        );
        // The array and its items: one item too many, refused before any JSON is built.
        let items = |n: usize| raw(&rmpv::Value::Array(vec![rmpv::Value::Nil; n]));
        assert!(msgpack_to_json(&items(MAX_ARGUMENT_ITEMS - 1)).is_ok());
        let error = msgpack_to_json(&items(MAX_ARGUMENT_ITEMS)).unwrap_err();
        assert!(error.contains("more than 65536 items"), "{error}");
    }
}
