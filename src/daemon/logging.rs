//! Logging: daily files under `<home>/logs/` (seven kept), plus stderr when it is a terminal;
//! or, when stderr is the systemd journal, stderr alone, each line prefixed with its syslog
//! priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug) and without a timestamp,
//! which the journal adds. actix and other `log` users are bridged into `tracing`.
//!
//! The files are bounded in size as well as in number: a day's file takes at most a seventh
//! of `--log-max-size`; past it, one line says so and the rest of that day's lines are
//! dropped (counted, and the count logged when the next day starts), so seven files stay
//! under the total whatever floods the log.

use std::fmt;
use std::io::IsTerminal;
use std::path::Path;

use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Log files kept.
const KEEP: usize = 7;

/// Where log lines go.
pub(crate) enum Sink<'a> {
    /// Daily files in `dir`, at most `max_size` bytes in all.
    Files { dir: &'a Path, max_size: u64 },
    /// stderr, which is the systemd journal.
    Journal,
}

/// Starts logging; keep the guard alive until exit so buffered lines are written.
///
/// # Errors
///
/// When the log directory cannot be used.
pub(crate) fn init(
    sink: &Sink<'_>,
    verbose: bool,
    filter: Option<String>,
) -> Result<WorkerGuard, String> {
    // The MCP SDK narrates every connection at `info`; its warnings are what matter.
    let default = if verbose {
        "debug,rmcp=info"
    } else {
        "info,rmcp=warn"
    };
    let filter = filter
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let (dir, max_size) = match *sink {
        Sink::Files { dir, max_size } => (dir, max_size),
        Sink::Journal => {
            // Lines are dropped, not waited for, should the journal fall behind.
            let (stderr, guard) = tracing_appender::non_blocking(std::io::stderr());
            let to_journal = tracing_subscriber::fmt::layer()
                .event_format(JournalFormat)
                .with_writer(stderr)
                .with_ansi(false);
            tracing_subscriber::registry()
                .with(filter)
                .with(to_journal)
                .try_init()
                .map_err(|e| format!("cannot start logging: {e}"))?;
            return Ok(guard);
        }
    };
    let appender = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix("astrid")
        .filename_suffix("log")
        .max_log_files(KEEP)
        .build(dir)
        .map_err(|e| format!("cannot log to {}: {e}", dir.display()))?;
    let capped = Capped::new(appender, max_size / KEEP as u64, utc_day);
    let (file, guard) = tracing_appender::non_blocking(capped);
    let to_file = tracing_subscriber::fmt::layer()
        .with_writer(file)
        .with_ansi(false);
    let to_terminal = std::io::stderr()
        .is_terminal()
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    tracing_subscriber::registry()
        .with(filter)
        .with(to_file)
        .with(to_terminal)
        .try_init()
        .map_err(|e| format!("cannot start logging: {e}"))?;
    Ok(guard)
}

/// One journal line: `<PRIORITY>target: message fields`, in the spans' context.
struct JournalFormat;

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write!(writer, "<{}>", priority(*meta.level()))?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, "{}:", span.name())?;
            }
            write!(writer, " ")?;
        }
        write!(writer, "{}: ", meta.target())?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The syslog priority the journal reads from a line's `<N>` prefix.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// The UTC day (days since the Unix epoch), as the daily rotation counts them.
fn utc_day() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

/// A writer that passes at most `per_day` bytes a day to `inner`, then drops lines until the
/// day changes.
struct Capped<W> {
    inner: W,
    per_day: u64,
    today: fn() -> u64,
    day: u64,
    written: u64,
    dropped: u64,
}

impl<W: std::io::Write> Capped<W> {
    fn new(inner: W, per_day: u64, today: fn() -> u64) -> Self {
        Self {
            inner,
            per_day,
            day: today(),
            today,
            written: 0,
            dropped: 0,
        }
    }
}

impl<W: std::io::Write> std::io::Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let day = (self.today)();
        if day != self.day {
            self.day = day;
            self.written = 0;
            if self.dropped > 0 {
                let note = format!(
                    "(astrid-daemon: {} log lines were dropped yesterday, past the day's {} bytes; see --log-max-size)\n",
                    self.dropped, self.per_day
                );
                self.dropped = 0;
                // The day's two notes are not counted: they are one line each at most.
                self.inner.write_all(note.as_bytes())?;
            }
        }
        let len = buf.len() as u64;
        if self.written + len > self.per_day {
            if self.dropped == 0 {
                let note = format!(
                    "(astrid-daemon: the log reached its {} bytes for today; further lines are dropped until tomorrow)\n",
                    self.per_day
                );
                self.inner.write_all(note.as_bytes())?;
            }
            self.dropped += 1;
            // Dropped, as far as the caller is concerned, written.
            return Ok(buf.len());
        }
        self.written += len;
        self.inner.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    static DAY: AtomicU64 = AtomicU64::new(0);

    fn day() -> u64 {
        DAY.load(Ordering::SeqCst)
    }

    #[test]
    fn a_day_takes_its_share_then_lines_are_dropped_until_the_next() {
        DAY.store(10, Ordering::SeqCst);
        let mut log = Capped::new(Vec::new(), 100, day);
        for _ in 0..5 {
            log.write_all(&[b'a'; 30]).unwrap();
        }
        let text = String::from_utf8(log.inner.clone()).unwrap();
        assert_eq!(
            text.matches(&"a".repeat(30)).count(),
            3,
            "three lines of 30 fit in 100"
        );
        assert_eq!(text.matches("reached its 100 bytes").count(), 1);
        assert_eq!(log.dropped, 2);
        DAY.store(11, Ordering::SeqCst);
        log.write_all(&[b'b'; 30]).unwrap();
        let text = String::from_utf8(log.inner.clone()).unwrap();
        assert!(
            text.contains("2 log lines were dropped yesterday"),
            "{text}"
        );
        assert!(text.ends_with(&"b".repeat(30)), "{text}");
    }
}
