//! The request kinds of a plain run (`--kind`): parsing the flag, and the request each
//! kind sends.

use astrid_protocol::{RawValue, Request};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `Ping`, answered by the connection's session.
    Ping,
    /// `GetStatus`, which asks the bus and the capsule registry.
    Status,
    /// `Publish` to `user.loadgen` (no subscribers).
    Publish,
    /// `GetSupervisionTree`, answered by the root supervisor.
    Tree,
    /// `KvPut` of a 64-byte value under a key of its own, answered once durable.
    Kvput,
    /// `KvGet` of one of the keys `kvput` writes (100 per client).
    Kvget,
    /// `InvokeCommand` of a capsule command.
    Invoke(String),
    /// `CallMcpTool` of a server's tool.
    Mcp {
        /// The server.
        server: String,
        /// The tool.
        tool: String,
    },
}

pub(crate) fn parse_kind(text: &str) -> Result<Kind, String> {
    Ok(match text {
        "ping" => Kind::Ping,
        "status" => Kind::Status,
        "publish" => Kind::Publish,
        "tree" => Kind::Tree,
        "kvput" => Kind::Kvput,
        "kvget" => Kind::Kvget,
        _ => {
            if let Some(command) = text.strip_prefix("invoke:").filter(|c| !c.is_empty()) {
                Kind::Invoke(command.to_owned())
            } else if let Some((server, tool)) = text
                .strip_prefix("mcp:")
                .and_then(|t| t.split_once('/'))
                .filter(|(s, t)| !s.is_empty() && !t.is_empty())
            {
                Kind::Mcp {
                    server: server.to_owned(),
                    tool: tool.to_owned(),
                }
            } else {
                return Err(
                    "use ping, status, publish, tree, kvput, kvget, invoke:<command> or mcp:<server>/<tool>"
                        .into(),
                );
            }
        }
    })
}

impl Kind {
    /// Request number `n` of client `client`.
    pub(crate) fn request(&self, client: usize, n: usize) -> Request {
        match self {
            Self::Ping => Request::Ping,
            Self::Status => Request::GetStatus,
            Self::Publish => Request::Publish {
                topic: "user.loadgen".into(),
                payload: RawValue::encode(&42).unwrap_or_default(),
            },
            Self::Tree => Request::GetSupervisionTree,
            Self::Kvput => Request::KvPut {
                key: format!("loadgen/{client}/{}", n % 100),
                value: vec![b'v'; 64],
            },
            Self::Kvget => Request::KvGet {
                key: format!("loadgen/{client}/{}", n % 100),
            },
            Self::Invoke(command) => Request::InvokeCommand {
                name: command.clone(),
                args: Vec::new(),
            },
            Self::Mcp { server, tool } => Request::CallMcpTool {
                server: server.clone(),
                tool: tool.clone(),
                arguments: RawValue::from_value(&rmpv::Value::Map(vec![(
                    "text".into(),
                    "hi".into(),
                )]))
                .unwrap_or_default(),
            },
        }
    }
}
