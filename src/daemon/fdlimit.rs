//! The open-file limit. Every connection holds a descriptor, so at boot the soft limit is
//! raised to the hard one (a soft limit of 1024, or less, would let a few hundred idle
//! connections lock every client out), and the connection caps are lowered, if need be, to
//! leave the daemon descriptors for its own files whatever its clients do. The soft limit
//! the daemon started with is kept for its MCP servers, which need no more than before.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept out of the connection caps for the daemon's own use: databases and
/// journal, log files, the listening socket, the threads' polls and wake-ups, MCP servers'
/// pipes. A daemon with one capsule and two MCP servers uses 46; each capsule (a thread)
/// and each server (pipes, a pidfd) adds about three.
pub(crate) const RESERVED: u64 = 256;

/// The soft limit asked for when the hard limit is unlimited (Linux's default `nr_open`).
const UNLIMITED: u64 = 1 << 20;

/// The open-file limit after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenFiles {
    /// The soft limit in force.
    pub(crate) limit: u64,
    /// The soft limit the process started with, if it was raised.
    pub(crate) raised_from: Option<u64>,
}

/// Raises the soft limit on open files to the hard one.
pub(crate) fn raise() -> OpenFiles {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let soft = current.unwrap_or(UNLIMITED);
    let hard = maximum.unwrap_or(UNLIMITED);
    let unchanged = OpenFiles {
        limit: soft,
        raised_from: None,
    };
    if soft >= hard {
        tracing::info!(limit = soft, "open-file limit");
        return unchanged;
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::info!(from = soft, to = hard, "raised the open-file limit");
            OpenFiles {
                limit: hard,
                raised_from: Some(soft),
            }
        }
        Err(e) => {
            tracing::warn!(
                limit = soft,
                "cannot raise the open-file limit to {hard}: {e}"
            );
            unchanged
        }
    }
}

/// The connection caps `(total, unauthenticated)` that fit an open-file limit of `nofile`:
/// the total leaves [`RESERVED`] descriptors free (half the limit when it is below twice
/// that), and the unauthenticated cap is at most the total. Lowered caps are logged.
pub(crate) fn fit_caps(total: usize, unauthenticated: usize, nofile: u64) -> (usize, usize) {
    let room = nofile.saturating_sub(RESERVED).max(nofile / 2);
    let room = usize::try_from(room).unwrap_or(usize::MAX).max(1);
    let fitted = (total.min(room), unauthenticated.min(total).min(room));
    if fitted.0 < total {
        tracing::warn!(
            requested = total,
            cap = fitted.0,
            open_file_limit = nofile,
            "--max-connections lowered to fit the open-file limit"
        );
    }
    fitted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_leave_room_for_the_daemon_own_descriptors() {
        assert_eq!(fit_caps(1024, 64, 1_048_576), (1024, 64));
        assert_eq!(fit_caps(1024, 64, 1024), (768, 64));
        assert_eq!(fit_caps(1024, 2000, 1024), (768, 768));
        assert_eq!(fit_caps(1024, 64, 300), (150, 64));
        assert_eq!(fit_caps(10, 64, 0), (1, 1));
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let before = getrlimit(Resource::Nofile);
        let OpenFiles { limit, raised_from } = raise();
        let after = getrlimit(Resource::Nofile);
        assert_eq!(after.current, Some(limit));
        if before.current < before.maximum {
            assert_eq!(raised_from, before.current);
        }
        assert!(after.current >= before.current);
        assert_eq!(after.maximum, before.maximum);
    }
}
