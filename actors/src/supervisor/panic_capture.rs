//! Panic capture: a process-wide panic hook that logs every panic and remembers its message
//! on the panicking thread, so a dying actor's [`ExitGuard`](super::ExitGuard) can report
//! "panicked: <message>" instead of a bare stop. The previous hook still runs afterwards.

use std::cell::RefCell;
use std::sync::Once;
use std::time::{Duration, Instant};

thread_local! {
    static LAST_PANIC: RefCell<Option<(String, Instant)>> = const { RefCell::new(None) };
}

/// A panic older than this is not attributed to an actor exit: the exit guard runs
/// microseconds after the panic that killed its actor.
const FRESHNESS: Duration = Duration::from_secs(1);

static INSTALL: Once = Once::new();

/// Installs the hook once per process; later calls do nothing.
pub fn install() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = payload_message(info.payload());
            let location = info.location().map(ToString::to_string).unwrap_or_default();
            let thread = std::thread::current();
            tracing::error!(
                target: "astrid::panic",
                thread = thread.name().unwrap_or("unnamed"),
                %location,
                "panic: {message}"
            );
            LAST_PANIC.with(|last| *last.borrow_mut() = Some((message, Instant::now())));
            previous(info);
        }));
    });
}

/// Takes the message of a panic that happened on this thread within the last second.
pub(crate) fn take_recent() -> Option<String> {
    LAST_PANIC
        .with(|last| last.borrow_mut().take())
        .filter(|(_, at)| at.elapsed() < FRESHNESS)
        .map(|(message, _)| message)
}

fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_is_remembered_once_on_its_thread() {
        install();
        let handle = std::thread::spawn(|| {
            let _ = std::panic::catch_unwind(|| panic!("boom {}", 7));
            (take_recent(), take_recent())
        });
        let (first, second) = handle.join().unwrap();
        assert_eq!(first.as_deref(), Some("boom 7"));
        assert_eq!(second, None);
    }
}
