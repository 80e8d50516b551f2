//! The faults `InjectFault` can ask for, at every layer of the daemon (actors, a capsule's
//! host imports, the ledger's storage, an MCP server's replies, the bus), and their text form:
//! the grammar `astrid fault` and chaos plans accept, which [`Fault`]'s `Display` writes back.
//!
//! ```text
//! panic | stop | trap | clear | hang:<duration>
//! delay:<duration>[,for=<duration>]
//! import:<name>,fail=<code>|delay=<duration>[,times=<n>][,p=<probability>][,seed=<n>]
//! storage:journal_write|fsync|checkpoint[,times=<n>]
//! mcp:delay=<duration>|malformed|kill[,times=<n>]
//! overflow[,times=<n>]
//! ```
//!
//! Durations are humantime's (`250ms`, `2s`, `1m`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long a `delay` lasts when the text form does not say (`,for=`).
pub const DEFAULT_DELAY_FOR: Duration = Duration::from_secs(10);
/// The longest a `hang`, a `delay` (each message, and its whole span) or an injected slow
/// host call or reply may last.
pub const MAX_FAULT_DURATION: Duration = Duration::from_hours(1);
/// The most calls, writes or events a counted fault may affect.
pub const MAX_FAULT_TIMES: u32 = 1_000_000;
/// The longest import name a fault may carry.
pub const MAX_IMPORT_NAME: usize = 64;

/// A deliberate failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Panic inside a message handler.
    Panic,
    /// Stop the actor as if it had decided to quit.
    Stop,
    /// Stop processing messages for a while; callers meet their deadlines.
    Hang {
        /// How long.
        millis: u64,
    },
    /// Make a capsule's WebAssembly instance trap, as a guest bug would (capsules only).
    Trap,
    /// Hold every request to the actor (for a capsule: every call into its guest) for
    /// `millis` before it is delivered, for the next `for_millis`. Callers meet their
    /// deadlines; nothing restarts.
    Delay {
        /// The added latency of each request.
        millis: u64,
        /// How long the delay stays in force.
        for_millis: u64,
    },
    /// Make a capsule's host import fail or slow down (capsules only).
    Import(ImportFault),
    /// Make the ledger's storage fail (`store` and `audit`, which share the ledger).
    Storage {
        /// Which operation fails.
        op: StorageOp,
        /// How many times (default 1).
        #[serde(default = "one")]
        times: u32,
    },
    /// Disturb an MCP server's replies (`mcp:<server>` only).
    Mcp {
        /// What happens to a reply.
        effect: McpEffect,
        /// How many calls it affects (default 1).
        #[serde(default = "one")]
        times: u32,
    },
    /// Make a capsule's bus subscription queue overflow: the next `times` events for it are
    /// dropped as a full queue drops them, and counted (capsules only).
    Overflow {
        /// How many events (default 1).
        #[serde(default = "one")]
        times: u32,
    },
    /// Disarm every armed fault of the target (delays, import, storage, MCP and overflow
    /// faults); crashes and hangs already delivered are not undone.
    Clear,
}

fn one() -> u32 {
    1
}

/// A capsule host import made to fail or slow down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportFault {
    /// The import's name in module `astrid`, e.g. `kv_put`.
    pub import: String,
    /// What happens to a call.
    pub effect: ImportEffect,
    /// Affect at most this many calls, then disarm; none: until cleared.
    #[serde(default)]
    pub times: Option<u32>,
    /// Affect each call with this probability (0 < p ≤ 1); none: every call.
    #[serde(default)]
    pub probability: Option<f64>,
    /// Seeds the draws of `probability`, so that a run can be replayed.
    #[serde(default)]
    pub seed: u64,
}

/// What an import fault does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportEffect {
    /// The import returns this (negative) code without doing its work.
    Fail {
        /// The code, one of the ABI's negative codes.
        code: i32,
    },
    /// The import waits this long first (within the call's deadline), then works.
    Delay {
        /// How long.
        millis: u64,
    },
}

/// A storage operation of the ledger that a fault makes fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageOp {
    /// Writing a batch to the write-ahead journal.
    JournalWrite,
    /// Syncing the journal after a write.
    Fsync,
    /// A checkpoint of the journal into the database.
    Checkpoint,
}

impl StorageOp {
    /// The name in the text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JournalWrite => "journal_write",
            Self::Fsync => "fsync",
            Self::Checkpoint => "checkpoint",
        }
    }
}

/// What an MCP fault does to a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum McpEffect {
    /// The reply reaches the caller this much later.
    Delay {
        /// How long.
        millis: u64,
    },
    /// The reply is replaced by bytes that are not a JSON-RPC message.
    Malformed,
    /// The server's process is killed while the call is in flight.
    Kill,
}

impl Fault {
    /// Whether the fault ends the target's incarnation (so its supervisor restarts it).
    pub fn is_crash(&self) -> bool {
        matches!(self, Self::Panic | Self::Stop | Self::Trap)
    }

    /// Checks the bounds a daemon enforces (also checked when the text form is parsed).
    ///
    /// # Errors
    ///
    /// What is out of bounds, in words.
    pub fn validate(&self) -> Result<(), String> {
        let max = millis(MAX_FAULT_DURATION);
        let duration = |what: &str, ms: u64| {
            if ms > max {
                Err(format!("{what} may last at most {}", show_millis(max)))
            } else {
                Ok(())
            }
        };
        let count = |n: u32| {
            if n == 0 || n > MAX_FAULT_TIMES {
                Err(format!("times must be between 1 and {MAX_FAULT_TIMES}"))
            } else {
                Ok(())
            }
        };
        match self {
            Self::Panic | Self::Stop | Self::Trap | Self::Clear => Ok(()),
            Self::Hang { millis } => duration("a hang", *millis),
            Self::Delay { millis, for_millis } => {
                duration("a delay", *millis)?;
                duration("a delay's span", *for_millis)
            }
            Self::Import(f) => {
                if f.import.is_empty()
                    || f.import.len() > MAX_IMPORT_NAME
                    || !f
                        .import
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
                {
                    return Err(format!("`{}` is not an import name", f.import));
                }
                match f.effect {
                    ImportEffect::Fail { code } if code >= 0 => {
                        return Err(format!("an import fails with a negative code, not {code}"));
                    }
                    ImportEffect::Fail { .. } => {}
                    ImportEffect::Delay { millis } => duration("an import delay", millis)?,
                }
                if let Some(n) = f.times {
                    count(n)?;
                }
                match f.probability {
                    Some(p) if !(p > 0.0 && p <= 1.0) => {
                        Err(format!("a probability is in (0, 1], not {p}"))
                    }
                    _ => Ok(()),
                }
            }
            Self::Storage { times, .. } | Self::Overflow { times } => count(*times),
            Self::Mcp { effect, times } => {
                if let McpEffect::Delay { millis } = effect {
                    duration("a reply delay", *millis)?;
                }
                count(*times)
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn show_millis(ms: u64) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(ms))
}

/// `,times=N` when the count is not the default 1.
fn times_suffix(f: &mut fmt::Formatter<'_>, times: u32) -> fmt::Result {
    if times == 1 {
        Ok(())
    } else {
        write!(f, ",times={times}")
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panic => f.write_str("panic"),
            Self::Stop => f.write_str("stop"),
            Self::Trap => f.write_str("trap"),
            Self::Clear => f.write_str("clear"),
            Self::Hang { millis } => write!(f, "hang:{}", show_millis(*millis)),
            Self::Delay { millis, for_millis } => write!(
                f,
                "delay:{},for={}",
                show_millis(*millis),
                show_millis(*for_millis)
            ),
            Self::Import(i) => {
                write!(f, "import:{},", i.import)?;
                match i.effect {
                    ImportEffect::Fail { code } => write!(f, "fail={code}")?,
                    ImportEffect::Delay { millis } => write!(f, "delay={}", show_millis(millis))?,
                }
                if let Some(n) = i.times {
                    write!(f, ",times={n}")?;
                }
                if let Some(p) = i.probability {
                    write!(f, ",p={p}")?;
                }
                if i.seed != 0 {
                    write!(f, ",seed={}", i.seed)?;
                }
                Ok(())
            }
            Self::Storage { op, times } => {
                write!(f, "storage:{}", op.as_str())?;
                times_suffix(f, *times)
            }
            Self::Mcp { effect, times } => {
                match effect {
                    McpEffect::Delay { millis } => write!(f, "mcp:delay={}", show_millis(*millis))?,
                    McpEffect::Malformed => f.write_str("mcp:malformed")?,
                    McpEffect::Kill => f.write_str("mcp:kill")?,
                }
                times_suffix(f, *times)
            }
            Self::Overflow { times } => {
                f.write_str("overflow")?;
                times_suffix(f, *times)
            }
        }
    }
}

/// Why a fault's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad fault `{text}`: {why}")]
pub struct BadFault {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

/// The options after the first comma, `key=value` each.
struct Options<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Options<'a> {
    fn parse(rest: &[&'a str]) -> Result<Self, String> {
        rest.iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.trim(), v.trim()))
                    .ok_or_else(|| format!("`{kv}` is not key=value"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Takes `key`'s value, if given (once).
    fn take(&mut self, key: &str) -> Result<Option<&'a str>, String> {
        let mut found = None;
        let mut rest = Vec::with_capacity(self.0.len());
        for (k, v) in self.0.drain(..) {
            if k == key {
                if found.is_some() {
                    return Err(format!("`{key}` is given twice"));
                }
                found = Some(v);
            } else {
                rest.push((k, v));
            }
        }
        self.0 = rest;
        Ok(found)
    }

    /// Refuses whatever was not taken.
    fn done(self) -> Result<(), String> {
        match self.0.first() {
            None => Ok(()),
            Some((k, _)) => Err(format!("unknown option `{k}`")),
        }
    }

    fn times(&mut self) -> Result<Option<u32>, String> {
        self.take("times")?
            .map(|v| v.parse().map_err(|_| format!("times `{v}` is not a count")))
            .transpose()
    }
}

fn duration(text: &str) -> Result<u64, String> {
    humantime::parse_duration(text)
        .map(millis)
        .map_err(|e| format!("`{text}` is not a duration ({e})"))
}

fn parse(text: &str) -> Result<Fault, String> {
    let mut parts: Vec<&str> = text.trim().split(',').collect();
    let head = parts.remove(0);
    let mut opts = Options::parse(&parts)?;
    let (kind, arg) = match head.split_once(':') {
        Some((kind, arg)) => (kind, Some(arg)),
        None => (head, None),
    };
    let fault = match (kind, arg) {
        ("panic", None) => Fault::Panic,
        ("stop", None) => Fault::Stop,
        ("trap", None) => Fault::Trap,
        ("clear", None) => Fault::Clear,
        ("hang", Some(d)) => Fault::Hang {
            millis: duration(d)?,
        },
        ("delay", Some(d)) => Fault::Delay {
            millis: duration(d)?,
            for_millis: opts
                .take("for")?
                .map_or(Ok(millis(DEFAULT_DELAY_FOR)), duration)?,
        },
        ("import", Some(name)) => {
            let effect = match (opts.take("fail")?, opts.take("delay")?) {
                (Some(code), None) => ImportEffect::Fail {
                    code: code
                        .parse()
                        .map_err(|_| format!("fail `{code}` is not an error code"))?,
                },
                (None, Some(d)) => ImportEffect::Delay {
                    millis: duration(d)?,
                },
                _ => return Err("an import fault takes one of fail=CODE or delay=DURATION".into()),
            };
            let probability = opts
                .take("p")?
                .map(|p| {
                    p.parse()
                        .map_err(|_| format!("p `{p}` is not a probability"))
                })
                .transpose()?;
            let seed = opts
                .take("seed")?
                .map(|s| s.parse().map_err(|_| format!("seed `{s}` is not a number")))
                .transpose()?
                .unwrap_or(0);
            Fault::Import(ImportFault {
                import: name.to_owned(),
                effect,
                times: opts.times()?,
                probability,
                seed,
            })
        }
        ("storage", Some(op)) => Fault::Storage {
            op: match op {
                "journal_write" => StorageOp::JournalWrite,
                "fsync" => StorageOp::Fsync,
                "checkpoint" => StorageOp::Checkpoint,
                _ => {
                    return Err(format!(
                        "storage faults are journal_write, fsync or checkpoint, not `{op}`"
                    ));
                }
            },
            times: opts.times()?.unwrap_or(1),
        },
        ("mcp", Some(effect)) => Fault::Mcp {
            effect: match effect.split_once('=') {
                Some(("delay", d)) => McpEffect::Delay {
                    millis: duration(d)?,
                },
                None if effect == "malformed" => McpEffect::Malformed,
                None if effect == "kill" => McpEffect::Kill,
                _ => {
                    return Err(format!(
                        "MCP faults are delay=DURATION, malformed or kill, not `{effect}`"
                    ));
                }
            },
            times: opts.times()?.unwrap_or(1),
        },
        ("overflow", None) => Fault::Overflow {
            times: opts.times()?.unwrap_or(1),
        },
        ("hang" | "delay" | "import" | "storage" | "mcp", None) => {
            return Err(format!("`{kind}` needs an argument after `:`"));
        }
        ("panic" | "stop" | "trap" | "clear" | "overflow", Some(_)) => {
            return Err(format!("`{kind}` takes no argument after `:`"));
        }
        _ => {
            return Err(format!(
                "unknown fault `{kind}` (panic, stop, trap, hang, delay, import, storage, mcp, \
                 overflow, clear)"
            ));
        }
    };
    opts.done()?;
    fault.validate()?;
    Ok(fault)
}

impl FromStr for Fault {
    type Err = BadFault;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text).map_err(|why| BadFault {
            text: text.to_owned(),
            why,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_and_writes_back_the_same() {
        for text in [
            "panic",
            "stop",
            "trap",
            "clear",
            "hang:2s",
            "delay:200ms,for=30s",
            "import:kv_put,fail=-5",
            "import:vfs_read,delay=100ms,times=3,p=0.5,seed=7",
            "storage:fsync",
            "storage:journal_write,times=4",
            "storage:checkpoint",
            "mcp:delay=2s",
            "mcp:malformed,times=2",
            "mcp:kill",
            "overflow,times=10",
        ] {
            let fault: Fault = text.parse().unwrap();
            assert_eq!(fault.to_string(), text);
            assert_eq!(fault.to_string().parse::<Fault>().unwrap(), fault);
        }
    }

    #[test]
    fn defaults_fill_what_the_text_leaves_out() {
        assert_eq!(
            "delay:1s".parse::<Fault>().unwrap(),
            Fault::Delay {
                millis: 1000,
                for_millis: 10_000
            }
        );
        assert_eq!(
            "storage:fsync".parse::<Fault>().unwrap(),
            Fault::Storage {
                op: StorageOp::Fsync,
                times: 1
            }
        );
    }

    #[test]
    fn bad_text_says_what_is_wrong() {
        let why = |text: &str| text.parse::<Fault>().unwrap_err().why;
        assert!(why("explode").contains("unknown fault `explode`"));
        assert!(why("hang").contains("needs an argument"));
        assert!(why("hang:soon").contains("not a duration"));
        assert!(why("trap:now").contains("takes no argument"));
        assert!(why("import:kv_put").contains("one of fail=CODE or delay=DURATION"));
        assert!(why("import:kv_put,fail=-1,delay=1s").contains("one of"));
        assert!(why("import:kv_put,fail=3").contains("negative code"));
        assert!(why("import:kv_put,fail=-1,p=2").contains("(0, 1]"));
        assert!(why("import:KV,fail=-1").contains("not an import name"));
        assert!(why("import:kv_put,fail=-1,colour=red").contains("unknown option `colour`"));
        assert!(why("storage:disk").contains("journal_write, fsync or checkpoint"));
        assert!(why("storage:fsync,times=0").contains("times must be"));
        assert!(why("mcp:explode").contains("delay=DURATION, malformed or kill"));
        assert!(why("delay:2h").contains("at most 1h"));
        assert!(why("overflow,times").contains("not key=value"));
        assert!(why("overflow,times=1,times=2").contains("given twice"));
    }

    #[test]
    fn serde_form_fills_defaults() {
        let fault: Fault = rmp_serde::from_slice(
            &rmp_serde::to_vec_named(&serde_json::json!({"storage": {"op": "fsync"}})).unwrap(),
        )
        .unwrap();
        assert_eq!(
            fault,
            Fault::Storage {
                op: StorageOp::Fsync,
                times: 1
            }
        );
        assert!(Fault::Trap.is_crash() && !Fault::Hang { millis: 1 }.is_crash());
    }
}
