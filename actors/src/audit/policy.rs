//! The audit policy: which request kinds the audit log records, in the manner of
//! Kubernetes' audit policy levels (`none`, `metadata`).
//!
//! By default the log keeps what changes state or crosses a trust boundary: every request
//! that mutates, and `Publish` (its event reaches capsules and other clients). Requests that
//! only read (`GetStatus`, `List*`, `Get*`, `KvGet`, `VfsRead`, ...) are not recorded unless
//! `config.toml`'s `[audit_policy]` raises them to `metadata`; it may also lower a mutating
//! request to `none`. A request refused as `forbidden`, `unauthorized` or `path_escape` is
//! recorded whatever its level: a denial crosses the boundary (the router applies this). `Ping` and `InvokeCommand` are never recorded
//! themselves (what a capsule does through its host calls is), so the policy refuses to set
//! them.
//!
//! What the router asks is [`AuditPolicy::records`], once per request, by index into
//! [`Request::NAMES`]: a table lookup.

use std::collections::BTreeMap;

use crate::protocol::{AuditLevel, Effect, PolicyRule, Request};

/// Requests that only read but are recorded by default, and why.
const RECORDED_READS: &[(&str, &str)] =
    &[("Publish", "its event reaches capsules and other clients")];

/// Why the policy cannot be built from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// No request has this name.
    #[error("`{0}` is not a request kind (see `astrid audit policy` for the list)")]
    Unknown(String),
    /// The request is never recorded itself.
    #[error("`{0}` is never recorded itself, so it takes no audit level")]
    Fixed(String),
}

/// The level of every request kind.
#[derive(Debug, Clone)]
pub struct AuditPolicy {
    /// By position in [`Request::NAMES`]: the level, and whether the configuration set it.
    levels: Vec<(AuditLevel, bool)>,
}

impl Default for AuditPolicy {
    fn default() -> Self {
        Self {
            levels: Request::NAMES
                .iter()
                .map(|name| (default_level(name).0, false))
                .collect(),
        }
    }
}

/// A request kind's level by default, and why.
fn default_level(name: &str) -> (AuditLevel, &'static str) {
    match effect_of(name) {
        Some(Effect::Mutates) => (AuditLevel::Metadata, "changes state"),
        Some(Effect::Reads) => RECORDED_READS
            .iter()
            .find(|(read, _)| *read == name)
            .map_or((AuditLevel::None, "only reads"), |(_, why)| {
                (AuditLevel::Metadata, why)
            }),
        Some(Effect::Unaudited) | None => (
            AuditLevel::None,
            "never recorded itself (a capsule's host calls are)",
        ),
    }
}

/// The effect of the request kind `name`.
fn effect_of(name: &str) -> Option<Effect> {
    let i = Request::NAMES.iter().position(|n| *n == name)?;
    Request::EFFECTS.get(i).copied()
}

impl AuditPolicy {
    /// The default policy with `overrides` (request kind → level) applied.
    ///
    /// # Errors
    ///
    /// A name that is no request kind, or one that is never recorded itself.
    pub fn with_overrides(overrides: &BTreeMap<String, AuditLevel>) -> Result<Self, PolicyError> {
        let mut policy = Self::default();
        for (name, level) in overrides {
            let Some(i) = Request::NAMES.iter().position(|n| n == name) else {
                return Err(PolicyError::Unknown(name.clone()));
            };
            if effect_of(name) == Some(Effect::Unaudited) {
                return Err(PolicyError::Fixed(name.clone()));
            }
            policy.levels[i] = (*level, true);
        }
        Ok(policy)
    }

    /// Whether requests of kind `name` are recorded.
    pub fn records(&self, name: &str) -> bool {
        Request::NAMES
            .iter()
            .position(|n| *n == name)
            .and_then(|i| self.levels.get(i))
            .is_some_and(|(level, _)| *level == AuditLevel::Metadata)
    }

    /// Every request kind's rule, in the protocol's order.
    pub fn rules(&self) -> Vec<PolicyRule> {
        Request::NAMES
            .iter()
            .zip(&self.levels)
            .map(|(name, (level, configured))| {
                let (default, why) = default_level(name);
                PolicyRule {
                    request: (*name).to_owned(),
                    level: *level,
                    source: if *configured { "config" } else { "default" }.to_owned(),
                    why: if *configured {
                        format!("set in config.toml (by default {default}: {why})")
                    } else {
                        why.to_owned()
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_what_changes_state_is_recorded_and_what_reads_is_not() {
        let policy = AuditPolicy::default();
        for recorded in [
            "KvPut",
            "KvDelete",
            "VfsWrite",
            "VfsRemove",
            "VfsMkdir",
            "GrantCapability",
            "RevokeCapability",
            "InjectFault",
            "Shutdown",
            "CallMcpTool",
            "TrustWorkspace",
            "UntrustWorkspace",
            "ReloadCapsules",
            "ReloadMcp",
            "Publish",
            "RemoveCrash",
        ] {
            assert!(policy.records(recorded), "{recorded}");
        }
        for unrecorded in [
            "Ping",
            "InvokeCommand",
            "GetStatus",
            "GetMetrics",
            "GetConfig",
            "ListCapsules",
            "GetCommands",
            "GetCapsuleMetadata",
            "GetSupervisionTree",
            "KvGet",
            "KvList",
            "VfsRead",
            "VfsList",
            "VfsStat",
            "Subscribe",
            "Unsubscribe",
            "AuditTail",
            "AuditVerify",
            "ListCapabilities",
            "ListMcpServers",
            "ListMcpTools",
            "ListTrust",
            "ListCrashes",
            "GetCrash",
            "ReplayCrash",
        ] {
            assert!(!policy.records(unrecorded), "{unrecorded}");
        }
        assert_eq!(policy.rules().len(), Request::NAMES.len());
        assert!(policy.rules().iter().all(|r| r.source == "default"));
    }

    #[test]
    fn overrides_raise_reads_and_lower_writes() {
        let overrides = BTreeMap::from([
            ("GetStatus".to_owned(), AuditLevel::Metadata),
            ("KvPut".to_owned(), AuditLevel::None),
        ]);
        let policy = AuditPolicy::with_overrides(&overrides).unwrap();
        assert!(policy.records("GetStatus"));
        assert!(!policy.records("KvPut"));
        assert!(policy.records("KvDelete"));
        let rules = policy.rules();
        let status = rules.iter().find(|r| r.request == "GetStatus").unwrap();
        assert_eq!(
            (status.level, status.source.as_str()),
            (AuditLevel::Metadata, "config")
        );
    }

    #[test]
    fn unknown_and_fixed_kinds_are_refused_by_name() {
        let unknown = BTreeMap::from([("GetStatsu".to_owned(), AuditLevel::Metadata)]);
        assert_eq!(
            AuditPolicy::with_overrides(&unknown).unwrap_err(),
            PolicyError::Unknown("GetStatsu".into())
        );
        let fixed = BTreeMap::from([("Ping".to_owned(), AuditLevel::Metadata)]);
        assert_eq!(
            AuditPolicy::with_overrides(&fixed).unwrap_err(),
            PolicyError::Fixed("Ping".into())
        );
    }
}
