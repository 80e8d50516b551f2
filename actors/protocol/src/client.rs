//! An async client for the daemon's socket: connect, handshake, pipelined requests (any
//! number in flight, matched to replies by id), and subscription events.
//!
//! A background task reads frames and routes each reply to the caller waiting on its id;
//! events go to a queue read with [`Client::next_event`]. It needs a Tokio runtime.
//!
//! ```no_run
//! # async fn demo() -> Result<(), astrid_protocol::client::ClientError> {
//! use astrid_protocol::client::Client;
//! use astrid_protocol::layout::{HomeLayout, SessionFiles};
//!
//! let files = HomeLayout::new("/home/me/.astrid").session(uuid::Uuid::nil());
//! let client = Client::connect(&files, "example").await?;
//! let status = client.status().await?;
//! println!("daemon pid {}", status.pid);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use crate::layout::SessionFiles;
use crate::{
    CapsuleInfo, ConfigReport, DEFAULT_MAX_FRAME_LEN, EncodeError, ErrorBody, Event, FrameCodec,
    FrameError, FrameHead, Hello, PROTOCOL_VERSION, Request, RequestFrame, Status, TreeNode,
    TypedReply, Welcome, encode_frame,
};

/// What can go wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (missing, or refused).
    #[error("no daemon is running on {path}")]
    NotRunning {
        /// Socket path.
        path: PathBuf,
        /// The connect error.
        #[source]
        source: io::Error,
    },
    /// The token file could not be read.
    #[error("cannot read the token file {path}")]
    Token {
        /// Token path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The socket exists but connecting failed otherwise (e.g. permissions).
    #[error("cannot connect to {path}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The handshake was refused.
    #[error("the daemon refused the connection: {0}")]
    Refused(ErrorBody),
    /// The request failed; the daemon said why.
    #[error("{0}")]
    Remote(ErrorBody),
    /// The connection closed before the reply came.
    #[error("the connection to the daemon closed")]
    Closed,
    /// Reading or writing the socket failed.
    #[error("socket error talking to the daemon")]
    Io(#[from] io::Error),
    /// The daemon sent bytes that are not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The request could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A frame was not what the protocol promises.
    #[error("unexpected frame from the daemon")]
    Decode(#[from] rmp_serde::decode::Error),
    /// The daemon did not answer in time (it may be stopped or wedged).
    #[error("the daemon did not answer the {what} within {} ms", after.as_millis())]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// How long.
        after: Duration,
    },
}

impl ClientError {
    /// The error code, when the daemon answered with one.
    pub fn code(&self) -> Option<crate::ErrorCode> {
        match self {
            Self::Refused(body) | Self::Remote(body) => Some(body.code),
            _ => None,
        }
    }
}

/// Connects to `socket` and returns the raw stream, mapping "nothing there" to
/// [`ClientError::NotRunning`].
///
/// # Errors
///
/// [`ClientError::NotRunning`] or [`ClientError::Connect`].
pub async fn connect_socket(socket: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(socket).await.map_err(|source| {
        if matches!(
            source.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
        ) {
            ClientError::NotRunning {
                path: socket.to_owned(),
                source,
            }
        } else {
            ClientError::Connect {
                path: socket.to_owned(),
                source,
            }
        }
    })
}

/// Reads the token of `files`' session.
///
/// # Errors
///
/// [`ClientError::Token`].
pub fn read_token(files: &SessionFiles) -> Result<String, ClientError> {
    std::fs::read_to_string(files.token())
        .map(|t| t.trim().to_owned())
        .map_err(|source| ClientError::Token {
            path: files.token(),
            source,
        })
}

/// How long [`handshake`] waits for the daemon's answer (the daemon itself gives a client 5 s
/// to send its half).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Performs the handshake on a fresh stream, waiting at most [`HANDSHAKE_TIMEOUT`].
///
/// # Errors
///
/// [`ClientError::Refused`] with the daemon's reason, [`ClientError::Timeout`], or an I/O or
/// decoding error.
pub async fn handshake(
    stream: &mut UnixStream,
    token: &str,
    client: &str,
) -> Result<Welcome, ClientError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange_hello(stream, token, client))
        .await
        .map_err(|_| ClientError::Timeout {
            what: "handshake",
            after: HANDSHAKE_TIMEOUT,
        })?
}

async fn exchange_hello(
    stream: &mut UnixStream,
    token: &str,
    client: &str,
) -> Result<Welcome, ClientError> {
    let mut buf = BytesMut::new();
    encode_frame(
        &mut buf,
        &Hello {
            token: token.to_owned(),
            protocol: u64::from(PROTOCOL_VERSION),
            client: client.to_owned(),
        },
    )?;
    stream.write_all(&buf).await?;
    let mut frames = FramedRead::new(&mut *stream, FrameCodec::new(DEFAULT_MAX_FRAME_LEN));
    let frame = frames.next().await.ok_or(ClientError::Closed)??;
    let welcome: Welcome = rmp_serde::from_slice(&frame)?;
    if !frames.read_buffer().is_empty() {
        // The daemon sends nothing else until the first request; anything more is a bug.
        return Err(ClientError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected bytes after the handshake reply",
        )));
    }
    match (welcome.ok, &welcome.error) {
        (true, _) => Ok(welcome),
        (false, Some(error)) => Err(ClientError::Refused(error.clone())),
        (false, None) => Err(ClientError::Refused(ErrorBody {
            code: crate::ErrorCode::Other,
            message: "refused without a reason".into(),
        })),
    }
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Bytes, ClientError>>>>>;

/// A connection to the daemon.
#[derive(Debug)]
pub struct Client {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    waiters: Waiters,
    events: mpsc::UnboundedReceiver<Event>,
    next_id: AtomicU64,
    welcome: Welcome,
    reader: tokio::task::JoinHandle<()>,
    call_timeout: Option<Duration>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// Connects to the daemon of `files`' session, reading its token file.
    ///
    /// # Errors
    ///
    /// [`ClientError::NotRunning`] when no daemon listens, or any handshake error.
    pub async fn connect(files: &SessionFiles, client: &str) -> Result<Self, ClientError> {
        let mut stream = connect_socket(&files.socket()).await?;
        let token = read_token(files)?;
        let welcome = handshake(&mut stream, &token, client).await?;
        Ok(Self::from_stream(stream, welcome))
    }

    /// Connects to `socket` with an explicit token.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    pub async fn connect_to(socket: &Path, token: &str, client: &str) -> Result<Self, ClientError> {
        let mut stream = connect_socket(socket).await?;
        let welcome = handshake(&mut stream, token, client).await?;
        Ok(Self::from_stream(stream, welcome))
    }

    fn from_stream(stream: UnixStream, welcome: Welcome) -> Self {
        let (read, writer) = stream.into_split();
        let waiters: Waiters = Arc::default();
        let (events_tx, events) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_frames(
            FramedRead::new(read, FrameCodec::new(DEFAULT_MAX_FRAME_LEN)),
            Arc::clone(&waiters),
            events_tx,
        ));
        Self {
            writer: tokio::sync::Mutex::new(writer),
            waiters,
            events,
            next_id: AtomicU64::new(1),
            welcome,
            reader,
            call_timeout: None,
        }
    }

    /// Makes every later [`Client::call`] fail with [`ClientError::Timeout`] when its reply
    /// takes longer than `timeout` (`None`, the default, waits as long as the connection
    /// lives; the daemon answers every request within its own call deadline unless it is
    /// stopped or wedged).
    pub fn set_call_timeout(&mut self, timeout: Option<Duration>) {
        self.call_timeout = timeout;
    }

    /// The daemon's handshake reply.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Sends `request` and waits for its result.
    ///
    /// # Errors
    ///
    /// [`ClientError::Remote`] when the daemon answers with an error, [`ClientError::Closed`]
    /// when the connection ends first, or an I/O or decoding error.
    pub async fn call<T: DeserializeOwned>(&self, request: Request) -> Result<T, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, &RequestFrame { id, request })?;
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        let written = self.writer.lock().await.write_all(&buf).await;
        if let Err(e) = written {
            self.waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            return Err(e.into());
        }
        let reply = match self.call_timeout {
            None => rx.await,
            Some(after) => {
                let Ok(reply) = tokio::time::timeout(after, rx).await else {
                    self.waiters
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&id);
                    return Err(ClientError::Timeout {
                        what: "request",
                        after,
                    });
                };
                reply
            }
        };
        let frame = reply.map_err(|_| ClientError::Closed)??;
        let reply: TypedReply<T> = rmp_serde::from_slice(&frame)?;
        match (reply.result, reply.error) {
            (_, Some(error)) => Err(ClientError::Remote(error)),
            (Some(result), None) => Ok(result),
            (None, None) => Err(ClientError::Decode(serde::de::Error::custom(
                "reply without result or error",
            ))),
        }
    }

    /// The next event from this connection's subscriptions; `None` once the connection
    /// has closed and every event was read.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// `Ping`.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.call::<String>(Request::Ping).await.map(drop)
    }

    /// `GetStatus`.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.call(Request::GetStatus).await
    }

    /// `GetMetrics`: the daemon's metrics as OpenMetrics text.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub async fn metrics(&self) -> Result<String, ClientError> {
        self.call(Request::GetMetrics).await
    }

    /// `GetConfig`: the daemon's effective settings and audit policy.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub async fn config(&self) -> Result<ConfigReport, ClientError> {
        self.call(Request::GetConfig).await
    }

    /// `GetSupervisionTree`.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub async fn tree(&self) -> Result<TreeNode, ClientError> {
        self.call(Request::GetSupervisionTree).await
    }

    /// `ListCapsules`.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub async fn capsules(&self) -> Result<Vec<CapsuleInfo>, ClientError> {
        self.call(Request::ListCapsules).await
    }
}

async fn read_frames(
    mut frames: FramedRead<tokio::net::unix::OwnedReadHalf, FrameCodec>,
    waiters: Waiters,
    events: mpsc::UnboundedSender<Event>,
) {
    let failure = loop {
        let frame = match frames.next().await {
            Some(Ok(frame)) => frame.freeze(),
            Some(Err(e)) => break ClientError::Frame(e),
            None => break ClientError::Closed,
        };
        let head: FrameHead = match rmp_serde::from_slice(&frame) {
            Ok(head) => head,
            Err(e) => break ClientError::Decode(e),
        };
        match head {
            FrameHead { id: Some(id), .. } => {
                let waiter = waiters
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                if let Some(tx) = waiter {
                    let _ = tx.send(Ok(frame));
                }
            }
            FrameHead {
                event: Some(event), ..
            } => {
                let _ = events.send(event);
            }
            FrameHead {
                error: Some(error), ..
            } => break ClientError::Remote(error),
            FrameHead { .. } => {}
        }
    };
    // Everyone still waiting learns the connection is gone, with the daemon's reason if
    // it gave one.
    let reason = match &failure {
        ClientError::Remote(body) => Some(body.clone()),
        _ => None,
    };
    for (_, tx) in waiters
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
    {
        let _ = tx.send(Err(reason
            .clone()
            .map_or(ClientError::Closed, ClientError::Remote)));
    }
}
