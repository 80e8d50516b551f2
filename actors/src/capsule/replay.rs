//! Replaying a crash bundle (`ReplayCrash`, `astrid replay ID`): the recorded calls are run,
//! in order, against the crashed module in a fresh sandbox with the same limits, whose host
//! imports answer from the recording (see `tape.rs`): no service is touched, not the store,
//! the workspace, the bus, MCP servers or the network. Fuel metering makes a guest
//! deterministic, so a trap, garbage or running out of fuel reproduces with the same
//! message (and the fuel each call spent matches the recording); a wall-clock deadline
//! may not, since the replay does not wait where the live call waited.
//!
//! The module run is the copy kept with the bundles when there is one, else the capsule's
//! module file if it still has the crashed module's hash. Whether the capsule's module
//! changed since the crash is reported either way.
//!
//! Plain code, run on a blocking thread (a wasmer `Store` is not `Send`: the sandbox is made
//! there).

use std::path::Path;
use std::time::Duration;

use super::Limits;
use super::crashes::{CrashError, CrashStore};
use super::host::Host;
use super::runner::garbage;
use super::sandbox::{self, CallError, Sandbox};
use super::tape::{Player, Tape, entry_of};
use crate::files;
use crate::protocol::{CrashBundle, CrashKind, ReplayReport};

/// Replays bundle `id` of `store`.
///
/// # Errors
///
/// When the bundle cannot be read (not found, a bad id, damaged). A module that cannot be
/// found or compiled, and a bundle with nothing to replay, are reported as not reproduced,
/// with the reason in its notes.
pub fn replay(store: &CrashStore, id: &str) -> Result<ReplayReport, CrashError> {
    let bundle = store.get(id)?;
    let now = files::read_bounded(
        Path::new(&bundle.module.path),
        super::inspect::MAX_MODULE_BYTES,
    )
    .ok();
    let now_hash = now
        .as_ref()
        .map(|bytes| blake3::hash(bytes).to_hex().to_string());
    let mut report = ReplayReport {
        id: bundle.id.clone(),
        reproduced: false,
        module_hash: bundle.module.hash.clone(),
        module_changed: match &now_hash {
            Some(hash) if *hash == bundle.module.hash => None,
            Some(hash) => Some(hash.clone()),
            None => Some("missing".into()),
        },
        calls_run: 0,
        expected: bundle.kind,
        expected_message: bundle.message.clone(),
        got: None,
        got_message: None,
        backtrace: Vec::new(),
        fuel: Vec::new(),
        diverged: None,
        notes: Vec::new(),
    };
    if let Some(hash) = &report.module_changed {
        report.notes.push(format!(
            "the capsule's module changed since the crash (it is now {hash}); the replay runs \
             the module that crashed ({})",
            bundle.module.hash
        ));
    }
    if !bundle.in_call {
        report.notes.push(format!(
            "the capsule crashed outside a call ({}): there is nothing to replay",
            bundle.kind.as_str()
        ));
        return Ok(report);
    }
    let module = store
        .module(&bundle.module.hash)
        .or_else(|| (report.module_changed.is_none()).then_some(now).flatten());
    let Some(module) = module else {
        report.notes.push(
            "the module that crashed was not kept, and the capsule's module changed since: \
             it cannot be replayed"
                .into(),
        );
        return Ok(report);
    };
    run(&bundle, &module, &mut report);
    Ok(report)
}

/// Runs the recorded calls; fills in what happened.
fn run(bundle: &CrashBundle, module: &[u8], report: &mut ReplayReport) {
    let limits = Limits {
        memory_pages: bundle.limits.memory_pages,
        fuel: bundle.limits.fuel,
        call_timeout: Duration::from_millis(bundle.limits.call_timeout_ms),
    };
    let made = sandbox::compile(module, limits).and_then(|compiled| {
        let player = Player::new(bundle.calls.clone());
        Sandbox::with_tape(
            &compiled,
            Host::detached(&bundle.capsule),
            Tape::Replay(player),
        )
    });
    let mut sandbox = match made {
        Ok(sandbox) => sandbox,
        Err(e) => {
            report.notes.push(format!("the module does not load: {e}"));
            return;
        }
    };
    if bundle.calls_dropped > 0 {
        report.notes.push(format!(
            "{} earlier calls of the incarnation were not kept: the replay starts from a fresh \
             instance without them",
            bundle.calls_dropped
        ));
    }
    let last = bundle.calls.len().saturating_sub(1);
    for (i, call) in bundle.calls.iter().enumerate() {
        if !call.complete() {
            report.notes.push(format!(
                "call {i}'s input or host results were past the bundle's bounds and not kept: \
                 the replay stops before it"
            ));
            return;
        }
        let entry = entry_of(call.entry);
        let failure = match sandbox.call(entry, &call.input) {
            Ok(reply) => garbage(entry, &reply).map(|why| (CrashKind::Garbage, why)),
            Err(CallError::Unconfigured(_)) => None,
            Err(e) => e.kind().map(|kind| (kind, e.to_string())),
        };
        report.calls_run += 1;
        let recorded = call.end.as_ref().map_or(0, |end| end.fuel_used);
        report.fuel.push((recorded, sandbox.fuel_used()));
        if let Tape::Replay(player) = sandbox.tape()
            && let Some(diverged) = player.diverged()
        {
            report.diverged = Some(diverged.clone());
            return;
        }
        if let Some((kind, message)) = failure {
            report.got = Some(kind);
            report.got_message = Some(message);
            report.backtrace = sandbox.backtrace().to_vec();
            if i < last {
                report.notes.push(format!(
                    "the replay failed at call {i}, before the recorded crash"
                ));
                return;
            }
            break;
        }
    }
    report.reproduced = report.calls_run == bundle.calls.len() as u64
        && report.got == Some(bundle.kind)
        && report.got_message.as_deref() == Some(bundle.message.as_str());
    if report.reproduced && report.backtrace != bundle.backtrace {
        report
            .notes
            .push("the backtrace differs from the recorded one".into());
    }
    if !report.reproduced && bundle.kind == CrashKind::Deadline {
        report.notes.push(
            "the recorded crash was a wall-clock deadline: the replay does not wait where the \
             live call waited (services, injected delays), so it may not reproduce"
                .into(),
        );
    }
}
