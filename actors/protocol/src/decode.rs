//! Reading a request frame, once.
//!
//! The envelope `{"id": uint, "request": R}` is walked item by item ([`Cursor`]), so the id
//! is known whatever is wrong with the rest, and nothing is decoded twice to explain an
//! error. The variant's name is read first (an unknown one is told apart from a malformed
//! request); a `Publish`'s payload is kept as the client's bytes ([`RawValue`], checked as it
//! is walked); every other variant is decoded by serde from where it starts.
//!
//! An error reply carries the id when it could be read: when the `id` entry comes before
//! what is wrong (as clients write it), or when what is wrong is still well-formed
//! MessagePack that can be stepped over.

use std::io::Cursor as IoCursor;

use serde::Deserialize;

use super::raw::{Cursor, Item, MalformedValue};
use super::value::RawValue;
use super::{ProtocolError, Request, RequestFrame};

/// Why the request could not be read, and whether the cursor is past it (so the rest of the
/// envelope can still be read for the id).
enum Fault {
    /// The cursor is past the request value.
    Skipped(ProtocolError),
    /// The cursor is lost inside the request value.
    Lost(ProtocolError),
}

fn bad(message: impl Into<String>) -> ProtocolError {
    ProtocolError::BadRequest(message.into())
}

fn malformed(e: &MalformedValue) -> ProtocolError {
    bad(format!("not MessagePack: {e}"))
}

/// Decodes a request frame body. On failure, returns the id when one could be read (so the
/// error reply can echo it) and a [`ProtocolError`] telling an unknown variant apart from a
/// malformed request.
///
/// # Errors
///
/// `(id, BadRequest)` for anything that is not a well-formed request map,
/// `(id, UnknownRequest)` for a well-formed map naming an unknown variant,
/// `(id, PayloadTooDeep)` for a `Publish` whose payload nests deeper than [`MAX_DEPTH`](super::raw::MAX_DEPTH).
pub fn decode_request(body: &[u8]) -> Result<RequestFrame, (Option<u64>, ProtocolError)> {
    let mut cur = Cursor::new(body);
    let entries = match cur.item() {
        Ok(Item::Map(n)) => n,
        Ok(_) => return Err((None, bad("expected a map {id, request}"))),
        Err(e) => return Err((None, malformed(&e))),
    };
    let mut id = None;
    let mut id_seen = false;
    let mut request = None;
    for _ in 0..entries {
        let key = match cur.item() {
            Ok(Item::Str(key)) => key,
            Ok(_) => {
                let message = "expected a MessagePack map keyed by field names";
                return Err((id, bad(message)));
            }
            Err(e) => return Err((id, malformed(&e))),
        };
        let duplicate = match key {
            b"id" => id_seen,
            b"request" => request.is_some(),
            _ => false,
        };
        if duplicate {
            let field = String::from_utf8_lossy(key);
            return Err((id, bad(format!("duplicate field `{field}`"))));
        }
        match key {
            b"id" => {
                id_seen = true;
                let mut probe = cur.clone();
                match probe.item() {
                    Ok(Item::UInt(n)) => {
                        id = Some(n);
                        cur = probe;
                    }
                    Ok(Item::Int(n)) if n >= 0 => {
                        id = u64::try_from(n).ok();
                        cur = probe;
                    }
                    // Not an id: stepped over; reported below as a missing id.
                    _ => {
                        if let Err(e) = cur.value() {
                            return Err((None, malformed(&e)));
                        }
                    }
                }
            }
            b"request" => match read_request(&mut cur) {
                Ok(r) => request = Some(Ok(r)),
                Err(Fault::Skipped(e)) => request = Some(Err(e)),
                Err(Fault::Lost(e)) => return Err((id, e)),
            },
            // Unknown entries are ignored, as serde ignores unknown fields.
            _ => {
                if let Err(e) = cur.value() {
                    return Err((id, malformed(&e)));
                }
            }
        }
    }
    let trailing = cur.rest().len();
    if trailing > 0 {
        let message = format!("{trailing} bytes after the value; a frame holds one value");
        return Err((id, bad(message)));
    }
    let Some(id) = id else {
        return Err((None, bad("missing or invalid `id` (an unsigned integer)")));
    };
    match request {
        None => Err((Some(id), bad("missing field `request`"))),
        Some(Err(e)) => Err((Some(id), e)),
        Some(Ok(request)) => Ok(RequestFrame { id, request }),
    }
}

/// Steps over a value whose arrays and maps, below the first `levels` levels, nest no
/// deeper than [`MAX_DEPTH`](super::raw::MAX_DEPTH) (a request: the variant's map, its fields' map, then values).
fn skip_within(cur: &mut Cursor<'_>, levels: usize) -> Result<(), MalformedValue> {
    if levels == 0 {
        return cur.value().map(drop);
    }
    match cur.item()? {
        Item::Array(n) => (0..n).try_for_each(|_| skip_within(cur, levels - 1)),
        Item::Map(n) => (0..n).try_for_each(|_| {
            skip_within(cur, levels - 1)?;
            skip_within(cur, levels - 1)
        }),
        _ => Ok(()),
    }
}

/// The value of `request`: a variant name, or a one-entry map from the name to its fields.
fn read_request<'a>(cur: &mut Cursor<'a>) -> Result<Request, Fault> {
    let start = cur.clone();
    let skipped = |cur: &mut Cursor<'a>, error: ProtocolError| {
        *cur = start.clone();
        match skip_within(cur, 2) {
            Ok(()) => Fault::Skipped(error),
            Err(e) => Fault::Lost(malformed(&e)),
        }
    };
    let variant = match cur.item() {
        Ok(Item::Str(name)) => Some((name, false)),
        Ok(Item::Map(1)) => match cur.item() {
            Ok(Item::Str(name)) => Some((name, true)),
            _ => None,
        },
        Ok(_) => None,
        Err(e) => return Err(Fault::Lost(malformed(&e))),
    };
    let Some((name, has_fields)) = variant else {
        let error = bad("`request` must be a variant name or a one-entry map");
        return Err(skipped(cur, error));
    };
    let name = String::from_utf8_lossy(name);
    if !Request::NAMES.contains(&name.as_ref()) {
        let error = ProtocolError::UnknownRequest(name.into_owned());
        return Err(skipped(cur, error));
    }
    if has_fields && name == "Publish" {
        return read_publish(cur);
    }
    // Every other variant: serde, from the start of the value.
    let rest = start.rest();
    let mut de = rmp_serde::Deserializer::new(IoCursor::new(rest));
    match Request::deserialize(&mut de) {
        Ok(request) => {
            let used = usize::try_from(de.position()).unwrap_or(usize::MAX);
            // Serde read exactly this value: stepping over it again would find the same end.
            *cur = start;
            cur.skip_bytes(used);
            Ok(request)
        }
        Err(e) => Err(skipped(cur, bad(format!("{name}: {e}")))),
    }
}

/// A string field, or a message saying it is not one (the value is stepped over).
fn string_field(cur: &mut Cursor<'_>, field: &str) -> Result<Result<String, String>, Fault> {
    let mut probe = cur.clone();
    if let Ok(Item::Str(bytes)) = probe.item() {
        *cur = probe;
        return Ok(String::from_utf8(bytes.to_vec())
            .map_err(|_| format!("Publish: `{field}` is not valid UTF-8")));
    }
    cur.value().map_err(|e| Fault::Lost(malformed(&e)))?;
    Ok(Err(format!("Publish: `{field}` must be a string")))
}

/// `Publish`'s fields: `topic`, and `payload` kept as its bytes (nil when absent).
fn read_publish(cur: &mut Cursor<'_>) -> Result<Request, Fault> {
    let mut probe = cur.clone();
    let entries = match probe.item() {
        Ok(Item::Map(n)) => n,
        Ok(_) => {
            cur.value().map_err(|e| Fault::Lost(malformed(&e)))?;
            return Err(Fault::Skipped(bad("Publish: expected a map of fields")));
        }
        Err(e) => return Err(Fault::Lost(malformed(&e))),
    };
    *cur = probe;
    let mut topic = None;
    let mut payload = None;
    let mut problem = None;
    for _ in 0..entries {
        let key = match cur.item() {
            Ok(Item::Str(key)) => key,
            Ok(_) => return Err(Fault::Lost(bad("Publish: field names must be strings"))),
            Err(e) => return Err(Fault::Lost(malformed(&e))),
        };
        match key {
            b"topic" => {
                let value = string_field(cur, "topic")?;
                if topic.is_some() {
                    problem = Some("Publish: duplicate field `topic`".to_owned());
                }
                match value {
                    Ok(text) => topic = Some(text),
                    Err(message) => problem = Some(message),
                }
            }
            b"payload" => {
                let bytes = match cur.value() {
                    Ok(bytes) => bytes,
                    Err(MalformedValue::TooDeep(_)) => {
                        return Err(Fault::Lost(ProtocolError::PayloadTooDeep));
                    }
                    Err(e) => return Err(Fault::Lost(malformed(&e))),
                };
                if payload.is_some() {
                    problem = Some("Publish: duplicate field `payload`".to_owned());
                }
                payload = Some(RawValue::checked(bytes));
            }
            // Unknown fields are ignored, as serde ignores them.
            _ => {
                cur.value().map_err(|e| Fault::Lost(malformed(&e)))?;
            }
        }
    }
    if let Some(message) = problem {
        return Err(Fault::Skipped(bad(message)));
    }
    let Some(topic) = topic else {
        return Err(Fault::Skipped(bad("Publish: missing field `topic`")));
    };
    Ok(Request::Publish {
        topic,
        payload: payload.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::MAX_DEPTH;

    #[test]
    fn a_publish_payload_is_kept_as_the_clients_bytes() {
        // {"id": 5, "request": {"Publish": {"topic": "user.x", "payload": u16 7}}}: the
        // payload written wider than needed stays as written.
        let mut body = vec![0x82, 0xa2, b'i', b'd', 0x05, 0xa7];
        body.extend_from_slice(b"request");
        body.extend_from_slice(&[0x81, 0xa7]);
        body.extend_from_slice(b"Publish");
        body.extend_from_slice(&[0x82, 0xa5]);
        body.extend_from_slice(b"topic");
        body.extend_from_slice(&[0xa6]);
        body.extend_from_slice(b"user.x");
        body.extend_from_slice(&[0xa7]);
        body.extend_from_slice(b"payload");
        body.extend_from_slice(&[0xcd, 0x00, 0x07]);
        let frame = decode_request(&body).unwrap();
        assert_eq!(frame.id, 5);
        let Request::Publish { topic, payload } = frame.request else {
            panic!("{:?}", frame.request)
        };
        assert_eq!(topic, "user.x");
        assert_eq!(payload.as_bytes(), [0xcd, 0x00, 0x07]);
    }

    #[test]
    fn publish_without_a_payload_publishes_nil() {
        let body = rmp_serde::to_vec_named(&rmpv::Value::Map(vec![
            ("id".into(), 1.into()),
            (
                "request".into(),
                rmpv::Value::Map(vec![(
                    "Publish".into(),
                    rmpv::Value::Map(vec![("topic".into(), "user.x".into())]),
                )]),
            ),
        ]))
        .unwrap();
        let frame = decode_request(&body).unwrap();
        assert!(matches!(frame.request, Request::Publish { payload, .. } if payload.is_nil()));
    }

    #[test]
    fn publish_field_errors_keep_the_id() {
        let publish = |fields: rmpv::Value| {
            let body = rmpv::Value::Map(vec![
                ("id".into(), 4.into()),
                (
                    "request".into(),
                    rmpv::Value::Map(vec![("Publish".into(), fields)]),
                ),
            ]);
            let mut bytes = Vec::new();
            rmpv::encode::write_value(&mut bytes, &body).unwrap();
            decode_request(&bytes).unwrap_err()
        };
        let field = |k: &str, v: rmpv::Value| (rmpv::Value::from(k), v);
        for (fields, expected) in [
            (rmpv::Value::Map(vec![]), "missing field `topic`"),
            (
                rmpv::Value::Map(vec![field("topic", 3.into())]),
                "`topic` must be a string",
            ),
            (
                rmpv::Value::Map(vec![field("topic", "a".into()), field("topic", "b".into())]),
                "duplicate field `topic`",
            ),
            (rmpv::Value::from("user.x"), "expected a map of fields"),
        ] {
            let (id, e) = publish(fields);
            assert_eq!(id, Some(4));
            assert!(
                matches!(&e, ProtocolError::BadRequest(m) if m.contains(expected)),
                "{e:?}"
            );
        }
        let mut deep = rmpv::Value::Nil;
        for _ in 0..=MAX_DEPTH {
            deep = rmpv::Value::Array(vec![deep]);
        }
        let (id, e) = publish(rmpv::Value::Map(vec![
            field("topic", "user.x".into()),
            field("payload", deep),
        ]));
        assert_eq!(id, Some(4));
        assert!(matches!(e, ProtocolError::PayloadTooDeep), "{e:?}");
    }

    #[test]
    fn the_id_is_found_after_a_request_that_can_be_stepped_over() {
        // {"request": "Frobnicate", "id": 6} and {"request": {"Shutdown": {}}, "id": 7}
        let unknown = rmpv::Value::Map(vec![
            ("request".into(), "Frobnicate".into()),
            ("id".into(), 6.into()),
        ]);
        let missing = rmpv::Value::Map(vec![
            (
                "request".into(),
                rmpv::Value::Map(vec![("Shutdown".into(), rmpv::Value::Map(vec![]))]),
            ),
            ("id".into(), 7.into()),
        ]);
        for (value, want) in [(unknown, 6), (missing, 7)] {
            let mut bytes = Vec::new();
            rmpv::encode::write_value(&mut bytes, &value).unwrap();
            let (id, _) = decode_request(&bytes).unwrap_err();
            assert_eq!(id, Some(want));
        }
    }

    #[test]
    fn a_request_is_never_nested_deeper_than_its_payload_allows() {
        // A payload at the depth limit, inside the variant's and the fields' maps, is fine
        // for every variant that carries one.
        let nested = |depth: usize| {
            (0..depth).fold(rmpv::Value::Nil, |inner, _| rmpv::Value::Array(vec![inner]))
        };
        for request in [
            Request::Publish {
                topic: "user.x".into(),
                payload: RawValue::from_value(&nested(MAX_DEPTH)).unwrap(),
            },
            Request::CallMcpTool {
                server: "s".into(),
                tool: "t".into(),
                arguments: RawValue::from_value(&rmpv::Value::Map(vec![(
                    "a".into(),
                    nested(MAX_DEPTH - 1),
                )]))
                .unwrap(),
            },
        ] {
            let frame = RequestFrame { id: 2, request };
            let bytes = rmp_serde::to_vec_named(&frame).unwrap();
            assert_eq!(decode_request(&bytes).unwrap(), frame);
        }
    }
}
