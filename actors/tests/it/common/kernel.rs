//! The kernel booted in-process, as `astrid-daemon` boots it but without the process edge
//! (flags, lock, pid file, logging, signals): [`TestKernel::boot`] runs
//! [`Kernel::boot`] with a [`KernelConfig`] for a temporary home and workspace inside the
//! test's actix system; a test then talks to it through its socket ([`Conn`], raw
//! MessagePack frames) or sends messages to its actors, and ends it with
//! [`TestKernel::shutdown`] or [`TestKernel::wait`], which say how it ended.

use std::path::PathBuf;

use astrid_actors::kernel::{
    BootError, HomeLayout, Kernel, KernelConfig, KernelExit, SessionFiles,
};
use astrid_actors::supervisor::{Fault, GetTree, InjectFault, SupervisorError, TreeNode};
use rmpv::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

use super::poll::{DEADLINE, poll_async};

/// A kernel running in this process, in its own temporary home and workspace.
#[derive(Debug)]
pub(crate) struct TestKernel {
    pub(crate) home: TempDir,
    pub(crate) workspace: TempDir,
    pub(crate) files: SessionFiles,
    kernel: Option<Kernel>,
}

/// A short temporary directory (socket paths must fit in 107 bytes).
fn short_tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("ak")
        .tempdir_in("/tmp")
        .unwrap()
}

/// The configuration `astrid-daemon` would use for `home` and `workspace` (with its
/// defaults), then changed by `configure`.
fn config_for(
    home: &TempDir,
    workspace: &TempDir,
    configure: impl FnOnce(&mut KernelConfig),
) -> KernelConfig {
    let layout = HomeLayout::new(home.path());
    // What the daemon's `prepare_home` makes before it boots the kernel.
    for dir in layout.dirs() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut config = KernelConfig::new(&layout, uuid::Uuid::nil(), workspace.path().into());
    configure(&mut config);
    config
}

impl TestKernel {
    /// Boots a kernel with the daemon's defaults changed by `configure`, in a fresh home
    /// and workspace; panics if it does not boot.
    pub(crate) async fn boot(configure: impl FnOnce(&mut KernelConfig)) -> Self {
        Self::boot_in(short_tempdir(), short_tempdir(), configure)
            .await
            .unwrap_or_else(|(e, _, _)| panic!("the kernel did not boot: {e}"))
    }

    /// Boots a kernel in `home` and `workspace` (say, those of a kernel that has stopped);
    /// on failure, gives them back with the error.
    pub(crate) async fn boot_in(
        home: TempDir,
        workspace: TempDir,
        configure: impl FnOnce(&mut KernelConfig),
    ) -> Result<Self, (BootError, TempDir, TempDir)> {
        let config = config_for(&home, &workspace, configure);
        let files = config.files.clone();
        match Kernel::boot(config).await {
            Ok(kernel) => Ok(Self {
                home,
                workspace,
                files,
                kernel: Some(kernel),
            }),
            Err(e) => Err((e, home, workspace)),
        }
    }

    /// The home and workspace of a kernel that has ended, to boot another one in.
    pub(crate) fn into_dirs(mut self) -> (TempDir, TempDir) {
        assert!(self.kernel.is_none(), "the kernel is still running");
        let home = std::mem::replace(&mut self.home, short_tempdir());
        let workspace = std::mem::replace(&mut self.workspace, short_tempdir());
        (home, workspace)
    }

    /// The running kernel.
    pub(crate) fn kernel(&self) -> &Kernel {
        self.kernel.as_ref().expect("the kernel has not ended")
    }

    /// The whole supervision tree.
    pub(crate) async fn tree(&self) -> TreeNode {
        self.kernel().supervisor().send(GetTree).await.unwrap()
    }

    /// Injects `fault` into the kernel actor `target` through the root supervisor (the
    /// config needs `allow_fault_injection` only for clients' `InjectFault`).
    pub(crate) async fn inject(&self, target: &str, fault: Fault) -> Result<(), SupervisorError> {
        let message = InjectFault {
            target: target.into(),
            fault,
            dry_run: false,
        };
        self.kernel().supervisor().send(message).await.unwrap()
    }

    /// Polls the tree until node `name` exists and `cond` holds for it.
    pub(crate) async fn node_until(
        &self,
        name: &str,
        cond: impl Fn(&TreeNode) -> bool,
    ) -> TreeNode {
        let found = poll_async(DEADLINE, async || {
            let tree = self.tree().await;
            match tree.find(name) {
                Some(node) if cond(node) => Ok(node.clone()),
                _ => Err(tree),
            }
        })
        .await;
        found.unwrap_or_else(|tree| panic!("`{name}` never reached the state wanted: {tree:#?}"))
    }

    /// A connection that has completed the handshake with the session's token.
    pub(crate) async fn connect(&self) -> Conn {
        let token = std::fs::read_to_string(self.files.token()).unwrap();
        Conn::handshake(&self.files.socket(), &token).await
    }

    /// The session files on disk now (socket, token, ready).
    pub(crate) fn session_files(&self) -> Vec<PathBuf> {
        [self.files.socket(), self.files.token(), self.files.ready()]
            .into_iter()
            .filter(|p| p.exists())
            .collect()
    }

    /// Requests a graceful shutdown and waits for the kernel to end.
    pub(crate) async fn shutdown(&mut self, reason: &str) -> KernelExit {
        self.kernel().shutdown_handle().request(reason);
        self.wait().await
    }

    /// Waits, at most [`DEADLINE`], for the kernel to end (its tree stopped and its session
    /// files removed).
    pub(crate) async fn wait(&mut self) -> KernelExit {
        let kernel = self.kernel.take().expect("the kernel has not ended");
        tokio::time::timeout(DEADLINE, kernel.wait())
            .await
            .expect("the kernel ended in time")
    }
}

impl Drop for TestKernel {
    fn drop(&mut self) {
        // A test that failed half-way: the tree stops with the test's actix system.
        if let Some(kernel) = &self.kernel {
            kernel.shutdown_handle().request("the test ended");
        }
    }
}

/// An authenticated connection to a kernel's socket speaking raw frames (a big-endian
/// `u32` length, then MessagePack), so that these tests do not depend on a client library.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: UnixStream,
    next_id: u64,
}

impl Conn {
    /// Connects to `socket` and says hello with `token`; panics unless welcomed.
    pub(crate) async fn handshake(socket: &std::path::Path, token: &str) -> Self {
        let stream = UnixStream::connect(socket).await.unwrap();
        let mut conn = Self { stream, next_id: 1 };
        let hello = Value::Map(vec![
            ("token".into(), token.into()),
            ("protocol".into(), 1.into()),
            ("client".into(), "in-process-test".into()),
        ]);
        conn.send(&hello).await;
        let welcome = conn.recv().await.expect("a handshake reply");
        assert_eq!(get(&welcome, "ok"), &Value::Boolean(true), "{welcome}");
        conn
    }

    async fn send(&mut self, value: &Value) {
        let mut body = Vec::new();
        rmpv::encode::write_value(&mut body, value).unwrap();
        let len = u32::try_from(body.len()).unwrap();
        self.stream.write_all(&len.to_be_bytes()).await.unwrap();
        self.stream.write_all(&body).await.unwrap();
    }

    /// The next frame, within [`DEADLINE`]; `None` when the kernel closed the connection.
    pub(crate) async fn recv(&mut self) -> Option<Value> {
        let read = async {
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await.ok()?;
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            self.stream.read_exact(&mut body).await.ok()?;
            Some(rmpv::decode::read_value(&mut body.as_slice()).unwrap())
        };
        tokio::time::timeout(DEADLINE, read)
            .await
            .expect("a frame in time")
    }

    /// Sends `request` (a variant name, or a map of one variant name to its fields) and
    /// returns its reply's `result`, or its `error` as `Err`; frames that are not its reply
    /// (events) are skipped.
    pub(crate) async fn call(&mut self, request: Value) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = Value::Map(vec![("id".into(), id.into()), ("request".into(), request)]);
        self.send(&frame).await;
        loop {
            let reply = self
                .recv()
                .await
                .expect("a reply before the connection closed");
            if get(&reply, "id").as_u64() != Some(id) {
                continue;
            }
            return match get(&reply, "error") {
                Value::Nil => Ok(get(&reply, "result").clone()),
                error => Err(error.clone()),
            };
        }
    }

    /// [`Conn::call`] that must succeed.
    pub(crate) async fn ok(&mut self, request: Value) -> Value {
        let answer = self.call(request.clone()).await;
        answer.unwrap_or_else(|e| panic!("{request} failed: {e}"))
    }
}

/// A request with fields: `{name: {field: value, ...}}`.
pub(crate) fn request(name: &str, fields: Vec<(&str, Value)>) -> Value {
    let fields = fields.into_iter().map(|(k, v)| (k.into(), v)).collect();
    Value::Map(vec![(name.into(), Value::Map(fields))])
}

/// `value[key]` for a MessagePack map, `Nil` when absent.
pub(crate) fn get<'a>(value: &'a Value, key: &str) -> &'a Value {
    static NIL: Value = Value::Nil;
    value
        .as_map()
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v)
        })
        .unwrap_or(&NIL)
}
