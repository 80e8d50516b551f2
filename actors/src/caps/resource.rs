//! Capability resources as data: the grammar of what may be granted, and whether a grant
//! allows a concrete access. Pure, unit-tested.
//!
//! | resource | grants |
//! |---|---|
//! | `kv` | the capsule's own key-value namespace |
//! | `vfs:read:<glob>`, `vfs:write:<glob>` | workspace paths (`*` within a directory, `**` across) |
//! | `bus:publish:<pattern>`, `bus:subscribe:<pattern>` | topics (`*` one segment, `>` the rest) |
//! | `mcp:call:<server>/<tool>` | MCP tools (`*` wildcards) |
//! | `net:http:<scheme>://<host>[:<port>][/<path-glob>]` | HTTP requests: `http` or `https`; the host a name (`*` wildcards within it, as in `*.example.com`) or an IP address; without a port, the scheme's default port; without a path, any path |
//!
//! An HTTP grant reaches a loopback, private, link-local or otherwise non-public address only
//! when it names the host exactly (no wildcard): `net:http:http://127.0.0.1:8080`, say.
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

/// What starts a grant that is used only once the user approves it.
pub const ASK_PREFIX: &str = "ask:";

/// A grant as written: a resource, allowed outright or, after `ask:`, once the user approves
/// each use (see the approvals actor).
#[derive(Debug, Clone)]
pub struct GrantPattern {
    /// Each use waits for the user's approval.
    pub ask: bool,
    /// What it covers.
    pub pattern: ResourcePattern,
}

impl GrantPattern {
    /// Parses a grant as written in a manifest or given to `caps grant`.
    ///
    /// # Errors
    ///
    /// [`ResourceError`] naming the grant and what is wrong.
    pub fn parse(grant: &str) -> Result<Self, ResourceError> {
        let Some(resource) = grant.strip_prefix(ASK_PREFIX) else {
            return ResourcePattern::parse(grant).map(|pattern| Self {
                ask: false,
                pattern,
            });
        };
        let pattern = ResourcePattern::parse(resource).map_err(|e| ResourceError {
            resource: grant.to_owned(),
            reason: e.reason,
        })?;
        if matches!(pattern, ResourcePattern::BusSubscribe(_)) {
            return Err(ResourceError {
                resource: grant.to_owned(),
                reason: "a subscription is made when the capsule loads, with nobody to ask: \
                         grant bus:subscribe outright"
                    .into(),
            });
        }
        Ok(Self { ask: true, pattern })
    }
}

/// A parsed resource.
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
    /// `net:http:<scheme>://<host>[:<port>][/<path-glob>]`.
    NetHttp(HttpGrant),
}

/// A parsed `net:http:` grant.
#[derive(Debug, Clone)]
pub struct HttpGrant {
    /// `http` or `https`.
    scheme: String,
    /// The host as written (lowercase), and its matcher when it has wildcards.
    host: String,
    host_glob: Option<GlobMatcher>,
    /// The port: the one written, or the scheme's default.
    port: u16,
    /// The path glob, if any (matched against the path without its leading `/`).
    path: Option<GlobMatcher>,
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
    /// An HTTP request (one hop of it).
    NetHttp(HttpAccess),
}

/// One HTTP request as a grant sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAccess {
    /// `http` or `https`.
    pub scheme: String,
    /// The host (lowercase; an IPv6 address without brackets).
    pub host: String,
    /// The port (the scheme's default when the URL has none).
    pub port: u16,
    /// The path, starting with `/`.
    pub path: String,
    /// Whether the host resolved to an address that is not public: then only a grant that
    /// names the host exactly allows it.
    pub private: bool,
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
            Self::NetHttp(a) => {
                write!(f, "net:http:{}", a.url())?;
                if a.private {
                    f.write_str(" (a non-public address)")?;
                }
                Ok(())
            }
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
                "expected kv, vfs:read:…, vfs:write:…, bus:publish:…, bus:subscribe:…, mcp:call:… or net:http:…",
            ));
        };
        match (kind, rest.split_once(':')) {
            ("vfs", Some(("read", g))) => Ok(Self::VfsRead(glob(resource, g, true)?)),
            ("vfs", Some(("write", g))) => Ok(Self::VfsWrite(glob(resource, g, true)?)),
            ("bus", Some(("publish", t))) => Ok(Self::BusPublish(topic(t)?)),
            ("bus", Some(("subscribe", t))) => Ok(Self::BusSubscribe(topic(t)?)),
            ("net", Some(("http", target))) => {
                Ok(Self::NetHttp(HttpGrant::parse(resource, target)?))
            }
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
                "expected kv, vfs:read:…, vfs:write:…, bus:publish:…, bus:subscribe:…, mcp:call:… or net:http:…",
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
            (Self::NetHttp(grant), Access::NetHttp(access)) => grant.allows(access),
            _ => false,
        }
    }
}

impl HttpAccess {
    /// `scheme://host:port/path` (an IPv6 host in brackets): the request without its query.
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{}://{host}:{}{}", self.scheme, self.port, self.path)
    }
}

/// The port `scheme` uses when a URL names none.
pub fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl HttpGrant {
    /// Parses what follows `net:http:`.
    fn parse(resource: &str, target: &str) -> Result<Self, ResourceError> {
        let err = |reason: &str| ResourceError {
            resource: resource.to_owned(),
            reason: reason.to_owned(),
        };
        let Some((scheme, rest)) = target.split_once("://") else {
            return Err(err(
                "expected net:http:<scheme>://<host>[:<port>][/<path-glob>]",
            ));
        };
        let port_of_scheme =
            default_port(scheme).ok_or_else(|| err("the scheme must be `http` or `https`"))?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((host, after)) = v6.split_once(']') else {
                return Err(err("an IPv6 address needs its closing `]`"));
            };
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            None => port_of_scheme,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| err("the port must be a number from 1 to 65535"))?,
        };
        let host = host.to_ascii_lowercase();
        let well_formed = !host.is_empty()
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'*' | b':' | b'_')
            });
        if !well_formed {
            return Err(err(
                "the host must be a name (letters, digits, `.`, `-`, `*` wildcards) or an IP address",
            ));
        }
        let host_glob = if host.contains('*') {
            Some(glob(resource, &host, false)?)
        } else {
            None
        };
        let path = match path {
            None | Some("") => None,
            Some(p) => Some(glob(resource, p, true)?),
        };
        Ok(Self {
            scheme: scheme.to_owned(),
            host,
            host_glob,
            port,
            path,
        })
    }

    fn allows(&self, a: &HttpAccess) -> bool {
        let host = match &self.host_glob {
            // A wildcard never reaches a non-public address.
            Some(glob) => !a.private && glob.is_match(&a.host),
            None => self.host == a.host,
        };
        // An encoded `/` or `\` in a path could be read as a separator by the server, after
        // the glob was matched: a path glob allows none.
        let path = self.path.as_ref().is_none_or(|glob| {
            a.path.strip_prefix('/').is_some_and(|p| {
                let lower = p.to_ascii_lowercase();
                !p.split('/').any(|s| s == "..")
                    && !lower.contains("%2f")
                    && !lower.contains("%5c")
                    && glob.is_match(p)
            })
        });
        self.scheme == a.scheme && self.port == a.port && host && path
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

    fn http(url: &str, private: bool) -> Access {
        let u = url::Url::parse(url).unwrap();
        Access::NetHttp(HttpAccess {
            scheme: u.scheme().into(),
            host: u.host_str().unwrap().trim_matches(['[', ']']).into(),
            port: u.port_or_known_default().unwrap(),
            path: u.path().into(),
            private,
        })
    }

    #[test]
    fn http_grants_match_scheme_host_port_and_path() {
        let api = "net:http:https://api.example.com";
        assert!(allows(api, &http("https://api.example.com/v1/x", false)));
        assert!(allows(api, &http("https://API.example.com:443/", false)));
        assert!(!allows(api, &http("http://api.example.com/", false)));
        assert!(!allows(api, &http("https://api.example.com:8443/", false)));
        assert!(!allows(api, &http("https://evil.com/", false)));
        assert!(!allows(
            api,
            &http("https://api.example.com.evil.com/", false)
        ));

        let wild = "net:http:https://*.example.com";
        assert!(allows(wild, &http("https://a.example.com/", false)));
        assert!(!allows(wild, &http("https://example.com/", false)));
        // A wildcard never reaches a private address; a host named exactly may.
        assert!(!allows(wild, &http("https://a.example.com/", true)));
        assert!(allows(
            "net:http:http://127.0.0.1:8080",
            &http("http://127.0.0.1:8080/x", true)
        ));
        assert!(allows(
            "net:http:http://[::1]:8080",
            &http("http://[::1]:8080/x", true)
        ));
        assert!(!allows(
            "net:http:http://*:8080",
            &http("http://127.0.0.1:8080/", true)
        ));

        let path = "net:http:https://api.example.com/v1/**";
        assert!(allows(
            path,
            &http("https://api.example.com/v1/models/a", false)
        ));
        assert!(!allows(
            path,
            &http("https://api.example.com/v2/models", false)
        ));
        assert!(!allows(
            path,
            &http("https://api.example.com/v1/../admin", false)
        ));
        for encoded in ["v1/..%2Fadmin", "v1/a%2fb", "v1/..%5cadmin"] {
            let url = format!("https://api.example.com/{encoded}");
            assert!(!allows(path, &http(&url, false)), "{url}");
        }

        for bad in [
            "net:http:ftp://x.com",
            "net:http:https//x.com",
            "net:http:https://",
            "net:http:https://x.com:0",
            "net:http:https://x.com:99999",
            "net:http:https://x com",
            "net:http:https://[::1",
        ] {
            assert!(ResourcePattern::parse(bad).is_err(), "{bad}");
        }
    }
}
