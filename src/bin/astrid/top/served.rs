//! Which row of `astrid top`'s tree answers each request kind, so that a kernel actor's row
//! shows the rate, latency and errors of the requests it serves. Capsules and MCP servers
//! have figures of their own (their calls, from the daemon's capsule and MCP metrics), so
//! `InvokeCommand` and `CallMcpTool` are counted on their parents (`capsules`, `mcp`) as
//! well. What a client's session answers itself (status, metrics, the tree, faults, trust,
//! crash bundles) shows on `listener`, the sessions' parent.

/// The tree row (an actor's name as `astrid ps` shows it) that serves requests of `kind`,
/// as [`Request::NAMES`](astrid::protocol::Request::NAMES) names them.
pub(crate) fn actor_of(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Subscribe" | "Unsubscribe" | "Publish" => "bus",
        "KvGet" | "KvPut" | "KvDelete" | "KvList" => "store",
        "GrantCapability" | "RevokeCapability" | "ListCapabilities" => "capabilities",
        "AuditTail" | "AuditVerify" | "AuditPrune" => "audit",
        "VfsRead" | "VfsWrite" | "VfsList" | "VfsStat" | "VfsRemove" | "VfsMkdir" => "vfs",
        "ListApprovals" | "AnswerApproval" => "approvals",
        "ListCapsules" | "ReloadCapsules" | "GetCommands" | "GetCapsuleMetadata"
        | "ListSettings" | "SetSetting" | "UnsetSetting" | "InspectCapsule" | "InstallCapsule"
        | "UninstallCapsule" => "registry",
        "InvokeCommand" => "capsules",
        "ListMcpServers" | "ReloadMcp" | "ListMcpTools" | "CallMcpTool" => "mcp",
        "Ping" | "GetStatus" | "GetMetrics" | "GetConfig" | "Shutdown" | "GetSupervisionTree"
        | "InjectFault" | "TrustWorkspace" | "UntrustWorkspace" | "ListTrust" | "ListCrashes"
        | "GetCrash" | "RemoveCrash" | "ReplayCrash" => "listener",
        _ => return None,
    })
}

/// The request kinds among `kinds` that `actor` serves.
pub(crate) fn kinds_of<'a>(actor: &str, kinds: &'a [String]) -> Vec<&'a str> {
    kinds
        .iter()
        .map(String::as_str)
        .filter(|k| actor_of(k) == Some(actor))
        .collect()
}

#[cfg(test)]
mod tests {
    use astrid::protocol::Request;

    use super::*;

    #[test]
    fn every_request_kind_has_a_row() {
        let missing: Vec<_> = Request::NAMES
            .iter()
            .filter(|k| actor_of(k).is_none())
            .collect();
        assert!(missing.is_empty(), "place these in served.rs: {missing:?}");
    }
}
