//! What can go wrong reaching a capsule or running one of its calls, as the registry, the
//! router and the capsule's own answers report it (mapped to wire codes in `error/codes.rs`).

use std::io;
use std::time::Duration;

/// Errors answered by the capsule registry, or met routing a command to a capsule.
#[derive(Debug, thiserror::Error)]
pub enum CapsuleError {
    /// No capsule has that name.
    #[error("no capsule named `{0}`")]
    NotFound(String),
    /// No loaded capsule offers that command.
    #[error("no capsule offers the command `{0}`; `astrid commands` lists them")]
    UnknownCommand(String),
    /// The command belongs to the interactive `astrid` session, not to a capsule.
    #[error("`/{0}` is a command of the interactive `astrid` session, not of a capsule")]
    BuiltinCommand(String),
    /// The capsule exhausted its restart budget; it stays down until a reload.
    #[error("capsule `{capsule}` has failed ({reason}); fix it and run `astrid capsules reload`")]
    Failed {
        /// Capsule name.
        capsule: String,
        /// Its last failure.
        reason: String,
    },
    /// The capsule crashed and waits out its backoff before its restart.
    #[error("capsule `{0}` is restarting after a crash; retry shortly")]
    Restarting(String),
    /// The capsule crashed while handling the request.
    #[error("capsule `{capsule}` crashed: {reason}")]
    Crashed {
        /// Capsule name.
        capsule: String,
        /// What happened.
        reason: String,
    },
    /// The capsule did not answer within its call deadline (it is restarted).
    #[error("capsule `{capsule}` did not answer within {} ms", timeout.as_millis())]
    Deadline {
        /// Capsule name.
        capsule: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The capsule answered with an error of its own.
    #[error("{capsule}: {message}")]
    Guest {
        /// Capsule name.
        capsule: String,
        /// Its message.
        message: String,
    },
    /// The request is larger than the capsule's whole memory; it was not handed over.
    #[error(
        "the input ({len} bytes) is larger than capsule `{capsule}`'s memory ({ceiling} bytes)"
    )]
    InputTooLarge {
        /// Capsule name.
        capsule: String,
        /// Bytes of input.
        len: usize,
        /// The capsule's memory ceiling (`limits.memory_pages` × 64 KiB).
        ceiling: usize,
    },
    /// The capsule's manifest declares no such setting.
    #[error("capsule `{capsule}` declares no setting `{name}`; it declares: {declared}")]
    UnknownSetting {
        /// Capsule name.
        capsule: String,
        /// The setting asked for.
        name: String,
        /// The settings it declares, or `none`.
        declared: String,
    },
    /// A setting's value that cannot be kept.
    #[error("setting `{name}` of capsule `{capsule}`: {reason}")]
    BadSetting {
        /// Capsule name.
        capsule: String,
        /// The setting.
        name: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// The settings file could not be read or written; nothing changed.
    #[error("the settings of capsule `{capsule}` could not be saved: {source}")]
    SettingsUnsaved {
        /// Capsule name.
        capsule: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A capsule folder that cannot be installed, or the home that cannot take it.
    #[error("cannot install {path}: {reason}")]
    BadInstall {
        /// The folder or file concerned.
        path: String,
        /// Why.
        reason: String,
    },
}
