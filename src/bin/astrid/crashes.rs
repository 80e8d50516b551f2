//! `astrid crashes` and `astrid replay`: the crash bundles a daemon keeps of capsule
//! crashes in `<home>/crashes/`, and their replay against the crashed module with the
//! recorded host-call results. `astrid replay` exits 0 when the crash reproduced, 1 when it
//! did not (or the request failed).

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use astrid::protocol::{
    CrashBundle, CrashSummary, CrashesRemoved, HostGiven, RecordedCall, ReplayReport, Request,
};

use crate::args::CrashesCommand;
use crate::{CliError, show};

/// Runs one `astrid crashes` command.
pub(crate) async fn run(
    client: &astrid::client::Client,
    command: CrashesCommand,
    json: bool,
) -> Result<(), CliError> {
    match command {
        CrashesCommand::Ls => {
            let list: Vec<CrashSummary> = client.call(Request::ListCrashes).await?;
            show(json, &list, |l| list_text(l))
        }
        CrashesCommand::Show { id } => {
            let bundle: CrashBundle = client.call(Request::GetCrash { id }).await?;
            show(json, &bundle, bundle_text)
        }
        CrashesCommand::Rm { id, all: _ } => {
            let done: CrashesRemoved = client.call(Request::RemoveCrash { id }).await?;
            show(json, &done, |d| match d.removed.len() {
                0 => "no crash bundle to remove\n".to_owned(),
                1 => format!("removed {}\n", d.removed[0]),
                n => format!("removed {n} crash bundles\n"),
            })
        }
    }
}

/// Runs `astrid replay ID`.
pub(crate) async fn replay(
    client: &astrid::client::Client,
    id: String,
    json: bool,
) -> Result<(), CliError> {
    let report: ReplayReport = client.call(Request::ReplayCrash { id }).await?;
    show(json, &report, replay_text)?;
    if report.reproduced {
        Ok(())
    } else {
        Err(CliError::NotReproduced(report.id))
    }
}

fn when(time_ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(time_ms);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn list_text(list: &[CrashSummary]) -> String {
    if list.is_empty() {
        return "no crash bundles\n".into();
    }
    let mut out = String::new();
    for c in list {
        let _ = writeln!(
            out,
            "{}  {}  {:<11}  {} call(s)  {} bytes  {}",
            c.id,
            when(c.time_ms),
            c.kind.as_str(),
            c.calls,
            c.size,
            c.message
        );
    }
    out
}

fn given(g: &HostGiven) -> String {
    match g {
        HostGiven::Code(code) => code.to_string(),
        HostGiven::Bytes(bytes) => format!("{} bytes", bytes.len()),
        HostGiven::Omitted { len } => format!("{len} bytes (not kept)"),
        HostGiven::Withheld { len } => format!("{len} bytes (a secret, not kept)"),
        HostGiven::Unconfigured(message) => format!("unconfigured: {message}"),
    }
}

fn call_text(out: &mut String, i: usize, call: &RecordedCall) {
    let end = call.end.as_ref().map_or_else(
        || "did not end".to_owned(),
        |e| match (&e.failure, &e.message) {
            (Some(kind), Some(message)) => {
                format!("{}: {message}; {} fuel", kind.as_str(), e.fuel_used)
            }
            _ => format!("answered; {} fuel", e.fuel_used),
        },
    );
    let kept = if call.input.len() as u64 == call.input_len {
        String::new()
    } else {
        " (not kept)".into()
    };
    let _ = writeln!(
        out,
        "  #{i} {:?}, input {} bytes{kept}: {end}",
        call.entry, call.input_len
    );
    for h in &call.host_calls {
        let _ = writeln!(
            out,
            "      {}{:?} -> {}",
            h.import,
            h.sizes,
            given(&h.given)
        );
    }
    if call.host_calls_dropped > 0 {
        let _ = writeln!(
            out,
            "      ... {} more host calls not kept",
            call.host_calls_dropped
        );
    }
}

fn bundle_text(b: &CrashBundle) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "crash {} of capsule {} at {}",
        b.id,
        b.capsule,
        when(b.time_ms)
    );
    let _ = writeln!(out, "{}: {}", b.kind.as_str(), b.message);
    if let Some(fuel) = b.fuel_used {
        let _ = writeln!(out, "fuel used: {fuel} of {}", b.limits.fuel);
    }
    let kept = if b.module.kept {
        "copy kept"
    } else {
        "no copy kept"
    };
    let _ = writeln!(
        out,
        "module: {} (blake3 {}, {kept})",
        b.module.path, b.module.hash
    );
    let _ = writeln!(
        out,
        "limits: {} fuel, {} pages, {} ms per call",
        b.limits.fuel, b.limits.memory_pages, b.limits.call_timeout_ms
    );
    if !b.backtrace.is_empty() {
        out.push_str("backtrace:\n");
        for frame in &b.backtrace {
            let _ = writeln!(out, "  {frame}");
        }
    }
    if !b.in_call {
        out.push_str("crashed outside a call: nothing to replay\n");
        return out;
    }
    let _ = write!(out, "calls ({}", b.calls.len());
    if b.calls_dropped > 0 {
        let _ = write!(out, "; {} earlier ones not kept", b.calls_dropped);
    }
    out.push_str("):\n");
    for (i, call) in b.calls.iter().enumerate() {
        call_text(&mut out, i, call);
    }
    out
}

fn replay_text(r: &ReplayReport) -> String {
    let mut out = String::new();
    let verdict = if r.reproduced {
        "reproduced"
    } else {
        "did not reproduce"
    };
    let _ = writeln!(out, "replay of {}: {verdict}", r.id);
    let _ = writeln!(
        out,
        "recorded: {}: {}",
        r.expected.as_str(),
        r.expected_message
    );
    match (&r.got, &r.got_message) {
        (Some(kind), Some(message)) => {
            let _ = writeln!(out, "replayed: {}: {message}", kind.as_str());
        }
        _ => {
            let _ = writeln!(out, "replayed: no crash ({} call(s) run)", r.calls_run);
        }
    }
    if !r.backtrace.is_empty() {
        out.push_str("backtrace:\n");
        for frame in &r.backtrace {
            let _ = writeln!(out, "  {frame}");
        }
    }
    for (i, (recorded, replayed)) in r.fuel.iter().enumerate() {
        let same = if recorded == replayed {
            ""
        } else {
            "  (differs)"
        };
        let _ = writeln!(
            out,
            "  call #{i}: fuel {recorded} recorded, {replayed} replayed{same}"
        );
    }
    if let Some(d) = &r.diverged {
        let _ = writeln!(
            out,
            "diverged at call #{}, host call #{}: expected {}, the guest called {}",
            d.call, d.host_call, d.expected, d.got
        );
    }
    for note in &r.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}
