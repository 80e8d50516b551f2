//! Capability resources as data: the grammar of what may be granted, and whether a grant
//! allows a concrete access. Pure, unit-tested.
//!
//! | resource | grants |
//! |---|---|
//! | `kv` | the capsule's own key-value namespace |
//! | `vfs:read:<glob>`, `vfs:write:<glob>` | workspace paths (`*` within a directory, `**` across) |
//! | `bus:publish:<pattern>`, `bus:subscribe:<pattern>` | topics (`*` one segment, `>` the rest) |
//! | `mcp:call:<server>/<tool>` | MCP tools (`*` wildcards) |
//!
//! A workspace path is matched as the VFS opens it: normalized first (`./a//b/` is `a/b`),
//! so that no spelling of a path matches a glob its normal form does not. A path that can
//! never be valid (absolute, with `..`) matches nothing, and neither does one in the
//! workspace's `.astrid/` (the daemon's configuration), whatever the glob.

use std::fmt;

use globset::{GlobBuilder, GlobMatcher};

use crate::bus::Pattern;
use crate::vfs::path::{CONFIG_DIR, VfsPath};

/// Why a resource string is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid capability `{resource}`: {reason}")]
pub struct ResourceError {
    /// The resource as written.
    pub resource: String,
    /// What is wrong.
    pub reason: String,
}

/// A parsed grant.
#[derive(Debug, Clone)]
pub enum ResourcePattern {
    /// `kv`.
    Kv,
    /// `vfs:read:<glob>`.
    VfsRead(GlobMatcher),
    /// `vfs:write:<glob>`.
    VfsWrite(GlobMatcher),
    /// `bus:publish:<pattern>`.
    BusPublish(Pattern),
    /// `bus:subscribe:<pattern>`.
    BusSubscribe(Pattern),
    /// `mcp:call:<server>/<tool>`.
    McpCall {
        /// Server name or glob.
        server: GlobMatcher,
        /// Tool name or glob.
        tool: GlobMatcher,
    },
}

/// One concrete access a capsule attempts, checked against its grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Its key-value namespace.
    Kv,
    /// Reading a workspace path.
    VfsRead(String),
    /// Writing a workspace path.
    VfsWrite(String),
    /// Publishing to a topic.
    BusPublish(String),
    /// Subscribing to a topic pattern.
    BusSubscribe(String),
    /// Calling an MCP tool.
    McpCall {
        /// Server.
        server: String,
        /// Tool.
        tool: String,
    },
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kv => f.write_str("kv"),
            Self::VfsRead(p) => write!(f, "vfs:read:{p}"),
            Self::VfsWrite(p) => write!(f, "vfs:write:{p}"),
            Self::BusPublish(t) => write!(f, "bus:publish:{t}"),
            Self::BusSubscribe(t) => write!(f, "bus:subscribe:{t}"),
            Self::McpCall { server, tool } => write!(f, "mcp:call:{server}/{tool}"),
        }
    }
}

fn glob(resource: &str, text: &str, separator: bool) -> Result<GlobMatcher, ResourceError> {
    let err = |reason: String| ResourceError {
        resource: resource.to_owned(),
        reason,
    };
    if text.is_empty() {
        return Err(err("the pattern is empty".into()));
    }
    if separator && (text.starts_with('/') || text.split('/').any(|s| s == "..")) {
        return Err(err(
            "paths are relative to the workspace and may not use `..`".into(),
        ));
    }
    GlobBuilder::new(text)
        .literal_separator(separator)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| err(e.kind().to_string()))
}

impl ResourcePattern {
    /// Parses a resource as written in a manifest or a grant.
    ///
    /// # Errors
    ///
    /// [`ResourceError`] naming the resource and what is wrong.
    pub fn parse(resource: &str) -> Result<Self, ResourceError> {
        let err = |reason: &str| ResourceError {
            resource: resource.to_owned(),
            reason: reason.to_owned(),
        };
        let topic = |text: &str| {
            Pattern::parse(text).map_err(|rule| ResourceError {
                resource: resource.to_owned(),
                reason: rule.to_string(),
            })
        };
        if resource == "kv" {
            return Ok(Self::Kv);
        }
        let Some((kind, rest)) = resource.split_once(':') else {
            return Err(err(
                "expected kv, vfs:read:…, vfs:write:…, bus:publish:…, bus:subscribe:… or mcp:call:…",
            ));
        };
        match (kind, rest.split_once(':')) {
            ("vfs", Some(("read", g))) => Ok(Self::VfsRead(glob(resource, g, true)?)),
            ("vfs", Some(("write", g))) => Ok(Self::VfsWrite(glob(resource, g, true)?)),
            ("bus", Some(("publish", t))) => Ok(Self::BusPublish(topic(t)?)),
            ("bus", Some(("subscribe", t))) => Ok(Self::BusSubscribe(topic(t)?)),
            ("mcp", Some(("call", target))) => {
                let Some((server, tool)) = target.split_once('/') else {
                    return Err(err("expected mcp:call:<server>/<tool>"));
                };
                Ok(Self::McpCall {
                    server: glob(resource, server, false)?,
                    tool: glob(resource, tool, false)?,
                })
            }
            _ => Err(err(
                "expected kv, vfs:read:…, vfs:write:…, bus:publish:…, bus:subscribe:… or mcp:call:…",
            )),
        }
    }

    /// Whether this grant allows `access`.
    pub fn allows(&self, access: &Access) -> bool {
        match (self, access) {
            (Self::Kv, Access::Kv) => true,
            (Self::VfsRead(g), Access::VfsRead(p)) | (Self::VfsWrite(g), Access::VfsWrite(p)) => {
                vfs_allows(g, p)
            }
            (Self::BusPublish(g), Access::BusPublish(t)) => g.matches(t),
            (Self::BusSubscribe(g), Access::BusSubscribe(p)) => {
                Pattern::parse(p).is_ok_and(|p| g.covers(&p))
            }
            (Self::McpCall { server, tool }, Access::McpCall { server: s, tool: t }) => {
                server.is_match(s) && tool.is_match(t)
            }
            _ => false,
        }
    }
}

/// Whether `glob` allows the workspace path `raw` (see the module's documentation).
fn vfs_allows(glob: &GlobMatcher, raw: &str) -> bool {
    let Ok(path) = VfsPath::parse(raw) else {
        return false;
    };
    let config = path
        .components()
        .next()
        .is_some_and(|first| first.eq_ignore_ascii_case(CONFIG_DIR));
    !config && glob.is_match(path.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(grant: &str, access: &Access) -> bool {
        ResourcePattern::parse(grant).unwrap().allows(access)
    }

    #[test]
    fn kv_grants_only_kv() {
        assert!(allows("kv", &Access::Kv));
        assert!(!allows("kv", &Access::VfsRead("a".into())));
    }

    #[test]
    fn vfs_globs_respect_directories() {
        let read = |p: &str| Access::VfsRead(p.into());
        assert!(allows("vfs:read:src/*.rs", &read("src/main.rs")));
        assert!(!allows("vfs:read:src/*.rs", &read("src/a/b.rs")));
        assert!(allows("vfs:read:src/**", &read("src/a/b.rs")));
        assert!(allows("vfs:read:**", &read("anything/at/all")));
        assert!(!allows(
            "vfs:read:src/**",
            &Access::VfsWrite("src/a".into())
        ));
        assert!(allows("vfs:write:out/*", &Access::VfsWrite("out/x".into())));
    }

    #[test]
    fn vfs_grants_match_the_normalized_path() {
        let read = |p: &str| Access::VfsRead(p.into());
        // Each spelling matches as its normal form does.
        assert!(!allows("vfs:read:*/secret.txt", &read("./secret.txt")));
        assert!(allows("vfs:read:*/secret.txt", &read("./a/secret.txt")));
        assert!(!allows("vfs:read:data/*/x", &read("data//x")));
        assert!(allows("vfs:read:data/*/x", &read("data/./y//x")));
        assert!(allows("vfs:read:notes/n.txt", &read("notes/n.txt/")));
        // Never valid, whatever the glob.
        for p in ["../x", "a/../../x", "/etc/passwd", "", "a\0b"] {
            assert!(!allows("vfs:read:**", &read(p)), "{p}");
        }
        assert!(!allows("vfs:read:**", &read("a/../x")));
        // The daemon's configuration.
        for p in [
            ".astrid/mcp.toml",
            "./.astrid//capsules/c/Capsule.toml",
            ".ASTRID/x",
        ] {
            assert!(!allows("vfs:read:**", &read(p)), "{p}");
            assert!(
                !allows("vfs:write:.astrid/**", &Access::VfsWrite(p.into())),
                "{p}"
            );
        }
        assert!(allows("vfs:read:**", &read("a/.astrid/x")));
    }

    #[test]
    fn bus_grants_use_topic_patterns() {
        assert!(allows(
            "bus:publish:user.>",
            &Access::BusPublish("user.note".into())
        ));
        assert!(!allows(
            "bus:publish:user.>",
            &Access::BusPublish("astrid.x".into())
        ));
        assert!(allows(
            "bus:subscribe:user.>",
            &Access::BusSubscribe("user.*".into())
        ));
        assert!(!allows(
            "bus:subscribe:user.*",
            &Access::BusSubscribe("user.>".into())
        ));
        assert!(!allows(
            "bus:subscribe:user.>",
            &Access::BusPublish("user.x".into())
        ));
    }

    #[test]
    fn mcp_grants_name_server_and_tool() {
        let call = |s: &str, t: &str| Access::McpCall {
            server: s.into(),
            tool: t.into(),
        };
        assert!(allows("mcp:call:fs/read", &call("fs", "read")));
        assert!(!allows("mcp:call:fs/read", &call("fs", "write")));
        assert!(allows("mcp:call:fs/*", &call("fs", "write")));
        assert!(allows("mcp:call:*/*", &call("any", "thing")));
    }

    #[test]
    fn bad_resources_are_refused_with_a_reason() {
        for bad in [
            "",
            "kv:x",
            "vfs:read:",
            "vfs:exec:a",
            "vfs:read:/etc/passwd",
            "vfs:read:../x",
            "bus:publish:a..b",
            "mcp:call:server",
            "net:host",
        ] {
            let e = ResourcePattern::parse(bad).unwrap_err();
            assert_eq!(e.resource, bad);
            assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn accesses_print_as_resources() {
        assert_eq!(Access::VfsRead("a/b".into()).to_string(), "vfs:read:a/b");
        let call = Access::McpCall {
            server: "s".into(),
            tool: "t".into(),
        };
        assert_eq!(call.to_string(), "mcp:call:s/t");
    }
}
