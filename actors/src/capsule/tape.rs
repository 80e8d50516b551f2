//! What one instance of a capsule records of its calls, so that a crash can be replayed, and
//! what serves a replay from that record.
//!
//! Every [`Sandbox`](super::sandbox::Sandbox) holds a [`Tape`]. A live instance's tape is a
//! [`Recorder`]: for each call since the instance was made, the entry, its input bytes and
//! the log of its host calls (each import, the lengths the guest passed, and what it gave
//! the guest), within bounds: the last [`MAX_CALLS`] calls, [`MAX_BYTES`] of inputs and host
//! results for the whole instance, [`MAX_HOST_CALLS`] host calls per call. Older calls are
//! dropped first (and counted); an input or a result that cannot fit is not kept (its length
//! is). Nothing is written anywhere unless the instance crashes (see `crashes.rs`).
//!
//! A replay's tape is a [`Player`]: host imports do no work and answer, in order, what the
//! recording says they answered. A guest that calls another import than recorded, or with
//! other lengths, has diverged: the call is stopped there and the divergence noted.

use std::collections::VecDeque;

use wasmer::RuntimeError;

use super::sandbox::Entry;
use crate::protocol::{CallEnd, CallEntry, Divergence, HostCall, HostGiven, RecordedCall};

/// Calls kept per instance (the most recent).
pub const MAX_CALLS: usize = 64;
/// Bytes of inputs and host-call results kept per instance.
pub const MAX_BYTES: usize = 1024 * 1024;
/// Host calls kept per call.
pub const MAX_HOST_CALLS: usize = 4096;

/// An instance's tape: recording its calls, or replaying recorded ones.
#[derive(Debug)]
pub enum Tape {
    /// A live instance.
    Record(Recorder),
    /// A replay.
    Replay(Player),
}

impl Default for Tape {
    fn default() -> Self {
        Self::Record(Recorder::default())
    }
}

impl Tape {
    /// A call into the guest starts.
    pub fn begin(&mut self, entry: Entry, input: &[u8]) {
        match self {
            Self::Record(r) => r.begin(entry, input),
            Self::Replay(p) => p.begin(),
        }
    }

    /// The call ended.
    pub fn end(&mut self, end: CallEnd) {
        match self {
            Self::Record(r) => r.end(end),
            Self::Replay(p) => p.end(),
        }
    }

    /// In a replay, what the host call `import` with `sizes` answers (or a divergence,
    /// which stops the call); `None` when live (the import does its work).
    ///
    /// # Errors
    ///
    /// A divergence, which stops the guest.
    pub fn replayed(
        &mut self,
        import: &str,
        sizes: &[i32],
    ) -> Result<Option<HostGiven>, RuntimeError> {
        match self {
            Self::Record(_) => Ok(None),
            Self::Replay(p) => p.next(import, sizes).map(Some),
        }
    }

    /// Records what a live host call gave the guest; bytes that are `secret` are not kept
    /// (their length is).
    pub fn record(&mut self, import: &'static str, sizes: &[i32], given: &HostGiven, secret: bool) {
        if let Self::Record(r) = self {
            match given {
                HostGiven::Bytes(bytes) if secret => {
                    let len = bytes.len() as u64;
                    r.host_call(import, sizes, &HostGiven::Withheld { len });
                }
                _ => r.host_call(import, sizes, given),
            }
        }
    }
}

/// The wire form of an entry.
pub fn call_entry(entry: Entry) -> CallEntry {
    match entry {
        Entry::Command => CallEntry::Command,
        Entry::Event => CallEntry::Event,
        Entry::Intercept => CallEntry::Intercept,
    }
}

/// The sandbox's form of a recorded entry.
pub fn entry_of(entry: CallEntry) -> Entry {
    match entry {
        CallEntry::Command => Entry::Command,
        CallEntry::Event => Entry::Event,
        CallEntry::Intercept => Entry::Intercept,
    }
}

fn sizes_of(sizes: &[i32]) -> Vec<u32> {
    sizes
        .iter()
        .map(|&s| u32::try_from(s).unwrap_or(0))
        .collect()
}

/// The calls of a live instance.
#[derive(Debug, Default)]
pub struct Recorder {
    calls: VecDeque<RecordedCall>,
    /// Bytes of inputs and results in `calls`.
    bytes: usize,
    /// Calls dropped from the front.
    dropped: u64,
}

impl Recorder {
    fn begin(&mut self, entry: Entry, input: &[u8]) {
        if self.calls.len() == MAX_CALLS {
            self.drop_oldest();
        }
        let keep = self.room(input.len(), false);
        self.calls.push_back(RecordedCall {
            entry: call_entry(entry),
            input: if keep { input.to_vec() } else { Vec::new() },
            input_len: input.len() as u64,
            host_calls: Vec::new(),
            host_calls_dropped: 0,
            end: None,
        });
        if keep {
            self.bytes += input.len();
        }
    }

    fn end(&mut self, end: CallEnd) {
        if let Some(call) = self.calls.back_mut() {
            call.end = Some(end);
        }
    }

    fn host_call(&mut self, import: &'static str, sizes: &[i32], given: &HostGiven) {
        let len = match given {
            HostGiven::Bytes(bytes) => bytes.len(),
            _ => 0,
        };
        let keep = self.room(len, true);
        let Some(call) = self.calls.back_mut() else {
            return;
        };
        if call.host_calls.len() >= MAX_HOST_CALLS {
            call.host_calls_dropped += 1;
            return;
        }
        let given = match given {
            HostGiven::Bytes(bytes) if !keep => HostGiven::Omitted {
                len: bytes.len() as u64,
            },
            other => other.clone(),
        };
        if keep {
            self.bytes += len;
        }
        call.host_calls.push(HostCall {
            import: import.to_owned(),
            sizes: sizes_of(sizes),
            given,
        });
    }

    /// Makes room for `len` more bytes by dropping the oldest calls (never the running
    /// one when `running`); whether they fit.
    fn room(&mut self, len: usize, running: bool) -> bool {
        if len > MAX_BYTES {
            return false;
        }
        let keep = usize::from(running);
        while self.bytes + len > MAX_BYTES && self.calls.len() > keep {
            self.drop_oldest();
        }
        self.bytes + len <= MAX_BYTES
    }

    fn drop_oldest(&mut self) {
        if let Some(old) = self.calls.pop_front() {
            self.bytes -= old.input.len() + old.host_calls.iter().map(kept).sum::<usize>();
            self.dropped += 1;
        }
    }

    /// The calls kept, oldest first, and how many earlier ones were dropped.
    pub fn into_calls(self) -> (Vec<RecordedCall>, u64) {
        (self.calls.into(), self.dropped)
    }
}

fn kept(call: &HostCall) -> usize {
    match &call.given {
        HostGiven::Bytes(bytes) => bytes.len(),
        _ => 0,
    }
}

/// Why a replayed call was stopped.
#[derive(Debug, thiserror::Error)]
#[error("the replay left the recording: expected {expected}, the guest called {got}")]
pub struct Diverged {
    expected: String,
    got: String,
}

/// Serves a replay's host calls from a recording.
#[derive(Debug)]
pub struct Player {
    calls: Vec<RecordedCall>,
    /// The call running (its index), once one has begun.
    call: Option<usize>,
    /// The next host call within it.
    next: usize,
    diverged: Option<Divergence>,
}

impl Player {
    /// A player of `calls`, in order.
    pub fn new(calls: Vec<RecordedCall>) -> Self {
        Self {
            calls,
            call: None,
            next: 0,
            diverged: None,
        }
    }

    /// Where the guest left the recording, if it did.
    pub fn diverged(&self) -> Option<&Divergence> {
        self.diverged.as_ref()
    }

    fn begin(&mut self) {
        self.call = Some(self.call.map_or(0, |c| c + 1));
        self.next = 0;
    }

    fn end(&mut self) {
        let Some(call) = self.call.and_then(|c| self.calls.get(c)) else {
            return;
        };
        // A call that failed stops where it failed; one that answered made every host call.
        let answered = call.end.as_ref().is_some_and(|e| e.failure.is_none());
        if self.diverged.is_none() && answered && self.next < call.host_calls.len() {
            let expected = describe(&call.host_calls[self.next]);
            self.note(expected, "nothing more (the call ended)".into());
        }
    }

    fn note(&mut self, expected: String, got: String) -> Diverged {
        self.diverged = Some(Divergence {
            call: self.call.unwrap_or_default() as u64,
            host_call: self.next as u64,
            expected: expected.clone(),
            got: got.clone(),
        });
        Diverged { expected, got }
    }

    fn next(&mut self, import: &str, sizes: &[i32]) -> Result<HostGiven, RuntimeError> {
        let got = format!("{import}{:?}", sizes_of(sizes));
        let recorded = self
            .call
            .and_then(|c| self.calls.get(c))
            .and_then(|c| c.host_calls.get(self.next))
            .cloned();
        let Some(recorded) = recorded else {
            return Err(RuntimeError::user(Box::new(
                self.note("nothing more".into(), got),
            )));
        };
        if recorded.import != import || recorded.sizes != sizes_of(sizes) {
            return Err(RuntimeError::user(Box::new(
                self.note(describe(&recorded), got),
            )));
        }
        if let HostGiven::Omitted { len } | HostGiven::Withheld { len } = recorded.given {
            let why = format!("{got}, whose {len} result bytes were not kept");
            return Err(RuntimeError::user(Box::new(
                self.note(describe(&recorded), why),
            )));
        }
        self.next += 1;
        Ok(recorded.given)
    }
}

/// `kv_put[5, 12]`.
fn describe(call: &HostCall) -> String {
    format!("{}{:?}", call.import, call.sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end() -> CallEnd {
        CallEnd {
            failure: None,
            message: None,
            fuel_used: 1,
        }
    }

    #[test]
    fn the_recorder_keeps_the_last_calls_within_its_bounds() {
        let mut r = Recorder::default();
        for i in 0..MAX_CALLS + 10 {
            r.begin(Entry::Command, &[u8::try_from(i % 256).unwrap(); 4]);
            r.host_call("kv_get", &[3], &HostGiven::Bytes(vec![1, 2, 3]));
            r.end(end());
        }
        let (calls, dropped) = r.into_calls();
        assert_eq!(calls.len(), MAX_CALLS);
        assert_eq!(dropped, 10);
        assert_eq!(calls[0].input, [10; 4], "the oldest kept");
        assert!(calls.iter().all(RecordedCall::complete));
    }

    #[test]
    fn bytes_past_the_bound_drop_old_calls_then_are_not_kept() {
        let mut r = Recorder::default();
        r.begin(Entry::Command, &vec![1; MAX_BYTES / 2]);
        r.end(end());
        r.begin(Entry::Event, &vec![2; MAX_BYTES / 2 + 1]);
        r.host_call("kv_get", &[1], &HostGiven::Bytes(vec![0; MAX_BYTES]));
        r.host_call("clock_now", &[], &HostGiven::Code(7));
        r.end(end());
        // Too large even alone: not kept, its length is.
        r.begin(Entry::Command, &vec![3; MAX_BYTES + 1]);
        let (calls, dropped) = r.into_calls();
        assert_eq!(dropped, 1, "the first call made room for the second");
        assert_eq!(calls[0].input.len(), MAX_BYTES / 2 + 1);
        assert_eq!(
            calls[0].host_calls[0].given,
            HostGiven::Omitted {
                len: MAX_BYTES as u64
            }
        );
        assert_eq!(calls[0].host_calls[1].given, HostGiven::Code(7));
        assert!(!calls[0].complete());
        assert!(calls[1].input.is_empty());
        assert_eq!(calls[1].input_len, MAX_BYTES as u64 + 1);
    }

    #[test]
    fn the_player_answers_in_order_and_notes_a_divergence() {
        let mut r = Recorder::default();
        r.begin(Entry::Command, b"a");
        r.host_call("kv_get", &[3], &HostGiven::Code(-2));
        r.host_call("kv_put", &[3, 5], &HostGiven::Code(0));
        r.end(end());
        let (calls, _) = r.into_calls();

        let mut p = Tape::Replay(Player::new(calls.clone()));
        p.begin(Entry::Command, b"a");
        assert_eq!(
            p.replayed("kv_get", &[3]).unwrap(),
            Some(HostGiven::Code(-2))
        );
        assert_eq!(
            p.replayed("kv_put", &[3, 5]).unwrap(),
            Some(HostGiven::Code(0))
        );
        p.end(end());
        let Tape::Replay(player) = p else { panic!() };
        assert!(player.diverged().is_none());

        let mut p = Player::new(calls);
        p.begin();
        p.next("kv_get", &[3]).unwrap();
        let error = p.next("kv_put", &[3, 6]).unwrap_err();
        assert!(error.to_string().contains("kv_put[3, 5]"), "{error}");
        let d = p.diverged().unwrap();
        assert_eq!((d.call, d.host_call), (0, 1));
        assert_eq!(d.got, "kv_put[3, 6]");
    }

    #[test]
    fn a_call_that_ends_early_in_a_replay_has_diverged() {
        let mut r = Recorder::default();
        r.begin(Entry::Command, b"a");
        r.host_call("publish", &[3, 1], &HostGiven::Code(0));
        r.end(end());
        let mut p = Player::new(r.into_calls().0);
        p.begin();
        p.end();
        assert_eq!(p.diverged().unwrap().expected, "publish[3, 1]");
    }
}
