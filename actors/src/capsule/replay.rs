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
use crate::protocol::{CrashBundle, CrashKind, HostGiven, ReplayReport};

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
            let secret = call
                .host_calls
                .iter()
                .any(|h| matches!(h.given, HostGiven::Withheld { .. }));
            report.notes.push(if secret {
                format!(
                    "call {i} read a secret setting, whose value is never kept: the replay \
                     stops before it"
                )
            } else {
                format!(
                    "call {i}'s input or host results were past the bundle's bounds and not \
                     kept: the replay stops before it"
                )
            });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capsule::crashes::{CrashSink, Crashed};
    use crate::capsule::sandbox::Entry;
    use crate::protocol::{ImportEffect, ImportFault};
    use crate::supervisor::Fault;

    /// A guest whose command reads key `k` and traps on its second call when the read gave
    /// anything but "not found"; `import` is the import it reads with.
    fn guest(import: &str) -> String {
        format!(
            r#"(module
                (import "astrid" "{import}" (func $read (param i32 i32) (result i64)))
                (memory (export "memory") 1)
                (data (i32.const 0) "k")
                (global $calls (mut i32) (i32.const 0))
                (func (export "astrid_alloc") (param i32) (result i32) (i32.const 1024))
                (func (export "astrid_command") (param i32 i32) (result i64)
                    (local $got i64)
                    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
                    (local.set $got (call $read (i32.const 0) (i32.const 1)))
                    (if (i32.and (i32.eq (global.get $calls) (i32.const 2))
                                 (i64.ne (local.get $got) (i64.const -2)))
                        (then unreachable))
                    (i32.store8 (i32.const 16) (i32.const 0xc0))
                    (i64.const 0x0000001000000001)))"#
        )
    }

    /// Runs `module` as a live capsule with a detached host (whose `kv_get` fails with
    /// -5), twice, and keeps the crash in `store`; returns the bundle's id.
    fn crash(store: &CrashStore, dir: &Path, module: &str) -> String {
        let path = dir.join("m.wat");
        std::fs::write(&path, module).unwrap();
        let sink = CrashSink {
            store: store.clone(),
            module_path: path,
            module_hash: blake3::hash(module.as_bytes()).to_hex().to_string(),
        };
        let compiled = sandbox::compile(module.as_bytes(), Limits::default()).unwrap();
        let host = Host::detached("c").with_crashes(sink.clone());
        let mut live = Sandbox::new(&compiled, host).unwrap();
        assert!(live.call(Entry::Command, b"\xc0").is_ok());
        let error = live.call(Entry::Command, b"\xc0").unwrap_err();
        let (calls, calls_dropped) = live.take_calls();
        assert_eq!(calls[1].host_calls[0].given, HostGiven::Code(-5));
        sink.keep(
            "c",
            compiled.crash_limits(),
            Crashed {
                kind: None,
                message: error.to_string(),
                backtrace: live.backtrace().to_vec(),
                calls,
                calls_dropped,
            },
        );
        store.list().unwrap().pop().unwrap().id
    }

    #[test]
    fn a_recorded_crash_replays_without_its_services() {
        let dir = tempfile::tempdir().unwrap();
        let store = CrashStore::new(dir.path().join("crashes"));
        let id = crash(&store, dir.path(), &guest("kv_get"));
        let report = replay(&store, &id).unwrap();
        assert!(report.reproduced, "{report:?}");
        assert_eq!(report.got, Some(CrashKind::Trap));
        assert_eq!(report.calls_run, 2);
        assert!(report.fuel.iter().all(|(a, b)| a == b), "{report:?}");
        assert_eq!(report.module_changed, None);
        assert!(!report.backtrace.is_empty());
    }

    #[test]
    fn a_guest_that_calls_other_imports_than_recorded_has_diverged() {
        let dir = tempfile::tempdir().unwrap();
        let store = CrashStore::new(dir.path().join("crashes"));
        let id = crash(&store, dir.path(), &guest("kv_get"));
        // The kept copy is replaced by a module that reads with `vfs_read` instead.
        let mut bundle = store.get(&id).unwrap();
        let other = guest("vfs_read");
        bundle.module.hash = blake3::hash(other.as_bytes()).to_hex().to_string();
        store.save(&bundle, Some(other.as_bytes())).unwrap();
        let report = replay(&store, &id).unwrap();
        assert!(!report.reproduced);
        let diverged = report.diverged.unwrap();
        assert_eq!((diverged.call, diverged.host_call), (0, 0));
        assert_eq!(diverged.expected, "kv_get[1]");
        assert_eq!(diverged.got, "vfs_read[1]");
        assert!(
            report.module_changed.is_some(),
            "the file has the old module"
        );
    }

    #[test]
    fn a_module_neither_kept_nor_unchanged_cannot_be_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let store = CrashStore::new(dir.path().join("crashes"));
        let id = crash(&store, dir.path(), &guest("kv_get"));
        let hash = store.get(&id).unwrap().module.hash;
        std::fs::remove_file(dir.path().join("crashes/modules").join(&hash)).unwrap();
        std::fs::write(dir.path().join("m.wat"), guest("vfs_read")).unwrap();
        let report = replay(&store, &id).unwrap();
        assert!(!report.reproduced);
        assert!(report.module_changed.is_some());
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains("cannot be replayed")),
            "{report:?}"
        );
        assert!(matches!(
            replay(&store, "nope"),
            Err(CrashError::NotFound(_))
        ));
    }

    #[test]
    fn an_import_fault_is_recorded_as_what_the_guest_got() {
        let module = guest("kv_get");
        let compiled = sandbox::compile(module.as_bytes(), Limits::default()).unwrap();
        let host = Host::detached("c");
        host.faults().arm(&Fault::Import(ImportFault {
            import: "kv_get".into(),
            effect: ImportEffect::Fail { code: -2 },
            times: Some(1),
            probability: None,
            seed: 0,
        }));
        let mut live = Sandbox::new(&compiled, host).unwrap();
        live.call(Entry::Command, b"\xc0").unwrap();
        // The detached host fails `kv_get` with -5 once the fault is spent: the trap.
        assert!(live.call(Entry::Command, b"\xc0").is_err());
        let (calls, _) = live.take_calls();
        assert_eq!(calls[0].host_calls[0].given, HostGiven::Code(-2));
        assert_eq!(calls[1].host_calls[0].given, HostGiven::Code(-5));
    }

    #[test]
    fn a_secret_setting_is_never_recorded() {
        use std::collections::BTreeMap;
        use std::sync::Arc;

        use crate::capsule::config::{CapsuleConfig, SettingDecl};

        let module = guest("config_get");
        let declared = vec![SettingDecl {
            name: "k".into(),
            description: None,
            default: None,
            secret: true,
        }];
        let values = BTreeMap::from([("k".to_owned(), "s3cret".to_owned())]);
        let config = Arc::new(CapsuleConfig::new("c", declared, values));
        let compiled = sandbox::compile(module.as_bytes(), Limits::default()).unwrap();
        let mut live = Sandbox::new(&compiled, Host::detached_with("c", config)).unwrap();
        live.call(Entry::Command, b"\xc0").unwrap();
        let (calls, _) = live.take_calls();
        assert_eq!(calls[0].host_calls[0].given, HostGiven::Withheld { len: 6 });
        assert!(!calls[0].complete(), "a replay stops before it");
    }
}
