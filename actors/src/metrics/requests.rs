//! Requests by kind and outcome, with a latency histogram per kind: a table indexed by the
//! request's position in [`Request::NAMES`] (and the error code's in [`ErrorCode::ALL`]), so
//! recording an answer is three relaxed atomic additions and no lookup.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::histogram::Histogram;
use crate::protocol::{ErrorCode, Request};

/// The kind label of frames that could not be read as a request.
pub const UNDECODED: &str = "undecoded";

/// When a request of one kind was taken, to record its answer.
#[derive(Debug, Clone, Copy)]
pub struct Timer {
    kind: usize,
    started: Instant,
}

impl Timer {
    /// Starts timing `request`.
    pub fn start(request: &Request) -> Self {
        Self {
            kind: request.index(),
            started: Instant::now(),
        }
    }
}

#[derive(Debug)]
struct Kind {
    ok: AtomicU64,
    /// By position in [`ErrorCode::ALL`].
    errors: Box<[AtomicU64]>,
    latency: Histogram,
}

impl Kind {
    fn new() -> Self {
        Self {
            ok: AtomicU64::new(0),
            errors: ErrorCode::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            latency: Histogram::latency(),
        }
    }
}

/// Every request kind's counters (see the module docs).
#[derive(Debug)]
pub struct Requests {
    /// By position in [`Request::NAMES`], then one for frames that were not requests.
    kinds: Box<[Kind]>,
}

impl Default for Requests {
    fn default() -> Self {
        Self {
            kinds: (0..=Request::NAMES.len()).map(|_| Kind::new()).collect(),
        }
    }
}

impl Requests {
    /// Records the answer to the request `timer` was started for: `Ok` or its error code.
    pub fn finish(&self, timer: Timer, outcome: Result<(), ErrorCode>) {
        let kind = &self.kinds[timer.kind];
        match outcome {
            Ok(()) => kind.ok.fetch_add(1, Relaxed),
            Err(code) => kind.errors[code as usize].fetch_add(1, Relaxed),
        };
        kind.latency.observe_duration(timer.started.elapsed());
    }

    /// Records a frame that could not be read as a request, answered with `code`.
    pub fn undecoded(&self, code: ErrorCode) {
        self.kinds[Request::NAMES.len()].errors[code as usize].fetch_add(1, Relaxed);
    }

    fn name(index: usize) -> &'static str {
        Request::NAMES.get(index).copied().unwrap_or(UNDECODED)
    }

    pub(super) fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "astrid_requests",
            "Requests answered, by kind and outcome (ok, or the error code)",
            None,
            MetricType::Counter,
        )?;
        for (i, kind) in self.kinds.iter().enumerate() {
            let name = Self::name(i);
            let ok = kind.ok.load(Relaxed);
            if ok > 0 {
                let labels = [("kind", name), ("outcome", "ok")];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&ok, None)?;
            }
            for (code, count) in ErrorCode::ALL.iter().zip(kind.errors.iter()) {
                let count = count.load(Relaxed);
                if count > 0 {
                    let labels = [("kind", name), ("outcome", code.as_str())];
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "astrid_request_duration_seconds",
            "Time from reading a request to writing its answer, by kind",
            None,
            MetricType::Histogram,
        )?;
        for (i, kind) in self.kinds.iter().enumerate() {
            if kind.latency.count() > 0 {
                let labels = [("kind", Self::name(i))];
                prometheus_client::encoding::EncodeMetric::encode(
                    &kind.latency,
                    family.encode_family(&labels)?,
                )?;
            }
        }
        Ok(())
    }
}
