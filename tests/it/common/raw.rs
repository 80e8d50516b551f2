//! Raw frames, for tests that speak the protocol byte by byte: a blocking connection with a
//! read timeout, and lookups in the MessagePack values it reads.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde::Serialize;

use super::poll::DEADLINE;

/// A blocking connection speaking raw frames, with a read timeout so nothing hangs.
pub(crate) struct Raw {
    pub(crate) stream: UnixStream,
}

impl Raw {
    pub(crate) fn connect(socket: &Path) -> Self {
        let stream = UnixStream::connect(socket).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        Self { stream }
    }

    /// Sends one frame with `body` as is.
    pub(crate) fn send_bytes(&mut self, body: &[u8]) {
        let len = u32::try_from(body.len()).unwrap();
        self.stream.write_all(&len.to_be_bytes()).unwrap();
        self.stream.write_all(body).unwrap();
    }

    /// Sends `value` as a MessagePack frame (structs as maps).
    pub(crate) fn send<T: Serialize>(&mut self, value: &T) {
        self.send_bytes(&rmp_serde::to_vec_named(value).unwrap());
    }

    /// Reads one frame; `None` on a clean close.
    pub(crate) fn recv(&mut self) -> Option<rmpv::Value> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("read failed: {e}"),
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).unwrap();
        Some(rmpv::decode::read_value(&mut body.as_slice()).unwrap())
    }

    /// Whether the daemon closed the connection (after any frames still to read).
    pub(crate) fn closed(&mut self) -> bool {
        while let Some(_frame) = self.recv() {}
        true
    }

    /// Sends a handshake and returns the reply.
    pub(crate) fn hello(&mut self, token: &str, protocol: u64) -> rmpv::Value {
        #[derive(Serialize)]
        struct Hello<'a> {
            token: &'a str,
            protocol: u64,
            client: &'a str,
        }
        self.send(&Hello {
            token,
            protocol,
            client: "raw-test",
        });
        self.recv().expect("handshake reply")
    }

    /// Sends `{"id": id, "request": request}`.
    pub(crate) fn request<R: Serialize>(&mut self, id: u64, request: R) {
        #[derive(Serialize)]
        struct Frame<R> {
            id: u64,
            request: R,
        }
        self.send(&Frame { id, request });
    }
}

/// `value[key]` for a MessagePack map, `Nil` when absent.
pub(crate) fn get<'a>(value: &'a rmpv::Value, key: &str) -> &'a rmpv::Value {
    static NIL: rmpv::Value = rmpv::Value::Nil;
    value
        .as_map()
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v)
        })
        .unwrap_or(&NIL)
}

/// The `error.code` of a reply or handshake refusal.
pub(crate) fn error_code(value: &rmpv::Value) -> Option<&str> {
    get(get(value, "error"), "code").as_str()
}
