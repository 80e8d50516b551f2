//! Topic names and patterns, as pure functions: validation and matching.
//!
//! A topic is dot-separated segments of `[A-Za-z0-9_:-]`, e.g. `user.prompt`. A pattern may
//! use `*` for exactly one segment and, as its last segment, `>` for one or more.

use std::fmt;

/// Longest topic or pattern, in bytes.
pub const MAX_LEN: usize = 255;
/// Most segments in a topic or pattern.
pub const MAX_SEGMENTS: usize = 32;

/// Why a topic or pattern is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRule {
    /// Empty string.
    Empty,
    /// Longer than [`MAX_LEN`].
    TooLong,
    /// More than [`MAX_SEGMENTS`] segments.
    TooManySegments,
    /// Two dots in a row, or a leading or trailing dot.
    EmptySegment,
    /// A character outside `[A-Za-z0-9_:-]`.
    BadCharacter,
    /// `*` or `>` in a concrete topic.
    WildcardInTopic,
    /// `*` or `>` mixed with other characters in one segment.
    PartialWildcard,
    /// `>` anywhere but the last segment.
    RestNotLast,
}

impl fmt::Display for TopicRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "it is empty",
            Self::TooLong => "it is longer than 255 bytes",
            Self::TooManySegments => "it has more than 32 segments",
            Self::EmptySegment => "it has an empty segment",
            Self::BadCharacter => "segments may only hold letters, digits, '_', '-' and ':'",
            Self::WildcardInTopic => "a topic cannot contain wildcards",
            Self::PartialWildcard => "'*' and '>' must be whole segments",
            Self::RestNotLast => "'>' may only be the last segment",
        })
    }
}

fn check_shape(s: &str) -> Result<(), TopicRule> {
    if s.is_empty() {
        return Err(TopicRule::Empty);
    }
    if s.len() > MAX_LEN {
        return Err(TopicRule::TooLong);
    }
    if s.split('.').count() > MAX_SEGMENTS {
        return Err(TopicRule::TooManySegments);
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':')
}

fn check_name(segment: &str) -> Result<(), TopicRule> {
    if segment.is_empty() {
        Err(TopicRule::EmptySegment)
    } else if segment.contains(['*', '>']) {
        Err(TopicRule::PartialWildcard)
    } else if !segment.chars().all(is_name_char) {
        Err(TopicRule::BadCharacter)
    } else {
        Ok(())
    }
}

/// Checks a concrete topic.
///
/// # Errors
///
/// The first rule the topic breaks.
pub fn validate_topic(topic: &str) -> Result<(), TopicRule> {
    check_shape(topic)?;
    for segment in topic.split('.') {
        if segment == "*" || segment == ">" {
            return Err(TopicRule::WildcardInTopic);
        }
        check_name(segment)?;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Name(String),
    One,
    Rest,
}

/// A parsed subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

impl Pattern {
    /// Parses and validates a pattern.
    ///
    /// # Errors
    ///
    /// The first rule the pattern breaks.
    pub fn parse(text: &str) -> Result<Self, TopicRule> {
        check_shape(text)?;
        let parts: Vec<&str> = text.split('.').collect();
        let last = parts.len() - 1;
        let segments = parts
            .iter()
            .enumerate()
            .map(|(i, part)| match *part {
                "*" => Ok(Segment::One),
                ">" if i == last => Ok(Segment::Rest),
                ">" => Err(TopicRule::RestNotLast),
                name => check_name(name).map(|()| Segment::Name(name.to_owned())),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `topic` (assumed valid) matches.
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('.');
        for segment in &self.segments {
            match segment {
                Segment::Rest => return parts.next().is_some(),
                Segment::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Name(name) => {
                    if parts.next() != Some(name.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

impl Pattern {
    /// Whether every topic `other` matches is also matched by `self` (a grant for
    /// `user.>` covers a subscription to `user.*.x`, not the other way round).
    pub fn covers(&self, other: &Pattern) -> bool {
        let mut theirs = other.segments.iter();
        for ours in &self.segments {
            match ours {
                Segment::Rest => return theirs.next().is_some(),
                Segment::One => match theirs.next() {
                    Some(Segment::Name(_) | Segment::One) => {}
                    _ => return false,
                },
                Segment::Name(name) => match theirs.next() {
                    Some(Segment::Name(n)) if n == name => {}
                    _ => return false,
                },
            }
        }
        theirs.next().is_none()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, topic: &str) -> bool {
        Pattern::parse(pattern).unwrap().matches(topic)
    }

    #[test]
    fn literal_patterns_match_exactly() {
        assert!(m("user.prompt", "user.prompt"));
        assert!(!m("user.prompt", "user.prompt.x"));
        assert!(!m("user.prompt", "user"));
    }

    #[test]
    fn star_matches_exactly_one_segment() {
        assert!(m("user.*", "user.prompt"));
        assert!(!m("user.*", "user"));
        assert!(!m("user.*", "user.a.b"));
        assert!(m("*.prompt", "user.prompt"));
        assert!(m("a.*.c", "a.b.c"));
    }

    #[test]
    fn rest_matches_one_or_more_segments() {
        assert!(m("user.>", "user.prompt"));
        assert!(m("user.>", "user.a.b.c"));
        assert!(!m("user.>", "user"));
        assert!(m(">", "anything.at.all"));
        assert!(m("*.>", "a.b"));
        assert!(!m("*.>", "a"));
    }

    #[test]
    fn invalid_patterns_are_refused_with_a_reason() {
        assert_eq!(Pattern::parse("").unwrap_err(), TopicRule::Empty);
        assert_eq!(Pattern::parse("a..b").unwrap_err(), TopicRule::EmptySegment);
        assert_eq!(Pattern::parse(">.a").unwrap_err(), TopicRule::RestNotLast);
        assert_eq!(
            Pattern::parse("a*").unwrap_err(),
            TopicRule::PartialWildcard
        );
        assert_eq!(Pattern::parse("a b").unwrap_err(), TopicRule::BadCharacter);
        assert_eq!(
            Pattern::parse(&"a.".repeat(40)).unwrap_err(),
            TopicRule::TooManySegments
        );
        assert_eq!(
            Pattern::parse(&"a".repeat(256)).unwrap_err(),
            TopicRule::TooLong
        );
    }

    #[test]
    fn covering_follows_what_each_pattern_matches() {
        let c = |a: &str, b: &str| {
            Pattern::parse(a)
                .unwrap()
                .covers(&Pattern::parse(b).unwrap())
        };
        assert!(c("user.>", "user.prompt"));
        assert!(c("user.>", "user.*"));
        assert!(c("user.>", "user.a.>"));
        assert!(c(">", "anything.>"));
        assert!(c("user.*", "user.prompt"));
        assert!(c("user.*", "user.*"));
        assert!(!c("user.*", "user.>"));
        assert!(!c("user.prompt", "user.*"));
        assert!(!c("user.>", "user"));
        assert!(!c("user.>", "admin.x"));
        assert!(c("a.b", "a.b"));
        assert!(!c("a.b", "a.b.c"));
    }

    #[test]
    fn topics_cannot_hold_wildcards() {
        assert!(validate_topic("user.prompt").is_ok());
        assert!(validate_topic("astrid.client:7-x_y").is_ok());
        assert_eq!(
            validate_topic("user.*").unwrap_err(),
            TopicRule::WildcardInTopic
        );
        assert_eq!(
            validate_topic("user.").unwrap_err(),
            TopicRule::EmptySegment
        );
        assert_eq!(validate_topic("ü").unwrap_err(), TopicRule::BadCharacter);
    }
}
