//! Framing: a 4-byte big-endian length, then that many bytes of MessagePack.
//!
//! Owns the byte-level rules shared by the daemon and every client: the decoder refuses a
//! length above the limit *before* buffering the body (the first frame may have a lower
//! limit of its own: the daemon's sessions use it for the handshake), and then makes room for
//! the whole body at once, which costs address space, not memory, until the bytes arrive.
//! `encode_frame` writes a frame in place into an output buffer. It knows nothing else about
//! what a frame means.

use std::io;

use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use tokio_util::codec::Decoder;

/// Bytes in the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// Frames longer than this take their allocation with them (see [`FrameCodec`]'s decoder).
const LARGE_FRAME: usize = 1024 * 1024;

/// Largest handshake frame the daemon reads (bytes after the prefix): a handshake holds a
/// 64-character token, a version and a client name, so this leaves ample room, and a peer
/// that has not authenticated can make a session buffer no more than this.
pub const MAX_HANDSHAKE_LEN: usize = 4096;

/// Why a byte stream could not be cut into frames. Every variant ends the connection,
/// because after it the stream is no longer in sync.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announced more than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// The length prefix of the first frame (the handshake) announced more than its limit.
    #[error("the first frame (the handshake) of {len} bytes exceeds the limit of {max} bytes")]
    FirstTooLarge {
        /// Announced length.
        len: usize,
        /// The first frame's limit.
        max: usize,
    },
    /// The peer closed the stream in the middle of a frame.
    #[error("connection closed in the middle of a frame ({have} of {need} bytes received)")]
    Truncated {
        /// Bytes received for the unfinished frame, prefix included.
        have: usize,
        /// Bytes the frame needed, prefix included (4 while the prefix itself is incomplete).
        need: usize,
    },
    /// Reading from the socket failed.
    #[error("socket read failed")]
    Io(#[from] io::Error),
}

/// Why a value could not be written as a frame.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The value could not be serialized to MessagePack.
    #[error("could not encode a frame")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The encoded value does not fit a 32-bit length.
    #[error("encoded frame of {0} bytes does not fit the length prefix")]
    TooLarge(usize),
}

/// Cuts a byte stream into frame bodies. A zero-length frame decodes to an empty body so the
/// caller can answer it and keep the connection: the stream is still in sync.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_len: usize,
    /// The limit of the first frame, until it has been decoded.
    first_max: Option<usize>,
}

impl FrameCodec {
    /// A decoder that refuses frames longer than `max_len` bytes (prefix excluded).
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            first_max: None,
        }
    }

    /// The same decoder, refusing a first frame longer than `max` bytes (or `max_len`, if
    /// that is lower) with [`FrameError::FirstTooLarge`].
    #[must_use]
    pub fn first_frame_limit(mut self, max: usize) -> Self {
        self.first_max = Some(max.min(self.max_len));
        self
    }

    /// The configured limit.
    pub fn max_len(&self) -> usize {
        self.max_len
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let Some(prefix) = src.get(..LENGTH_PREFIX) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        match self.first_max {
            Some(max) if len > max => return Err(FrameError::FirstTooLarge { len, max }),
            None if len > self.max_len => {
                return Err(FrameError::TooLarge {
                    len,
                    max: self.max_len,
                });
            }
            _ => {}
        }
        let end = LENGTH_PREFIX + len;
        if src.len() < end {
            grow_toward(src, end);
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX);
        self.first_max = None;
        let frame = src.split_to(len);
        if len > LARGE_FRAME {
            // The frame and what is left of the read buffer share one allocation, which the
            // buffer would keep after the frame is gone: the rest moves to a buffer of its
            // own, so a large frame's memory goes with it.
            *src = BytesMut::from(&src[..]);
        }
        Ok(Some(frame))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        if src.is_empty() {
            return Ok(None);
        }
        let need = match src.get(..LENGTH_PREFIX) {
            Some(p) => LENGTH_PREFIX + u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize,
            None => LENGTH_PREFIX,
        };
        Err(FrameError::Truncated {
            have: src.len(),
            need,
        })
    }
}

/// Makes room for the rest of a frame that ends at `end`, at once and exactly: a buffer
/// doubled as bytes arrive would be copied at each step and keep the old copies (a 16 MiB
/// frame cost some 20 MiB more that way). Room is only address space until bytes arrive
/// (pages are committed as they are written): 40 connections that announce 16 MiB frames
/// and send nothing cost the daemon about 1 MiB. Before the handshake, the first frame's
/// own limit keeps this to a few KiB.
fn grow_toward(src: &mut BytesMut, end: usize) {
    if src.capacity() >= end {
        return;
    }
    let mut grown = BytesMut::with_capacity(end);
    grown.extend_from_slice(src);
    *src = grown;
}

/// Appends `value` to `dst` as one frame: the length prefix, then the value as MessagePack
/// with structs written as maps (`to_vec_named` layout), so any MessagePack library can read it.
///
/// # Errors
///
/// Fails when the value cannot be serialized or is larger than a 32-bit length; `dst` is
/// left as it was.
pub fn encode_frame<T: Serialize + ?Sized>(
    dst: &mut BytesMut,
    value: &T,
) -> Result<(), EncodeError> {
    let start = dst.len();
    dst.put_u32(0);
    let mut writer = dst.writer();
    if let Err(e) = rmp_serde::encode::write_named(&mut writer, value) {
        writer.into_inner().truncate(start);
        return Err(e.into());
    }
    let dst = writer.into_inner();
    let body = dst.len() - start - LENGTH_PREFIX;
    let Ok(len) = u32::try_from(body) else {
        dst.truncate(start);
        return Err(EncodeError::TooLarge(body));
    };
    dst[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u32(u32::try_from(body.len()).unwrap());
        b.put_slice(body);
        b
    }

    #[test]
    fn decodes_a_frame_split_across_reads() {
        let mut codec = FrameCodec::new(64);
        let whole = frame(b"hello");
        let mut buf = BytesMut::from(&whole[..6]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&whole[6..]);
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"hello");
        assert!(buf.is_empty());
    }

    #[test]
    fn zero_length_is_an_empty_body_not_an_error() {
        let mut codec = FrameCodec::new(64);
        let mut buf = frame(b"");
        buf.extend_from_slice(&frame(b"x"));
        assert!(codec.decode(&mut buf).unwrap().unwrap().is_empty());
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"x");
    }

    #[test]
    fn oversized_length_is_refused_before_the_body_arrives() {
        let mut codec = FrameCodec::new(16);
        let mut buf = BytesMut::new();
        buf.put_u32(17);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len: 17, max: 16 }));
    }

    #[test]
    fn before_the_handshake_an_announced_length_reserves_no_more_than_its_limit() {
        let mut codec = FrameCodec::new(16 * 1024 * 1024).first_frame_limit(4096);
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u32(4096);
        buf.put_slice(&[7; 10]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= 4100, "reserved {} bytes", buf.capacity());
        let mut buf = BytesMut::new();
        buf.put_u32(16 * 1024 * 1024);
        assert!(codec.decode(&mut buf).is_err());
    }

    #[test]
    fn a_frame_in_pieces_gets_a_buffer_of_its_size_once() {
        let len = 3 * 1024 * 1024 + 5;
        let whole = frame(&vec![1; len]);
        let mut codec = FrameCodec::new(16 * 1024 * 1024);
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let mut sent = 0;
        let decoded = loop {
            if let Some(body) = codec.decode(&mut buf).unwrap() {
                break body;
            }
            if sent >= LENGTH_PREFIX {
                assert_eq!(buf.capacity(), whole.len(), "after {sent} bytes");
            }
            // As a reader does: fill whatever room there is (more if there is none).
            if buf.capacity() == buf.len() {
                buf.reserve(1);
            }
            let n = (buf.capacity() - buf.len()).min(whole.len() - sent);
            buf.extend_from_slice(&whole[sent..sent + n]);
            sent += n;
        };
        assert_eq!(decoded.len(), len);
    }

    #[test]
    fn the_first_frame_has_its_own_limit_and_later_ones_the_full_one() {
        let mut codec = FrameCodec::new(64).first_frame_limit(8);
        let mut buf = BytesMut::new();
        buf.put_u32(9);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::FirstTooLarge { len: 9, max: 8 }));
        assert!(err.to_string().contains("handshake"), "{err}");

        let mut codec = FrameCodec::new(64).first_frame_limit(8);
        let mut buf = frame(b"12345678");
        buf.extend_from_slice(&frame(&[1; 64]));
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), 8);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), 64);
        buf.put_u32(65);
        assert!(matches!(
            codec.decode(&mut buf).unwrap_err(),
            FrameError::TooLarge { len: 65, max: 64 }
        ));
    }

    #[test]
    fn eof_inside_a_frame_is_truncation() {
        let mut codec = FrameCodec::new(64);
        let mut buf = BytesMut::from(&frame(b"hello")[..7]);
        let err = codec.decode_eof(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::Truncated { have: 7, need: 9 }));
        let mut buf = BytesMut::from(&[0u8, 0][..]);
        assert!(matches!(
            codec.decode_eof(&mut buf).unwrap_err(),
            FrameError::Truncated { have: 2, need: 4 }
        ));
        assert!(codec.decode_eof(&mut BytesMut::new()).unwrap().is_none());
    }

    #[test]
    fn encode_writes_prefix_and_named_map() {
        #[derive(Serialize)]
        struct S {
            a: u8,
        }
        let mut buf = BytesMut::from(&b"xx"[..]);
        encode_frame(&mut buf, &S { a: 1 }).unwrap();
        // fixmap(1) "a" 1
        assert_eq!(&buf[..], &[b'x', b'x', 0, 0, 0, 4, 0x81, 0xa1, b'a', 0x01]);
        let mut codec = FrameCodec::new(64);
        let mut rest = buf.split_off(2);
        assert_eq!(
            &codec.decode(&mut rest).unwrap().unwrap()[..],
            &[0x81, 0xa1, b'a', 1]
        );
    }
}
