//! What an MCP server writes to stdout, within bounds. A server speaks newline-delimited
//! JSON-RPC there, one message a line, and the SDK buffers a line whole and then parses it
//! into a tree of JSON values, which costs a hundred bytes and more a value: an endless line,
//! or a line of millions of tiny values (`[0,0,0,...]`), would make the daemon spend memory
//! without bound, or gigabytes for one message. [`BoundedLines`] passes the server's stdout
//! on to the SDK and follows the line under way: a message longer than
//! [`MAX_MESSAGE`] bytes, or with more than [`MAX_ITEMS`] values and keys, ends the stream
//! with an error where it runs past the bound (nothing past it is read into memory), and
//! leaves the reason in [`Overflow`] for the server's actor, which treats the server as
//! crashed.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

use super::faults::McpFaults;

/// Longest message (a line of stdout, without its newline) a server may send, in bytes. A
/// result is answered in one frame, whose default limit is also 16 MiB, so a larger one
/// could not reach a client anyway.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Most JSON values and keys in one message, counted as the brackets, braces, commas and
/// colons outside strings. A text result counts as one, whatever its length.
pub const MAX_ITEMS: usize = 262_144;

/// The bounds of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Bytes of the line, without its newline.
    pub bytes: usize,
    /// Values and keys (see [`MAX_ITEMS`]).
    pub items: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            bytes: MAX_MESSAGE,
            items: MAX_ITEMS,
        }
    }
}

/// Why a server's stdout was cut off, once it was; shared by the reader and the actor.
#[derive(Debug, Clone, Default)]
pub struct Overflow(Arc<OnceLock<String>>);

impl Overflow {
    /// The reason, once a message ran past a bound.
    pub fn reason(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }

    fn set(&self, reason: String) {
        let _ = self.0.set(reason);
    }
}

/// A server's stdout, cut off at the first message past its [`Bounds`] (see the module
/// docs).
#[derive(Debug)]
pub struct BoundedLines<R> {
    inner: R,
    bounds: Bounds,
    /// Bytes of the line under way passed on so far.
    bytes: usize,
    /// Its values and keys so far.
    items: usize,
    /// Whether the line is inside a JSON string, and just after a backslash in one.
    in_string: bool,
    escaped: bool,
    overflow: Overflow,
    /// The `mcp:malformed` fault: lines to corrupt.
    faults: Option<Arc<McpFaults>>,
}

impl<R> BoundedLines<R> {
    /// `inner`, whose messages must keep within `bounds`; `overflow` learns why it was cut
    /// off.
    pub fn new(inner: R, bounds: Bounds, overflow: Overflow) -> Self {
        Self {
            inner,
            bounds,
            bytes: 0,
            items: 0,
            in_string: false,
            escaped: false,
            overflow,
            faults: None,
        }
    }

    /// Corrupts the lines `faults` asks for (the first byte of each becomes `#`, so it is
    /// not JSON).
    #[must_use]
    pub fn corrupting(mut self, faults: Arc<McpFaults>) -> Self {
        self.faults = Some(faults);
        self
    }

    /// How many bytes of `chunk`, the next bytes of the stream, may pass: all of them, or
    /// those before the byte that takes a message past a bound (which is then noted).
    fn pass(&mut self, chunk: &mut [u8]) -> usize {
        for (at, slot) in chunk.iter_mut().enumerate() {
            if self.bytes == 0
                && *slot != b'\n'
                && self.faults.as_ref().is_some_and(|f| f.corrupt_line())
            {
                tracing::warn!("injected fault: an MCP server's line corrupted");
                *slot = b'#';
            }
            let byte = *slot;
            if byte == b'\n' {
                // JSON has no raw newline inside a string: the message ends here.
                self.bytes = 0;
                self.items = 0;
                self.in_string = false;
                self.escaped = false;
                continue;
            }
            self.bytes += 1;
            if self.bytes > self.bounds.bytes {
                self.overflow
                    .set(format!("sent a message over {}", size(self.bounds.bytes)));
                return at;
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
            } else if byte == b'"' {
                self.in_string = true;
            } else if matches!(byte, b'[' | b'{' | b',' | b':') {
                self.items += 1;
                if self.items > self.bounds.items {
                    self.overflow.set(format!(
                        "sent a message of more than {} JSON values and keys",
                        self.bounds.items
                    ));
                    return at;
                }
            }
        }
        chunk.len()
    }

    fn error(&self) -> std::io::Error {
        let reason = self.overflow.reason().unwrap_or_default().to_owned();
        std::io::Error::new(std::io::ErrorKind::InvalidData, reason)
    }
}

/// `bytes` in MiB when it is a whole number of them.
fn size(bytes: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for BoundedLines<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.overflow.reason().is_some() {
            return Poll::Ready(Err(this.error()));
        }
        let start = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let read = buf.filled().len() - start;
        let passed = this.pass(&mut buf.filled_mut()[start..]);
        if passed < read {
            buf.set_filled(start + passed);
            if passed == 0 {
                return Poll::Ready(Err(this.error()));
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// Reads `input` through `bounds`, in reads of `chunk` bytes: what passed, and the error
    /// that ended it, if any.
    async fn read_all(input: &[u8], bounds: Bounds, chunk: usize) -> (Vec<u8>, Option<String>) {
        let overflow = Overflow::default();
        let mut lines = BoundedLines::new(input, bounds, overflow.clone());
        let mut out = Vec::new();
        let mut buf = vec![0; chunk];
        loop {
            match lines.read(&mut buf).await {
                Ok(0) => return (out, None),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
                    assert_eq!(overflow.reason(), Some(e.to_string().as_str()));
                    assert!(lines.read(&mut buf).await.is_err(), "it stays cut off");
                    return (out, Some(e.to_string()));
                }
            }
        }
    }

    const SMALL: Bounds = Bounds {
        bytes: 10,
        items: 3,
    };

    #[tokio::test]
    async fn messages_within_the_bounds_pass_whole() {
        let input = b"0123456789\n\n[1,2]\r\n{\"a\":1}\n\"[,:{\"\n\"\\\",,,\"\n0123456789";
        for chunk in [1, 3, 4096] {
            assert_eq!(read_all(input, SMALL, chunk).await, (input.to_vec(), None));
        }
    }

    #[tokio::test]
    async fn a_message_past_a_bound_ends_the_stream_there() {
        for chunk in [1, 5, 11, 4096] {
            let (passed, error) = read_all(b"ok\n0123456789X\nnever\n", SMALL, chunk).await;
            assert_eq!(passed, b"ok\n0123456789", "chunks of {chunk}");
            assert_eq!(error.as_deref(), Some("sent a message over 10 bytes"));

            let (passed, error) = read_all(b"[1,2]\n[[1,2],3]\n", SMALL, chunk).await;
            assert_eq!(passed, b"[1,2]\n[[1,2]", "chunks of {chunk}");
            assert_eq!(
                error.as_deref(),
                Some("sent a message of more than 3 JSON values and keys")
            );
        }
    }

    #[tokio::test]
    async fn an_endless_line_is_cut_off_at_the_bound() {
        let overflow = Overflow::default();
        let mut lines = BoundedLines::new(tokio::io::repeat(b'x'), Bounds::default(), overflow);
        let mut passed = 0;
        let mut buf = vec![0; 64 * 1024];
        let error = loop {
            match lines.read(&mut buf).await {
                Ok(n) => passed += n,
                Err(e) => break e,
            }
        };
        assert_eq!(passed, MAX_MESSAGE);
        assert_eq!(error.to_string(), "sent a message over 16 MiB");
    }

    #[tokio::test]
    async fn a_line_of_tiny_values_is_cut_off_at_the_item_bound() {
        let zeros = [b"[".as_slice(), &b"0,".repeat(MAX_ITEMS)].concat();
        let (passed, error) = read_all(&zeros, Bounds::default(), 8192).await;
        // `[` and the commas after the first MAX_ITEMS - 1 zeros.
        assert_eq!(passed.len(), 1 + 2 * (MAX_ITEMS - 1) + 1);
        assert_eq!(
            error.as_deref(),
            Some("sent a message of more than 262144 JSON values and keys")
        );
    }
}
