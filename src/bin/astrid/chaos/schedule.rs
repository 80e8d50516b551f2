//! The fault schedule: when each rule of a plan fires, derived from the rules, the seed and
//! the run's horizon alone (the same seed gives the same schedule). `at` and `every` use no
//! randomness; `probability` draws once per tick from a stream of its own (`SplitMix64` seeded
//! from the seed and the rule's index), so adding a rule leaves the others' draws as they
//! were.

use std::time::Duration;

use super::plan::{Rule, When};

/// Most faults one schedule may hold.
pub(crate) const MAX_SCHEDULED: usize = 10_000;

/// One planned injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Planned {
    /// Time after the run's start.
    pub(crate) at: Duration,
    /// Index of the rule in the plan.
    pub(crate) rule: usize,
}

/// Why no schedule could be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "fault[{rule}] schedules more than {MAX_SCHEDULED} faults in {}: give it `times`, or a longer \
     `every` or `tick`",
    humantime::format_duration(*horizon)
)]
pub(crate) struct TooMany {
    pub(crate) rule: usize,
    pub(crate) horizon: Duration,
}

/// `SplitMix64`: small, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    #[allow(
        clippy::cast_precision_loss,
        reason = "53 bits fit a f64's mantissa exactly"
    )]
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The schedule of `rules` over `[0, horizon)`, sorted by time (then by rule).
pub(crate) fn build(
    seed: u64,
    rules: &[Rule],
    horizon: Duration,
    tick: Duration,
) -> Result<Vec<Planned>, TooMany> {
    let mut all = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        let limit = rule
            .times
            .map_or(usize::MAX, |t| usize::try_from(t).unwrap_or(usize::MAX));
        let mut times = Vec::new();
        let mut push = |at: Duration| -> Result<bool, TooMany> {
            if times.len() >= limit {
                return Ok(false);
            }
            if times.len() >= MAX_SCHEDULED {
                return Err(TooMany {
                    rule: index,
                    horizon,
                });
            }
            times.push(at);
            Ok(true)
        };
        match &rule.when {
            When::At(list) => {
                let mut list: Vec<Duration> =
                    list.iter().copied().filter(|t| *t < horizon).collect();
                list.sort();
                for at in list {
                    if !push(at)? {
                        break;
                    }
                }
            }
            When::Every { every, start } => {
                let mut at = *start;
                while at < horizon && push(at)? {
                    at += *every;
                }
            }
            When::Probability { p, start } => {
                let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407));
                let mut at = *start;
                while at < horizon {
                    // One draw per tick, whether it fires or not.
                    if rng.next_f64() < *p && !push(at)? {
                        break;
                    }
                    at += tick;
                }
            }
        }
        if all.len() + times.len() > MAX_SCHEDULED {
            return Err(TooMany {
                rule: index,
                horizon,
            });
        }
        all.extend(times.into_iter().map(|at| Planned { at, rule: index }));
    }
    all.sort_by_key(|p| (p.at, p.rule));
    Ok(all)
}

#[cfg(test)]
mod tests {
    use astrid::protocol::Fault;

    use super::*;

    fn rule(when: When, times: Option<u32>) -> Rule {
        Rule {
            target: "capsule:echo".into(),
            fault: Fault::Trap,
            when,
            times,
            crash: true,
        }
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn at_and_every_are_placed_within_the_horizon_and_capped_by_times() {
        let rules = [
            rule(When::At(vec![MS(900), MS(100), MS(5000)]), None),
            rule(
                When::Every {
                    every: MS(400),
                    start: MS(400),
                },
                Some(2),
            ),
        ];
        let got = build(1, &rules, MS(1000), MS(100)).unwrap();
        let want = [(100, 0), (400, 1), (800, 1), (900, 0)];
        let got: Vec<(u64, usize)> = got
            .iter()
            .map(|p| (u64::try_from(p.at.as_millis()).unwrap(), p.rule))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let rules = [
            rule(
                When::Probability {
                    p: 0.2,
                    start: MS(100),
                },
                None,
            ),
            rule(
                When::Probability {
                    p: 0.5,
                    start: MS(0),
                },
                Some(5),
            ),
        ];
        let a = build(42, &rules, Duration::from_secs(20), MS(100)).unwrap();
        let b = build(42, &rules, Duration::from_secs(20), MS(100)).unwrap();
        let c = build(43, &rules, Duration::from_secs(20), MS(100)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // About one tick in five fires over 199 ticks; the second rule stops at 5.
        let first = a.iter().filter(|p| p.rule == 0).count();
        assert!((20..=60).contains(&first), "{first}");
        assert_eq!(a.iter().filter(|p| p.rule == 1).count(), 5);
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
        // A rule's draws do not depend on the other rules.
        let other = [rule(When::At(vec![MS(50)]), None), rules[1].clone()];
        let b = build(42, &other, Duration::from_secs(20), MS(100)).unwrap();
        let of = |s: &[Planned]| -> Vec<Duration> {
            s.iter().filter(|p| p.rule == 1).map(|p| p.at).collect()
        };
        assert_eq!(of(&a), of(&b));
    }

    #[test]
    fn certain_and_impossible_probabilities() {
        let always = [rule(
            When::Probability {
                p: 1.0,
                start: MS(100),
            },
            None,
        )];
        assert_eq!(build(9, &always, MS(1000), MS(100)).unwrap().len(), 9);
        let never = [rule(
            When::Probability {
                p: 0.0,
                start: MS(100),
            },
            None,
        )];
        assert!(build(9, &never, MS(1000), MS(100)).unwrap().is_empty());
    }

    #[test]
    fn too_many_faults_are_refused_naming_the_rule() {
        let rules = [
            rule(When::At(vec![MS(1)]), None),
            rule(
                When::Every {
                    every: MS(10),
                    start: MS(10),
                },
                None,
            ),
        ];
        let err = build(1, &rules, Duration::from_mins(10), MS(100)).unwrap_err();
        assert_eq!(err.rule, 1);
        let err = build(1, &rules[1..], Duration::from_mins(10), MS(100)).unwrap_err();
        assert_eq!(err.rule, 0);
        assert!(
            err.to_string()
                .contains("fault[0] schedules more than 10000")
        );
    }
}
