//! Panic capture: a process-wide panic hook that logs every panic and remembers its message
//! and the Tokio task it happened in, so a dying actor's [`ExitGuard`](super::ExitGuard) can
//! report `panicked: <message>` instead of a bare stop. The previous hook still runs.
//!
//! Each actor runs in its own task, and Tokio drops a task's future, and with it the guard,
//! inside that task's context right after catching the panic. Matching the task id means a
//! panic elsewhere on the thread is never blamed on an actor.

use std::cell::RefCell;
use std::sync::Once;

use tokio::task::Id;

thread_local! {
    static LAST_PANIC: RefCell<Option<(String, Id)>> = const { RefCell::new(None) };
}

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
            if let Some(task) = tokio::task::try_id() {
                LAST_PANIC.with(|last| *last.borrow_mut() = Some((message, task)));
            }
            previous(info);
        }));
    });
}

/// Takes the message of a panic in the current Tokio task, if that task panicked.
pub(crate) fn take_for_current_task() -> Option<String> {
    let task = tokio::task::try_id()?;
    LAST_PANIC.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((_, id)) if *id == task => last.take().map(|(message, _)| message),
            _ => None,
        }
    })
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
    fn a_panic_is_remembered_for_its_own_task_only() {
        install();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let same = tokio::task::spawn_local(async {
                let _ = std::panic::catch_unwind(|| panic!("boom {}", 7));
                (take_for_current_task(), take_for_current_task())
            });
            assert_eq!(same.await.unwrap(), (Some("boom 7".to_owned()), None));
            let _ = tokio::task::spawn_local(async {
                let _ = std::panic::catch_unwind(|| panic!("elsewhere"));
            })
            .await;
            let other = tokio::task::spawn_local(async { take_for_current_task() });
            assert_eq!(other.await.unwrap(), None);
        });
    }
}
