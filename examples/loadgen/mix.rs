//! The requests of `--suite soak` and `--suite status-growth`: the kinds ([`Op`]), their
//! fixed weights, and the deterministic generator that picks them.

use astrid_protocol::{ErrorCode, RawValue, Request};

/// Keys the KV requests use (`soak/0` .. `soak/999`).
pub(crate) const KEYS: u64 = 1_000;
/// Workspace files `VfsWrite` rewrites (`soak/0.txt` .. `soak/99.txt`).
pub(crate) const PATHS: u64 = 100;
/// Topics `Publish` uses (`user.soak.t0` .. `user.soak.t3`).
pub(crate) const TOPICS: u64 = 4;

/// One kind of request of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Op {
    /// `GetStatus`.
    Status,
    /// `Publish` of a small map to one of [`TOPICS`] topics.
    Publish,
    /// `KvPut` of a 64-byte value under one of [`KEYS`] keys (durable).
    KvPut,
    /// `KvGet` of one of [`KEYS`] keys (present or not).
    KvGet,
    /// `KvDelete` of one of [`KEYS`] keys (present or not; durable).
    KvDelete,
    /// `InvokeCommand` of the example `echo` capsule.
    Echo,
    /// `VfsWrite` of 256 bytes to one of [`PATHS`] workspace files (atomic, durable).
    VfsWrite,
    /// `InvokeCommand` of the fault capsule `trap`: every call crashes it.
    Crash,
}

impl Op {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Status => "`GetStatus`",
            Self::Publish => "`Publish` (subscribed)",
            Self::KvPut => "`KvPut`",
            Self::KvGet => "`KvGet`",
            Self::KvDelete => "`KvDelete`",
            Self::Echo => "`InvokeCommand` echo",
            Self::VfsWrite => "`VfsWrite`",
            Self::Crash => "`InvokeCommand` trap (crash)",
        }
    }

    pub(crate) fn request(self, rng: &mut Rng) -> Request {
        match self {
            Self::Status => Request::GetStatus,
            Self::Publish => Request::Publish {
                topic: format!("user.soak.t{}", rng.below(TOPICS)),
                payload: RawValue::from_value(&rmpv::Value::Map(vec![(
                    "n".into(),
                    rng.below(1 << 20).into(),
                )]))
                .unwrap_or_default(),
            },
            Self::KvPut => Request::KvPut {
                key: format!("soak/{}", rng.below(KEYS)),
                value: vec![b'v'; 64],
            },
            Self::KvGet => Request::KvGet {
                key: format!("soak/{}", rng.below(KEYS)),
            },
            Self::KvDelete => Request::KvDelete {
                key: format!("soak/{}", rng.below(KEYS)),
            },
            Self::Echo => Request::InvokeCommand {
                name: "echo".into(),
                args: vec!["soak".into()],
            },
            Self::VfsWrite => Request::VfsWrite {
                path: format!("soak/{}.txt", rng.below(PATHS)),
                data: vec![b'w'; 256],
                create_dirs: true,
            },
            Self::Crash => Request::InvokeCommand {
                name: "trap".into(),
                args: Vec::new(),
            },
        }
    }

    /// Whether `code` is an answer this request may get: a crash, or the capsule still
    /// restarting, for `trap`; nothing for the others.
    pub(crate) fn expects(self, code: ErrorCode) -> bool {
        self == Self::Crash && matches!(code, ErrorCode::CapsuleCrashed | ErrorCode::Unavailable)
    }
}

/// The soak mix: weights out of 10,000. `VfsWrite` is rarer than the rest: each is an
/// atomic write with two fsyncs (the file, its directory), served one at a time by the VFS
/// actor (2 to 3 ms each on the project's VM), so at 5% it would cap the whole mix at about
/// 8,000 requests a second.
pub(crate) const SOAK_MIX: &[(Op, u32)] = &[
    (Op::Status, 2_000),
    (Op::Publish, 2_000),
    (Op::KvPut, 1_500),
    (Op::KvGet, 2_000),
    (Op::KvDelete, 500),
    (Op::Echo, 1_898),
    (Op::VfsWrite, 100),
    (Op::Crash, 2),
];

/// `status-growth`: `GetStatus` only.
pub(crate) const STATUS_MIX: &[(Op, u32)] = &[(Op::Status, 1)];

/// A small deterministic generator (xorshift64*), seeded per client: the same mix on every
/// run, with no dependency.
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so that neighbouring seeds start far apart (never 0).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(crate) fn pick(&mut self, mix: &[(Op, u32)]) -> Op {
        let total: u32 = mix.iter().map(|(_, w)| w).sum();
        let mut r = u32::try_from(self.below(u64::from(total))).unwrap();
        for &(op, weight) in mix {
            if r < weight {
                return op;
            }
            r -= weight;
        }
        mix[mix.len() - 1].0
    }
}
