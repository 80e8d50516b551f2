//! The envelopes: the handshake (`Hello`, `Welcome`), request, reply, error and event frames,
//! what a client reads first from a frame ([`FrameHead`]) and then with its result type known
//! ([`TypedReply`]), and strict decoding of one frame body.

use std::io::Cursor;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{EncodeError, ErrorBody, RawEvent, RawValue, Request};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default frame limit (bytes of MessagePack after the prefix), in both directions.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// First frame from a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Contents of the session's token file.
    pub token: String,
    /// Protocol version the client speaks.
    pub protocol: u64,
    /// Free-form client name, shown in status and the supervision tree.
    pub client: String,
}

/// The daemon's answer to [`Hello`]. On failure only `ok` and `error` are present and the
/// daemon closes the connection after sending it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Whether the handshake succeeded.
    pub ok: bool,
    /// Protocol version the daemon speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
    /// Daemon name and version, e.g. `astrid-daemon 0.1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<String>,
    /// Session name: `system` for the nil UUID, otherwise the UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// This connection's number, as events name it in `source` (`client:<n>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<u64>,
    /// The workspace the daemon serves (canonical), so that a client can tell it is talking
    /// to the daemon of the workspace it means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Why the handshake failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Welcome {
    /// A refusal carrying `error`.
    pub fn refused(error: ErrorBody) -> Self {
        Self {
            ok: false,
            protocol: None,
            daemon: None,
            session: None,
            connection: None,
            workspace: None,
            error: Some(error),
        }
    }
}

/// A request frame: `{"id": uint, "request": Request}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// Client-chosen id, echoed in the reply. Ids need not be unique or ordered, but a
    /// client that reuses one cannot tell the replies apart.
    pub id: u64,
    /// What is asked.
    pub request: Request,
}

/// A reply frame as the daemon writes it.
#[derive(Debug, Serialize)]
pub struct ReplyFrame<'a, T: Serialize> {
    /// Echo of the request id.
    pub id: u64,
    /// The result.
    pub result: &'a T,
}

/// An error frame. `id` is absent when the frame it answers had no readable id.
#[derive(Debug, Serialize)]
pub struct ErrorFrame<'a> {
    /// Echo of the request id, when one could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// What went wrong.
    pub error: &'a ErrorBody,
}

/// An event frame: `{"event": Event}`; it has no `id`. The daemon writes it with
/// [`crate::raw::encode_event_frame`], which copies the payload's bytes; serializing this
/// writes the same bytes, item by item.
#[derive(Debug, Serialize)]
pub struct EventFrame<'a> {
    /// The event.
    pub event: &'a RawEvent,
}

/// An event as a client reads it: the daemon's [`RawEvent`], with the payload
/// decoded into a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Concrete topic.
    pub topic: String,
    /// Any MessagePack value.
    pub payload: rmpv::Value,
    /// Bus-wide sequence number, increasing by one per published event.
    pub seq: u64,
    /// Who published it: `kernel`, `supervisor`, `client:<n>`, ...
    pub source: String,
    /// Publication time, milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// What a client needs to route a frame from the daemon: a reply (with `id`), an event, or a
/// connection-level error (neither). The `result` is skipped here and decoded later by the
/// caller that knows its type, with [`TypedReply`].
#[derive(Debug, Deserialize)]
pub struct FrameHead {
    /// Present on replies.
    #[serde(default)]
    pub id: Option<u64>,
    /// Present on event frames.
    #[serde(default)]
    pub event: Option<Event>,
    /// Present on failed replies and connection-level errors.
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

/// A reply decoded with its result type known.
#[derive(Debug, Deserialize)]
pub struct TypedReply<T> {
    /// Echo of the request id.
    pub id: u64,
    /// Present on success.
    #[serde(default = "none")]
    pub result: Option<T>,
    /// Present on failure.
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

fn none<T>() -> Option<T> {
    None
}

/// Converts `value` to an event payload with structs as maps keyed by field names, the
/// shape every payload on the wire has (see [`RawValue::encode`]).
///
/// # Errors
///
/// When `value` cannot be serialized.
pub fn to_payload<T: Serialize + ?Sized>(value: &T) -> Result<RawValue, EncodeError> {
    RawValue::encode(value)
}

/// Decodes one frame body as `T`, strictly: the body must be exactly one MessagePack map
/// keyed by field names (positional encodings and trailing bytes are refused).
///
/// # Errors
///
/// A message saying what is wrong with the body.
pub fn decode_map<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if !is_named_map(body) {
        return Err("expected a MessagePack map keyed by field names".into());
    }
    let mut de = rmp_serde::Deserializer::new(Cursor::new(body));
    let value = T::deserialize(&mut de).map_err(|e| e.to_string())?;
    let used = usize::try_from(de.position()).unwrap_or(usize::MAX);
    if used != body.len() {
        return Err(format!(
            "{} bytes after the value; a frame holds one value",
            body.len() - used
        ));
    }
    Ok(value)
}

/// Whether `body` starts with a map whose first key is a string.
fn is_named_map(body: &[u8]) -> bool {
    let Some((&marker, rest)) = body.split_first() else {
        return false;
    };
    let (len, rest) = match marker {
        0x80..=0x8f => (usize::from(marker & 0x0f), rest),
        0xde if rest.len() >= 2 => (
            usize::from(u16::from_be_bytes([rest[0], rest[1]])),
            &rest[2..],
        ),
        0xdf if rest.len() >= 4 => (
            usize::try_from(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]))
                .unwrap_or(usize::MAX),
            &rest[4..],
        ),
        _ => return false,
    };
    // fixstr, str8, str16, str32
    len == 0
        || rest
            .first()
            .is_some_and(|&k| matches!(k, 0xa0..=0xbf | 0xd9..=0xdb))
}
