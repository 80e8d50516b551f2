//! Crash bundles: what the daemon keeps of each capsule crash in `<home>/crashes/` (the
//! failure, the module, and the calls of the crashed incarnation with their host-call logs,
//! enough to replay it), what `ListCrashes` and `RemoveCrash` answer, and what
//! `ReplayCrash` reports. The daemon writes bundles with these very types.

use serde::{Deserialize, Serialize};

/// How a capsule's incarnation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrashKind {
    /// The guest trapped (`unreachable`, an out-of-bounds access, a stack overflow...).
    Trap,
    /// The guest spent the call's metering points.
    OutOfFuel,
    /// The call ended after its wall-clock deadline.
    Deadline,
    /// The guest answered something that is not a reply.
    Garbage,
    /// The `trap` fault, injected from outside, between calls: nothing to replay.
    Injected,
    /// The instance could not be made: nothing to replay.
    Start,
}

impl CrashKind {
    /// Its name on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trap => "trap",
            Self::OutOfFuel => "out_of_fuel",
            Self::Deadline => "deadline",
            Self::Garbage => "garbage",
            Self::Injected => "injected",
            Self::Start => "start",
        }
    }
}

/// The guest function a call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEntry {
    /// `astrid_command`.
    Command,
    /// `astrid_event`.
    Event,
    /// `astrid_intercept`.
    Intercept,
}

/// What a host import gave the guest (before it was copied into the guest's memory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostGiven {
    /// A number: a status, an error code, a clock reading.
    Code(i64),
    /// Bytes handed over (a value, a file, a response, random bytes); the import returned
    /// their location or `0`.
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Bytes handed over but not kept (past the bundle's bound): a replay stops here.
    Omitted {
        /// How many there were.
        len: u64,
    },
    /// A secret setting's value (`config_get`), never kept: a replay stops here.
    Withheld {
        /// Its length.
        len: u64,
    },
    /// A required setting was unset: the call ended with this message.
    Unconfigured(String),
}

/// One host import called by the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCall {
    /// The import's name in module `astrid`.
    pub import: String,
    /// The lengths the guest passed (key, value, path, payload...), in argument order.
    pub sizes: Vec<u32>,
    /// What it gave the guest.
    pub given: HostGiven,
}

/// How one call into the guest ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEnd {
    /// None when the guest answered; else how it failed.
    pub failure: Option<CrashKind>,
    /// The failure's message.
    pub message: Option<String>,
    /// Metering points it spent.
    pub fuel_used: u64,
}

/// One call into the crashed incarnation, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedCall {
    /// Which guest function.
    pub entry: CallEntry,
    /// Its input (MessagePack, as the guest got it); empty when not kept.
    #[serde(with = "serde_bytes")]
    pub input: Vec<u8>,
    /// The input's length (larger than `input` when it was not kept).
    pub input_len: u64,
    /// The host imports it called, in order.
    pub host_calls: Vec<HostCall>,
    /// Host calls made after the bound of one call's log was reached (not kept).
    pub host_calls_dropped: u64,
    /// How it ended; none if the incarnation ended before it did.
    pub end: Option<CallEnd>,
}

impl RecordedCall {
    /// Whether it can be replayed: its input and its whole host-call log were kept.
    pub fn complete(&self) -> bool {
        self.input.len() as u64 == self.input_len
            && self.host_calls_dropped == 0
            && !self.host_calls.iter().any(|c| {
                matches!(
                    c.given,
                    HostGiven::Omitted { .. } | HostGiven::Withheld { .. }
                )
            })
    }
}

/// The limits the crashed module ran under (a replay uses the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashLimits {
    /// Metering points per call.
    pub fuel: u64,
    /// Linear memory ceiling, in 64 KiB pages.
    pub memory_pages: u32,
    /// Each call's wall-clock deadline.
    pub call_timeout_ms: u64,
}

/// The module that crashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashModule {
    /// The module file, as the capsule's manifest names it.
    pub path: String,
    /// BLAKE3 of the file's bytes when the capsule loaded (hex).
    pub hash: String,
    /// Whether a copy of it is kept with the bundles (`crashes/modules/<hash>`), so that a
    /// replay runs it even after the capsule changed.
    pub kept: bool,
}

/// Result of `ListCrashes`: one bundle, without its calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashSummary {
    /// Its id (`astrid crashes show ID`).
    pub id: String,
    /// When it crashed, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The capsule.
    pub capsule: String,
    /// How it ended.
    pub kind: CrashKind,
    /// Why, in words.
    pub message: String,
    /// Calls kept for replay.
    pub calls: u64,
    /// The module's hash.
    pub module_hash: String,
    /// Bytes the bundle takes on disk (without the module's copy, which bundles share).
    pub size: u64,
}

/// Result of `GetCrash`: everything kept of one crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashBundle {
    /// Its id.
    pub id: String,
    /// When it crashed, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The capsule.
    pub capsule: String,
    /// The module it ran.
    pub module: CrashModule,
    /// The limits it ran under.
    pub limits: CrashLimits,
    /// How it ended.
    pub kind: CrashKind,
    /// Why, in words (as the supervision tree reports it).
    pub message: String,
    /// The WebAssembly backtrace of the trap, innermost frame first, as wasmer gives it.
    pub backtrace: Vec<String>,
    /// Metering points the failed call spent.
    pub fuel_used: Option<u64>,
    /// Whether it crashed inside a call into the guest (false: nothing to replay).
    pub in_call: bool,
    /// The calls of the incarnation, oldest first, the failed one last.
    pub calls: Vec<RecordedCall>,
    /// Earlier calls of the incarnation not kept (past the bound): a replay starts from a
    /// fresh instance without them, so a guest that keeps state may not crash the same way.
    pub calls_dropped: u64,
}

/// Result of `RemoveCrash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashesRemoved {
    /// The ids removed.
    pub removed: Vec<String>,
}

/// Where a replay stopped following the recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// The call (0-based, among the bundle's calls).
    pub call: u64,
    /// The host call within it (0-based).
    pub host_call: u64,
    /// What the recording has there (`kv_put(5, 12)`, or `nothing`).
    pub expected: String,
    /// What the guest did instead.
    pub got: String,
}

/// Result of `ReplayCrash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayReport {
    /// The bundle.
    pub id: String,
    /// Whether the last call failed the same way (same kind and message).
    pub reproduced: bool,
    /// The module's hash in the bundle.
    pub module_hash: String,
    /// The hash of the capsule's module file now, when it differs (or `missing`): the
    /// replay ran the kept copy of the crashed module, not the capsule as it is now.
    pub module_changed: Option<String>,
    /// Calls run.
    pub calls_run: u64,
    /// How the recorded crash ended.
    pub expected: CrashKind,
    /// Its message.
    pub expected_message: String,
    /// How the replay's last call ended (none: it answered).
    pub got: Option<CrashKind>,
    /// Its message.
    pub got_message: Option<String>,
    /// The replay's backtrace of the failure.
    pub backtrace: Vec<String>,
    /// Metering points each call spent, recorded and replayed, in call order (a guest is
    /// deterministic under fuel metering, so they match when it replays faithfully).
    pub fuel: Vec<(u64, u64)>,
    /// Where the guest left the recording, if it did.
    pub diverged: Option<Divergence>,
    /// What limits the replay's faithfulness (dropped calls, a wall-clock deadline...).
    pub notes: Vec<String>,
}
