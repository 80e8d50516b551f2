//! One line of the daemon's log as `tracing-subscriber` writes it, and which lines
//! `astrid logs` keeps: `2026-12-07T11:35:56.123456Z  WARN astrid_actors::supervisor::exits:
//! restarting supervisor=capsules child=capsule:echo ...`. A line that does not start with a
//! timestamp and a level (the rest of a message that spans lines, or the log's own notes about
//! dropped lines) belongs to the record above it and is kept or left with it.

use std::time::SystemTime;

/// A log level, from the least to the most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "TRACE" => Self::Trace,
            "DEBUG" => Self::Debug,
            "INFO" => Self::Info,
            "WARN" => Self::Warn,
            "ERROR" => Self::Error,
            _ => return None,
        })
    }
}

/// The start of a record: its time, level, and the rest of its first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head<'a> {
    pub(crate) time: SystemTime,
    pub(crate) level: Level,
    pub(crate) rest: &'a str,
}

/// The time and level of `line`, if it starts a record.
pub(crate) fn head(line: &str) -> Option<Head<'_>> {
    let line = line.trim_start();
    let (stamp, rest) = line.split_once(' ')?;
    let time = humantime::parse_rfc3339(stamp).ok()?;
    let rest = rest.trim_start();
    let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let level = Level::parse(word)?;
    Some(Head { time, level, rest })
}

/// The kernel services (as `astrid ps` names them) and the modules of `astrid-actors` whose
/// lines are theirs.
const SERVICES: &[(&str, &[&str])] = &[
    ("kernel", &["kernel", "supervisor"]),
    ("bus", &["bus"]),
    ("audit", &["audit", "ledger"]),
    ("store", &["store", "ledger"]),
    ("capabilities", &["caps"]),
    ("vfs", &["vfs"]),
    ("approvals", &["approvals"]),
    ("capsules", &["capsules"]),
    ("registry", &["capsules"]),
    ("mcp", &["mcp"]),
    ("listener", &["listener", "session"]),
];

/// Which lines are about one actor, named as `astrid ps` names it (`capsule:echo`,
/// `mcp:files`, `bus`) or by its bare name (`echo`, `files`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Actor {
    /// `field=value` pairs that name it.
    fields: Vec<(&'static str, String)>,
    /// Modules whose lines are its own (a kernel service).
    modules: &'static [&'static str],
}

impl Actor {
    pub(crate) fn new(name: &str) -> Self {
        let mut fields = vec![("child", name.to_owned()), ("supervisor", name.to_owned())];
        if let Some(capsule) = name.strip_prefix("capsule:") {
            fields.push(("capsule", capsule.to_owned()));
        } else if let Some(server) = name.strip_prefix("mcp:") {
            fields.push(("server", server.to_owned()));
        } else {
            fields.extend([
                ("capsule", name.to_owned()),
                ("server", name.to_owned()),
                ("child", format!("capsule:{name}")),
                ("child", format!("mcp:{name}")),
            ]);
        }
        let modules = SERVICES
            .iter()
            .find(|(service, _)| *service == name)
            .map_or(&[][..], |(_, modules)| *modules);
        Self { fields, modules }
    }

    /// Whether the record whose first line's text after the level is `rest` is about it:
    /// one of its fields names the actor (the capsule's, the MCP server's, or the
    /// supervisor's `child`), or it comes from the actor's own module.
    pub(crate) fn matches(&self, rest: &str) -> bool {
        let mut words = rest.split_whitespace();
        // Spans and the target come first, each ending with `:`.
        for word in words.by_ref() {
            let Some(target) = word.strip_suffix(':') else {
                if self.names(word) {
                    return true;
                }
                break;
            };
            let module = target
                .strip_prefix("astrid_actors::")
                .map(|m| m.split("::").next().unwrap_or(m));
            if module.is_some_and(|m| self.modules.contains(&m)) {
                return true;
            }
        }
        words.any(|word| self.names(word))
    }

    fn names(&self, word: &str) -> bool {
        let Some((key, value)) = word.split_once('=') else {
            return false;
        };
        let value = value.trim_matches('"');
        self.fields.iter().any(|(k, v)| *k == key && v == value)
    }
}

/// What `astrid logs` keeps.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    /// This level and worse.
    pub(crate) level: Option<Level>,
    /// Records at or after this time.
    pub(crate) since: Option<SystemTime>,
    /// Records about this actor.
    pub(crate) actor: Option<Actor>,
}

impl Filter {
    fn keeps(&self, head: &Head<'_>) -> bool {
        self.level.is_none_or(|l| head.level >= l)
            && self.since.is_none_or(|t| head.time >= t)
            && self.actor.as_ref().is_none_or(|a| a.matches(head.rest))
    }
}

/// Decides line by line, remembering whether the current record is kept.
#[derive(Debug, Clone)]
pub(crate) struct Sieve {
    filter: Filter,
    /// Whether the record the next continuation line belongs to is kept. Lines before the
    /// first record are kept when nothing filters.
    keeping: bool,
}

impl Sieve {
    pub(crate) fn new(filter: Filter) -> Self {
        let keeping = filter.level.is_none() && filter.since.is_none() && filter.actor.is_none();
        Self { filter, keeping }
    }

    /// Whether `line` is kept.
    pub(crate) fn keep(&mut self, line: &str) -> bool {
        if let Some(head) = head(line) {
            self.keeping = self.filter.keeps(&head);
        }
        self.keeping
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESTART: &str = "2026-12-07T11:35:56.123456Z  WARN astrid_actors::supervisor::exits: restarting supervisor=capsules child=capsule:echo reason=panicked delay=0ns restarts=1";
    const LOADED: &str =
        "2026-12-07T11:35:57.000001Z  INFO astrid_actors::capsules: capsule loaded capsule=echo";
    const SERVER: &str = "2026-12-07T11:35:58Z  INFO astrid_actors::mcp::actor: MCP server ready server=\"files\" tools=2";
    const BUS: &str =
        "2026-12-07T11:35:59.5Z ERROR astrid_actors::bus::queue: subscriber queue full";

    #[test]
    fn heads_give_time_and_level() {
        let h = head(RESTART).unwrap();
        assert_eq!(h.level, Level::Warn);
        assert_eq!(
            h.time,
            humantime::parse_rfc3339("2026-12-07T11:35:56.123456Z").unwrap()
        );
        assert!(h.rest.starts_with("astrid_actors::supervisor::exits:"));
        assert_eq!(head(BUS).unwrap().level, Level::Error);
        assert!(head("  continued message").is_none());
        assert!(head("(astrid-daemon: the log reached its 100 bytes)").is_none());
        assert!(head("2026-12-07T11:35:56Z LOUD x").is_none());
    }

    #[test]
    fn actors_are_found_by_their_fields_or_their_module() {
        let rest = |line| head(line).unwrap().rest;
        let echo = Actor::new("echo");
        assert!(echo.matches(rest(RESTART)));
        assert!(echo.matches(rest(LOADED)));
        assert!(!echo.matches(rest(SERVER)));
        let capsule = Actor::new("capsule:echo");
        assert!(capsule.matches(rest(RESTART)) && capsule.matches(rest(LOADED)));
        let files = Actor::new("mcp:files");
        assert!(files.matches(rest(SERVER)) && !files.matches(rest(LOADED)));
        assert!(Actor::new("files").matches(rest(SERVER)));
        let bus = Actor::new("bus");
        assert!(bus.matches(rest(BUS)) && !bus.matches(rest(LOADED)));
        // The capsules supervisor's own lines, and those of the registry's module.
        let capsules = Actor::new("capsules");
        assert!(capsules.matches(rest(RESTART)) && capsules.matches(rest(LOADED)));
        assert!(!Actor::new("ech").matches(rest(LOADED)));
    }

    #[test]
    fn continuation_lines_follow_their_record() {
        let since = humantime::parse_rfc3339("2026-12-07T11:35:57Z").unwrap();
        let mut sieve = Sieve::new(Filter {
            level: Some(Level::Info),
            since: Some(since),
            actor: None,
        });
        let kept: Vec<bool> = [RESTART, "  more of it", LOADED, "  more of that", BUS]
            .iter()
            .map(|l| sieve.keep(l))
            .collect();
        assert_eq!(kept, [false, false, true, true, true]);
        let mut warn = Sieve::new(Filter {
            level: Some(Level::Warn),
            ..Filter::default()
        });
        assert!(!warn.keep("before any record"));
        assert!(warn.keep(RESTART) && !warn.keep(LOADED) && warn.keep(BUS));
        let mut all = Sieve::new(Filter::default());
        assert!(all.keep("before any record"));
    }
}
