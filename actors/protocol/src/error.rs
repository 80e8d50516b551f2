//! Wire errors: the stable error codes, the `{code, message}` body, and the codes of the
//! conversation's own errors ([`ProtocolError`]). The kernel maps its errors to codes in one
//! place of its own (`astrid-actors`' `error::codes`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::FrameError;

/// Stable, snake_case error codes. Clients match on these; messages are for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Wrong token, or a peer of another uid.
    Unauthorized,
    /// The handshake asked for a protocol version this daemon does not speak.
    ProtocolMismatch,
    /// The first frame was not a handshake.
    HandshakeRequired,
    /// No handshake arrived in time.
    HandshakeTimeout,
    /// An empty frame.
    BadFrame,
    /// A frame longer than the limit; the connection is closed.
    FrameTooLarge,
    /// A request that is not well formed: not MessagePack, not one map keyed by field names,
    /// missing `id` or fields, wrong types.
    BadRequest,
    /// A request variant this daemon does not know.
    UnknownRequest,
    /// Too many requests in flight on one connection.
    TooManyRequests,
    /// The daemon serves as many connections as it allows (in all, or waiting for their
    /// handshake); the new one is closed. Retrying later may succeed.
    TooManyConnections,
    /// A topic or topic pattern that is not valid.
    InvalidTopic,
    /// The request is understood but not allowed (for example publishing outside `user.>`).
    Forbidden,
    /// The named capsule or actor does not exist.
    NotFound,
    /// The named actor exists but is not running.
    NotRunning,
    /// The actor that serves the request stopped or is restarting; retrying may succeed.
    Unavailable,
    /// The actor that serves the request did not answer within the call deadline.
    Timeout,
    /// The daemon is shutting down and takes no new work.
    ShuttingDown,
    /// `InjectFault` was sent to a daemon started without `--allow-fault-injection`.
    FaultInjectionDisabled,
    /// An argument is not valid: a key, a path, a capsule name, a capability.
    InvalidArgument,
    /// A value or file is larger than the limit, or a connection holds as many subscription
    /// patterns as it may.
    TooLarge,
    /// A key-value namespace that does not exist.
    UnknownNamespace,
    /// A write would take a key-value namespace past its quota (keys or bytes); nothing
    /// was written.
    QuotaExceeded,
    /// A path that leads outside the workspace (through `..`, an absolute path or a link).
    PathEscape,
    /// A database failed (for example, the disk is full); nothing of the request was written.
    StorageFailed,
    /// A file-system operation failed for another reason (permissions, not a directory...).
    IoError,
    /// A bug: the daemon could not build its answer.
    Internal,
    /// The capsule exhausted its restart budget and stays down until `ReloadCapsules`.
    CapsuleFailed,
    /// The capsule crashed (trapped, ran out of fuel or memory, returned garbage) while
    /// handling the request; it is restarted under its policy.
    CapsuleCrashed,
    /// The capsule handled the request and answered with an error of its own.
    CapsuleError,
    /// The MCP server is down and stays down: past its restart budget, or its
    /// configuration entry is not valid.
    McpFailed,
    /// The MCP server answered the call with an error of its own (an unknown tool, bad
    /// arguments).
    McpError,
    /// A code this client does not know (sent by a newer daemon).
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// Every code, in declaration order (`ALL[code as usize] == code`).
    pub const ALL: [Self; 32] = [
        Self::Unauthorized,
        Self::ProtocolMismatch,
        Self::HandshakeRequired,
        Self::HandshakeTimeout,
        Self::BadFrame,
        Self::FrameTooLarge,
        Self::BadRequest,
        Self::UnknownRequest,
        Self::TooManyRequests,
        Self::TooManyConnections,
        Self::InvalidTopic,
        Self::Forbidden,
        Self::NotFound,
        Self::NotRunning,
        Self::Unavailable,
        Self::Timeout,
        Self::ShuttingDown,
        Self::FaultInjectionDisabled,
        Self::InvalidArgument,
        Self::TooLarge,
        Self::UnknownNamespace,
        Self::QuotaExceeded,
        Self::PathEscape,
        Self::StorageFailed,
        Self::IoError,
        Self::Internal,
        Self::CapsuleFailed,
        Self::CapsuleCrashed,
        Self::CapsuleError,
        Self::McpFailed,
        Self::McpError,
        Self::Other,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::ProtocolMismatch => "protocol_mismatch",
            Self::HandshakeRequired => "handshake_required",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::BadFrame => "bad_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::BadRequest => "bad_request",
            Self::UnknownRequest => "unknown_request",
            Self::TooManyRequests => "too_many_requests",
            Self::TooManyConnections => "too_many_connections",
            Self::InvalidTopic => "invalid_topic",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::NotRunning => "not_running",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::ShuttingDown => "shutting_down",
            Self::FaultInjectionDisabled => "fault_injection_disabled",
            Self::InvalidArgument => "invalid_argument",
            Self::TooLarge => "too_large",
            Self::UnknownNamespace => "unknown_namespace",
            Self::QuotaExceeded => "quota_exceeded",
            Self::PathEscape => "path_escape",
            Self::StorageFailed => "storage_failed",
            Self::IoError => "io_error",
            Self::Internal => "internal",
            Self::CapsuleFailed => "capsule_failed",
            Self::CapsuleCrashed => "capsule_crashed",
            Self::CapsuleError => "capsule_error",
            Self::McpFailed => "mcp_failed",
            Self::McpError => "mcp_error",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` member of a failed reply or handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorBody {}

/// What can go wrong with the conversation itself, before a request reaches an actor.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The first frame was not a handshake.
    #[error("the first frame must be a handshake {{token, protocol, client}}: {0}")]
    HandshakeRequired(String),
    /// Unsupported protocol version (checked before the token, so it reveals nothing).
    #[error("protocol version {client} is not supported; this daemon speaks version {server}")]
    ProtocolMismatch {
        /// Version the client asked for.
        client: u64,
        /// Version this daemon speaks.
        server: u32,
    },
    /// Wrong token. Deliberately says nothing more.
    #[error("authentication failed")]
    Unauthorized,
    /// The peer runs as another user.
    #[error("peer uid {peer} is not the daemon's uid {daemon}")]
    PeerUid {
        /// The connecting process's uid.
        peer: u32,
        /// The daemon's effective uid.
        daemon: u32,
    },
    /// The peer's credentials could not be read, so its uid is unknown.
    #[error("cannot tell which user the peer runs as: {0}")]
    PeerUnknown(String),
    /// The connection would pass the cap on open connections.
    #[error("the daemon already serves {0} connections, its limit; try again later")]
    TooManyConnections(usize),
    /// The connection would pass the cap on connections still waiting for their handshake.
    #[error(
        "{0} connections are already waiting to complete their handshake, the limit; try again later"
    )]
    TooManyUnauthenticated(usize),
    /// No handshake in time.
    #[error("no handshake within {0:?}")]
    HandshakeTimeout(Duration),
    /// The byte stream could not be framed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A zero-length frame.
    #[error("empty frame: every frame must hold one MessagePack value")]
    EmptyFrame,
    /// Not a well-formed request.
    #[error("malformed request: {0}")]
    BadRequest(String),
    /// A payload nested deeper than subscribers are sure to decode.
    #[error(
        "the payload nests arrays and maps deeper than {}",
        crate::raw::MAX_DEPTH
    )]
    PayloadTooDeep,
    /// Well formed, but the variant is unknown.
    #[error("unknown request `{0}`")]
    UnknownRequest(String),
    /// The per-connection in-flight limit was reached.
    #[error("more than {0} requests in flight on this connection; wait for replies")]
    TooManyRequests(usize),
    /// The daemon is draining.
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

impl From<&ProtocolError> for ErrorBody {
    fn from(e: &ProtocolError) -> Self {
        let code = match e {
            ProtocolError::HandshakeRequired(_) => ErrorCode::HandshakeRequired,
            ProtocolError::ProtocolMismatch { .. } => ErrorCode::ProtocolMismatch,
            ProtocolError::Unauthorized
            | ProtocolError::PeerUid { .. }
            | ProtocolError::PeerUnknown(_) => ErrorCode::Unauthorized,
            ProtocolError::TooManyConnections(_) | ProtocolError::TooManyUnauthenticated(_) => {
                ErrorCode::TooManyConnections
            }
            ProtocolError::HandshakeTimeout(_) => ErrorCode::HandshakeTimeout,
            ProtocolError::Frame(
                FrameError::TooLarge { .. } | FrameError::FirstTooLarge { .. },
            ) => ErrorCode::FrameTooLarge,
            ProtocolError::Frame(_) | ProtocolError::EmptyFrame => ErrorCode::BadFrame,
            ProtocolError::BadRequest(_) => ErrorCode::BadRequest,
            ProtocolError::UnknownRequest(_) => ErrorCode::UnknownRequest,
            ProtocolError::PayloadTooDeep => ErrorCode::InvalidArgument,
            ProtocolError::TooManyRequests(_) => ErrorCode::TooManyRequests,
            ProtocolError::ShuttingDown => ErrorCode::ShuttingDown,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_snake_case_names() {
        for code in [
            ErrorCode::Unauthorized,
            ErrorCode::FrameTooLarge,
            ErrorCode::UnknownRequest,
            ErrorCode::FaultInjectionDisabled,
            ErrorCode::TooManyConnections,
            ErrorCode::Internal,
        ] {
            let bytes = rmp_serde::to_vec_named(&code).unwrap();
            let s: String = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(s, code.as_str());
            assert_eq!(rmp_serde::from_slice::<ErrorCode>(&bytes).unwrap(), code);
        }
    }

    #[test]
    fn unknown_codes_from_a_newer_daemon_decode_as_other() {
        let bytes = rmp_serde::to_vec_named("capsule_exploded").unwrap();
        assert_eq!(
            rmp_serde::from_slice::<ErrorCode>(&bytes).unwrap(),
            ErrorCode::Other
        );
    }

    #[test]
    fn oversized_frames_and_bad_frames_get_distinct_codes() {
        let big = ProtocolError::Frame(FrameError::TooLarge { len: 9, max: 8 });
        assert_eq!(ErrorBody::from(&big).code, ErrorCode::FrameTooLarge);
        assert_eq!(
            ErrorBody::from(&ProtocolError::EmptyFrame).code,
            ErrorCode::BadFrame
        );
        let wrong_token = ErrorBody::from(&ProtocolError::Unauthorized);
        assert_eq!(wrong_token.message, "authentication failed");
        let big_hello = ProtocolError::Frame(FrameError::FirstTooLarge { len: 9, max: 8 });
        assert_eq!(ErrorBody::from(&big_hello).code, ErrorCode::FrameTooLarge);
    }

    #[test]
    fn both_connection_caps_are_too_many_connections() {
        for error in [
            ProtocolError::TooManyConnections(1024),
            ProtocolError::TooManyUnauthenticated(64),
        ] {
            assert_eq!(ErrorBody::from(&error).code, ErrorCode::TooManyConnections);
        }
    }
}
