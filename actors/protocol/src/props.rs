//! Property tests of what reads bytes from the socket: the frame codec, the request decoder
//! and the MessagePack walker, over arbitrary values, arbitrary bytes, and values cut short
//! or corrupted. Case counts are bounded so that the whole file runs in seconds.

use bytes::{BufMut, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use rmpv::Value;
use tokio_util::codec::Decoder;

use super::codec::{FrameCodec, FrameError};
use super::raw::{MAX_DEPTH, MalformedValue, value_len};
use super::{
    ErrorBody, ErrorCode, ErrorFrame, ProtocolError, RawValue, Request, RequestFrame,
    decode_request,
};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..24).prop_map(String::from_iter)
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f32>().prop_map(Value::F32),
        any::<f64>().prop_map(Value::F64),
        text().prop_map(Value::from),
        vec(any::<u8>(), 0..300).prop_map(Value::Binary),
        (any::<i8>(), vec(any::<u8>(), 0..20)).prop_map(|(tag, data)| Value::Ext(tag, data)),
    ]
}

/// A value written in one byte (nil, a boolean, a fixint), or one a little longer.
fn small() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::from),
        (-40i64..200).prop_map(Value::from),
    ]
}

/// Any value, a few levels deep; some arrays are long runs of small values (which the
/// walker steps over eight at a time).
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        4 => leaf(),
        1 => vec(small(), 0..40).prop_map(Value::Array),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((inner.clone(), inner), 0..6).prop_map(Value::Map),
        ]
    })
}

fn encoded(value: &Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).unwrap();
    bytes
}

/// Arrays and maps nested around the deepest item, counting only those with items (the
/// walker's rule).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) if !items.is_empty() => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Map(entries) if !entries.is_empty() => {
            1 + entries
                .iter()
                .map(|(k, v)| depth(k).max(depth(v)))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// What `rmpv` makes of `bytes`: the value and the bytes it took, or nothing.
fn rmpv_reads(bytes: &[u8]) -> Option<(Value, usize)> {
    let mut rest = bytes;
    let value = rmpv::decode::read_value(&mut rest).ok()?;
    Some((value, bytes.len() - rest.len()))
}

/// The walker and `rmpv` agree on `bytes`: one well-formed value and where it ends, or not.
fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    match (value_len(bytes), rmpv_reads(bytes)) {
        (Ok(len), Some((value, used))) => {
            prop_assert_eq!(len, used);
            prop_assert!(depth(&value) <= MAX_DEPTH);
        }
        // Nested deeper than the limit: `rmpv` (whose own limit is higher) may read it.
        (Err(MalformedValue::TooDeep(_)), Some((value, _))) => {
            prop_assert!(depth(&value) > MAX_DEPTH);
        }
        (Err(_), None) => {}
        // 0xc1 is never used by MessagePack: `rmpv` reads it as nil, the walker refuses it.
        (Err(MalformedValue::Reserved(at)), Some(_)) => prop_assert_eq!(bytes[at], 0xc1),
        (Ok(len), None) => prop_assert!(false, "the walker took {len} bytes rmpv refuses"),
        (Err(e), Some(_)) => prop_assert!(false, "the walker refused ({e}) what rmpv reads"),
    }
    Ok(())
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut bytes = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

/// Feeds `stream` to the codec in pieces cut at `cuts`, as reads would deliver it; returns
/// the frames decoded and how it ended.
fn feed(
    codec: &mut FrameCodec,
    stream: &[u8],
    cuts: &[usize],
) -> (Vec<Vec<u8>>, Result<(), FrameError>) {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(stream.len());
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut from = 0;
    for cut in cuts {
        buf.put_slice(&stream[from..cut]);
        from = cut;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(body)) => frames.push(body.to_vec()),
                Ok(None) => break,
                Err(e) => return (frames, Err(e)),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(body)) => frames.push(body.to_vec()),
            Ok(None) => return (frames, Ok(())),
            Err(e) => return (frames, Err(e)),
        }
    }
}

/// A decoder's failure is one a client can be told about, and its reply can be written.
fn clean(error: &ProtocolError) -> Result<(), TestCaseError> {
    let body = ErrorBody::from(error);
    prop_assert!(
        matches!(
            body.code,
            ErrorCode::BadRequest | ErrorCode::UnknownRequest | ErrorCode::InvalidArgument
        ),
        "{body:?}"
    );
    let frame = ErrorFrame {
        id: None,
        error: &body,
    };
    prop_assert!(rmp_serde::to_vec_named(&frame).is_ok());
    Ok(())
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

proptest! {
    #![proptest_config(config(256))]

    // ----- the raw walker ------------------------------------------------------------

    #[test]
    fn the_walker_finds_where_any_value_ends(value in value(), tail in vec(any::<u8>(), 0..8)) {
        let mut bytes = encoded(&value);
        let len = bytes.len();
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(value_len(&bytes), Ok(len));
        agree(&bytes)?;
    }

    #[test]
    fn the_walker_agrees_with_rmpv_on_cut_and_corrupted_values(
        value in value(),
        cut in any::<prop::sample::Index>(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let bytes = encoded(&value);
        agree(&bytes[..cut.index(bytes.len() + 1)])?;
        let mut corrupted = bytes.clone();
        for (at, byte) in flips {
            let at = at.index(corrupted.len());
            corrupted[at] = byte;
        }
        agree(&corrupted)?;
    }

    #[test]
    fn the_walker_agrees_with_rmpv_on_any_bytes(bytes in vec(any::<u8>(), 0..64)) {
        agree(&bytes)?;
    }

    #[test]
    fn the_depth_limit_is_exact(
        kinds in vec(any::<bool>(), 0..(MAX_DEPTH + 40)),
        leaf in leaf(),
    ) {
        // Arrays and one-entry maps, nested `kinds.len()` deep around `leaf`.
        let nested = kinds.iter().fold(leaf, |inner, &array| {
            if array { Value::Array(vec![inner]) } else { Value::Map(vec![(Value::Nil, inner)]) }
        });
        let bytes = encoded(&nested);
        let result = value_len(&bytes);
        if kinds.len() <= MAX_DEPTH {
            prop_assert_eq!(result, Ok(bytes.len()));
            prop_assert!(RawValue::from_slice(&bytes).is_ok());
            let decoded: Result<RawValue, _> = rmp_serde::from_slice(&bytes);
            prop_assert!(decoded.is_ok());
        } else {
            prop_assert!(matches!(result, Err(MalformedValue::TooDeep(_))), "{:?}", result);
            let decoded: Result<RawValue, _> = rmp_serde::from_slice(&bytes);
            prop_assert!(decoded.is_err());
        }
    }

    #[test]
    fn a_raw_value_goes_through_serde_unchanged(value in value()) {
        let bytes = encoded(&value);
        let raw = RawValue::from_slice(&bytes).unwrap();
        // Written out item by item, and read back in.
        prop_assert_eq!(rmp_serde::to_vec(&raw).unwrap(), bytes.clone());
        let back: RawValue = rmp_serde::from_slice(&bytes).unwrap();
        prop_assert_eq!(back.as_bytes(), &bytes[..]);
    }

    // ----- the frame codec -----------------------------------------------------------

    #[test]
    fn any_stream_cut_anywhere_is_framed_without_panicking(
        stream in vec(any::<u8>(), 0..600),
        cuts in vec(any::<usize>(), 0..8),
        max in 0usize..300,
    ) {
        let (frames, end) = feed(&mut FrameCodec::new(max), &stream, &cuts);
        prop_assert!(frames.iter().all(|f| f.len() <= max));
        if let Err(e) = end {
            let expected = matches!(e, FrameError::TooLarge { .. } | FrameError::Truncated { .. });
            prop_assert!(expected, "{:?}", e);
        }
    }

    #[test]
    fn frames_come_back_whole_however_the_stream_is_cut(
        bodies in vec(vec(any::<u8>(), 0..200), 0..6),
        cuts in vec(any::<usize>(), 0..10),
    ) {
        let stream: Vec<u8> = bodies.iter().flat_map(|b| frame(b)).collect();
        let (frames, end) = feed(&mut FrameCodec::new(200), &stream, &cuts);
        prop_assert!(end.is_ok());
        prop_assert_eq!(frames, bodies);
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_its_body(
        max in 0usize..100_000,
        over in 1usize..1_000_000,
        before in vec(vec(any::<u8>(), 0..50), 0..3),
    ) {
        let len = max + over;
        let mut stream: Vec<u8> = before.iter().filter(|b| b.len() <= max).flat_map(|b| frame(b)).collect();
        stream.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
        let (_, end) = feed(&mut FrameCodec::new(max), &stream, &[]);
        let refused = matches!(end, Err(FrameError::TooLarge { len: l, max: m }) if l == len && m == max);
        prop_assert!(refused, "{:?}", end);
    }

    // ----- the request decoder -------------------------------------------------------

    #[test]
    fn any_bytes_are_a_request_or_a_clean_error(bytes in vec(any::<u8>(), 0..128)) {
        if let Err((_, e)) = decode_request(&bytes) {
            clean(&e)?;
        }
    }

    #[test]
    fn any_value_is_a_request_or_a_clean_error(value in value()) {
        if let Err((_, e)) = decode_request(&encoded(&value)) {
            clean(&e)?;
        }
    }

    #[test]
    fn the_id_is_kept_whatever_the_request_is(
        id in any::<u64>(),
        request in value(),
        id_first in any::<bool>(),
        extra in proptest::option::of(value()),
    ) {
        let mut entries = vec![("request", request)];
        if let Some(extra) = extra {
            entries.push(("extra", extra));
        }
        if id_first {
            entries.insert(0, ("id", Value::from(id)));
        } else {
            entries.push(("id", Value::from(id)));
        }
        match decode_request(&encoded(&map(entries))) {
            Ok(frame) => prop_assert_eq!(frame.id, id),
            Err((got, e)) => {
                prop_assert_eq!(got, Some(id), "{:?}", e);
                clean(&e)?;
            }
        }
    }

    #[test]
    fn a_publish_is_read_whatever_its_payload(
        id in any::<u64>(),
        topic in text(),
        payload in value(),
        cut in any::<prop::sample::Index>(),
    ) {
        let frame = RequestFrame {
            id,
            request: Request::Publish {
                topic,
                payload: RawValue::from_value(&payload).unwrap(),
            },
        };
        let bytes = rmp_serde::to_vec_named(&frame).unwrap();
        prop_assert_eq!(decode_request(&bytes).unwrap(), frame);
        // Cut short anywhere after the id, it is a clean error that names the request.
        let id_end = 1 + 3 + encoded(&Value::from(id)).len();
        let cut = id_end + cut.index(bytes.len() - id_end);
        let (got, e) = decode_request(&bytes[..cut]).unwrap_err();
        prop_assert_eq!(got, Some(id));
        clean(&e)?;
    }
}
