//! The audit hash chain as data, next to the ledger that stores it: a record to append, the
//! entry it is sealed into, how an entry's hash is computed, and how a sequence of stored
//! entries is verified. Pure functions, tested without a database; the ledger seals records
//! as it stages them (`seal_record`), and the audit actor (which
//! re-exports this module as `audit::chain`) verifies what is stored.
//!
//! Each entry's hash is BLAKE3 over its MessagePack encoding (fields by name, without the
//! hash itself), and that encoding includes the previous entry's hash, so changing, removing
//! or reordering any entry breaks every link after it.

use std::borrow::Cow;

pub use astrid_protocol::payload::audit::{Entry, PrunedRange, Verification};
use serde::Serialize;

/// The action of an anchor: the entry retention leaves in place of the entries it removes
/// (see `ledger::retention`). Its actor is `kernel`, its target the range removed
/// (`1..=k`), and its sequence number, `prev_hash` and hash are those of entry `k`, the last
/// removed, so that entry `k + 1` still links to it.
pub const PRUNED: &str = "pruned";

/// The range an anchor stands for, if `entry` is one.
pub fn anchor_range(entry: &Entry) -> Option<PrunedRange> {
    if entry.actor != "kernel" || entry.action != PRUNED {
        return None;
    }
    let (first, last) = entry.target.split_once("..=")?;
    let range = PrunedRange {
        first: first.parse().ok()?,
        last: last.parse().ok()?,
    };
    (range.first <= range.last && range.last == entry.seq).then_some(range)
}

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What to append to the audit log: the fields of an entry that say what happened (its
/// sequence number, time, session and links are filled in when it is sealed). It is also the
/// message that asks the audit actor to append one (`audit::Record`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Who acted.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// To what.
    pub target: String,
    /// `ok` or the error.
    pub outcome: String,
}

impl Record {
    /// A record from string-like parts.
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        outcome: impl Into<String>,
    ) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            outcome: outcome.into(),
        }
    }
}

/// Entry number `seq` for `record`, linked to `prev_hash`: encoded as stored, and its hash.
/// Fields longer than [`MAX_FIELD`] are clipped.
pub(crate) fn seal_record(
    seq: u64,
    time_ms: u64,
    session: &str,
    record: &Record,
    prev_hash: &str,
) -> (Vec<u8>, String) {
    let (actor, action, target, outcome) = (
        clip(&record.actor),
        clip(&record.action),
        clip(&record.target),
        clip(&record.outcome),
    );
    Body {
        seq,
        time_ms,
        session,
        actor: &actor,
        action: &action,
        target: &target,
        outcome: &outcome,
        prev_hash,
    }
    .seal()
}

/// Longest field kept in an entry: enough for any valid key or path; entries describe
/// requests, they do not copy their data.
const MAX_FIELD: usize = 4096;

/// `text`, or its first [`MAX_FIELD`] bytes (on a character boundary) and its length.
fn clip(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_FIELD {
        return Cow::Borrowed(text);
    }
    let mut cut = MAX_FIELD;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes)", &text[..cut], text.len()))
}

/// Everything but the hash, in the order and shape that is hashed.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    time_ms: u64,
    session: &'a str,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    outcome: &'a str,
    prev_hash: &'a str,
}

impl Body<'_> {
    /// The sealed entry, encoded as stored (exactly `rmp_serde::to_vec_named` of the
    /// [`Entry`] with its hash), and its hash; one encoding pass, no intermediate strings.
    fn seal(&self) -> (Vec<u8>, String) {
        let mut bytes = Vec::with_capacity(256 + self.actor.len() + self.target.len());
        // Serializing plain strings and integers into a vector cannot fail.
        let _ = rmp_serde::encode::write_named(&mut bytes, self);
        let hash = blake3::hash(&bytes).to_hex().to_string();
        // The body is a map of 8 fields (fixmap 0x88); the entry is the same map with a
        // ninth field, `hash`, last.
        if let Some(first) = bytes.first_mut() {
            *first = 0x89;
        }
        let _ = rmp_serde::encode::write(&mut bytes, "hash");
        let _ = rmp_serde::encode::write(&mut bytes, hash.as_str());
        (bytes, hash)
    }
}

/// The hash an entry should carry, given its other fields.
pub fn hash_of(entry: &Entry) -> String {
    let body = Body {
        seq: entry.seq,
        time_ms: entry.time_ms,
        session: &entry.session,
        actor: &entry.actor,
        action: &entry.action,
        target: &entry.target,
        outcome: &entry.outcome,
        prev_hash: &entry.prev_hash,
    };
    // Serializing plain strings and integers cannot fail.
    let bytes = rmp_serde::to_vec_named(&body).unwrap_or_default();
    blake3::hash(&bytes).to_hex().to_string()
}

/// Sets `entry.hash` from its content.
pub fn seal(mut entry: Entry) -> Entry {
    entry.hash = hash_of(&entry);
    entry
}

/// Checks stored entries, in key order: `(key, Ok(entry))`, or `(key, Err(why))` for an
/// entry that could not be decoded. The first may be an anchor standing for entries `1..=k`
/// that retention removed: the chain is then checked from it (its hash is that of entry
/// `k`, which nothing stored can recompute), and the result says so.
pub fn verify<I>(stored: I) -> Verification
where
    I: IntoIterator<Item = (u64, Result<Entry, String>)>,
{
    let mut prev = GENESIS.to_owned();
    let mut expected_seq = 1;
    let mut entries = 0;
    let mut pruned = None;
    for (key, entry) in stored {
        entries += 1;
        if entries == 1 {
            let anchor = entry.as_ref().ok().and_then(|e| {
                anchor_range(e).filter(|range| range.first == 1 && range.last == key)
            });
            if let (Some(range), Ok(e)) = (anchor, &entry) {
                prev.clone_from(&e.hash);
                expected_seq = key + 1;
                pruned = Some(range);
                continue;
            }
        }
        let failure = match &entry {
            Err(why) => Some(format!("entry {key} cannot be read: {why}")),
            Ok(_) if key != expected_seq => Some(format!(
                "entry {expected_seq} is missing (found {key} next)"
            )),
            Ok(e) if e.seq != key => Some(format!("entry {key} claims to be entry {}", e.seq)),
            Ok(e) if e.prev_hash != prev => {
                Some(format!("entry {key} does not link to entry {}", key - 1))
            }
            Ok(e) if hash_of(e) != e.hash => Some(format!(
                "entry {key} does not match its hash: it was altered"
            )),
            Ok(_) => None,
        };
        if let Some(reason) = failure {
            return Verification {
                ok: false,
                entries,
                first_bad: Some(expected_seq.min(key)),
                reason: Some(reason),
                head: prev,
                pruned,
            };
        }
        if let Ok(e) = entry {
            prev = e.hash;
        }
        expected_seq = key + 1;
    }
    Verification {
        ok: true,
        entries,
        first_bad: None,
        reason: None,
        head: prev,
        pruned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<Entry> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let e = seal(Entry {
                    seq,
                    time_ms: 1000 + seq,
                    session: "system".into(),
                    actor: "kernel".into(),
                    action: "test".into(),
                    target: format!("t{seq}"),
                    outcome: "ok".into(),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                });
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    fn stored(entries: &[Entry]) -> Vec<(u64, Result<Entry, String>)> {
        entries.iter().map(|e| (e.seq, Ok(e.clone()))).collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let entries = chain(5);
        let v = verify(stored(&entries));
        assert!(v.ok);
        assert_eq!(v.entries, 5);
        assert_eq!(v.head, entries[4].hash);
        assert!(verify(Vec::new()).ok);
    }

    #[test]
    fn an_altered_field_is_found() {
        let mut entries = chain(5);
        entries[2].outcome = "denied".into();
        let v = verify(stored(&entries));
        assert!(!v.ok);
        assert_eq!(v.first_bad, Some(3));
        assert!(v.reason.unwrap().contains("altered"));
    }

    #[test]
    fn a_rehashed_forgery_breaks_the_next_link() {
        let mut entries = chain(5);
        entries[2].outcome = "denied".into();
        entries[2] = seal(entries[2].clone());
        let v = verify(stored(&entries));
        assert_eq!(v.first_bad, Some(4));
        assert!(v.reason.unwrap().contains("does not link"));
    }

    #[test]
    fn a_removed_entry_is_found() {
        let mut entries = chain(5);
        entries.remove(1);
        let v = verify(stored(&entries));
        assert_eq!(v.first_bad, Some(2));
        assert!(v.reason.unwrap().contains("missing"));
    }

    #[test]
    fn an_unreadable_entry_is_found() {
        let entries = chain(3);
        let mut s = stored(&entries);
        s[1].1 = Err("garbage".into());
        let v = verify(s);
        assert_eq!(v.first_bad, Some(2));
    }

    #[test]
    fn sealing_a_body_encodes_exactly_the_sealed_entry() {
        let entry = &chain(2)[1];
        let body = Body {
            seq: entry.seq,
            time_ms: entry.time_ms,
            session: &entry.session,
            actor: &entry.actor,
            action: &entry.action,
            target: &entry.target,
            outcome: &entry.outcome,
            prev_hash: &entry.prev_hash,
        };
        let (bytes, hash) = body.seal();
        assert_eq!(hash, entry.hash);
        assert_eq!(bytes, rmp_serde::to_vec_named(entry).unwrap());
        assert_eq!(rmp_serde::from_slice::<Entry>(&bytes).unwrap(), *entry);
    }

    #[test]
    fn long_fields_are_clipped_on_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(2100);
        let clipped = clip(&long);
        assert!(clipped.len() < 4200, "{}", clipped.len());
        assert!(clipped.ends_with("… (4200 bytes)"), "{clipped}");
    }

    #[test]
    fn hashes_are_hex_blake3() {
        let e = &chain(1)[0];
        assert_eq!(e.hash.len(), 64);
        assert_eq!(hash_of(e), e.hash);
    }
}
