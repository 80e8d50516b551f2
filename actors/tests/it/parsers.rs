//! Property tests of the two strictly parsed configuration files, a capsule's `Capsule.toml`
//! (`capsules/manifest.rs`) and `mcp.toml` (`mcp/config.rs`). Whatever they are given (text
//! that is more or less TOML, any TOML document, a valid file with one value replaced by any
//! other), the parsers never panic, and every error names the file, and the field at fault
//! (or, for text that is not TOML, the line). Case counts are bounded so that the whole file
//! runs in a few seconds.

use std::path::Path;

use astrid_actors::capsules::manifest::{self, ManifestError};
use astrid_actors::mcp::config::{self, ConfigError};
use proptest::prelude::*;
use proptest::test_runner::Config;
use toml::{Table, Value};

/// The file parsed manifests claim to come from.
const MANIFEST: &str = "/capsules/demo/Capsule.toml";
/// The file parsed `mcp.toml` texts claim to come from.
const MCP: &str = "/home/mcp.toml";

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------

/// Keys of both files, so that generated documents reach past the first unknown key.
const KEYS: &[&str] = &[
    "package",
    "name",
    "version",
    "description",
    "module",
    "file",
    "capabilities",
    "grant",
    "limits",
    "memory_pages",
    "fuel",
    "call_timeout",
    "command",
    "provider",
    "interceptor",
    "topic",
    "priority",
    "bus",
    "subscribe",
    "restart",
    "policy",
    "intensity",
    "period",
    "backoff",
    "backoff_max",
    "mcp_server",
    "server",
    "args",
    "env",
    "inherit_env",
    "cwd",
];

/// Strings that are valid somewhere in either file, so that generated documents get past
/// the first check.
const WORDS: &[&str] = &[
    "demo",
    "1.0.0",
    "0.1.0-beta.1+build.5",
    "demo.wasm",
    "demo.wat",
    "../escape.wasm",
    "/abs.wasm",
    "astrid-capsule-cli",
    "kv",
    "bus:publish:demo.>",
    "bus:subscribe:demo.*",
    "vfs:read:src/**",
    "mcp:call:tools/echo",
    "demo.event",
    "demo.>",
    "a..b",
    "permanent",
    "transient",
    "temporary",
    "forever",
    "500ms",
    "2s",
    "0s",
    "25h",
    "PATH",
    "A=B",
    "nul\0byte",
    "",
    " ",
    "Ünïcødé",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-z_]{1,8}",
        1 => any::<String>(),
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(WORDS).prop_map(str::to_owned),
        1 => "[a-z0-9.:*>/_-]{0,24}",
        1 => any::<String>(),
    ]
}

fn integer() -> impl Strategy<Value = i64> {
    prop_oneof![
        prop::sample::select(vec![
            0,
            1,
            -1,
            16,
            999,
            1000,
            1001,
            4096,
            4097,
            65_536,
            i64::from(u32::MAX),
            i64::from(u32::MAX) + 1,
            i64::MAX,
            i64::MIN
        ]),
        any::<i64>(),
    ]
}

/// Any TOML value, nested a few levels.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        3 => string().prop_map(Value::String),
        2 => integer().prop_map(Value::Integer),
        1 => any::<f64>().prop_map(Value::Float),
        1 => any::<bool>().prop_map(Value::Boolean),
        1 => Just(Value::Datetime("1979-05-27T07:32:00Z".parse().unwrap())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Table(m.into_iter().collect())),
        ]
    })
}

/// Any TOML document.
fn document() -> impl Strategy<Value = Table> {
    prop::collection::btree_map(key(), value(), 0..8).prop_map(|m| m.into_iter().collect())
}

/// Text that is more or less TOML: lines of headers, assignments and junk.
fn tomlish() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        prop::sample::select(vec![
            "[package]",
            "[module]",
            "[limits]",
            "[restart]",
            "[capabilities]",
            "[bus]",
            "[[command]]",
            "[[provider]]",
            "[[interceptor]]",
            "[[mcp_server]]",
            "[[server]]",
            "[server.restart]",
            "[[server]",
            "[package",
            "name = \"demo\"",
            "version = \"1.0.0\"",
            "file = \"demo.wat\"",
            "command = \"x\"",
            "fuel = 1000",
            "grant = [\"kv\"]",
            "= 1",
            "name =",
            "\"unterminated",
            "x = [1, \"a\"",
            "a.b.c = 1",
            "name = \"a\"\nname = \"b\"",
            "# comment",
            "",
        ])
        .prop_map(str::to_owned),
        (key(), value()).prop_map(|(k, v)| {
            let mut t = Table::new();
            t.insert(k, v);
            toml::to_string(&t).unwrap_or_default()
        }),
        "[ -~]{0,40}",
        any::<String>(),
    ];
    prop::collection::vec(line, 0..16).prop_map(|lines| lines.join("\n"))
}

fn text(doc: &Table) -> String {
    toml::to_string(doc).unwrap()
}

// ---------------------------------------------------------------------------------------
// What every error must say
// ---------------------------------------------------------------------------------------

/// The error names the manifest file, and a field or (for a syntax error) a line.
fn check_manifest_error(e: &ManifestError) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    prop_assert!(shown.starts_with(MANIFEST), "{shown}");
    match e {
        ManifestError::Syntax { reason, .. } => {
            prop_assert!(reason.contains("line "), "no line in {shown}");
        }
        ManifestError::Field { field, .. } => {
            prop_assert!(!field.is_empty(), "no field in {shown}");
            prop_assert!(shown.contains(&format!("`{field}`")), "{shown}");
        }
        ManifestError::Unreadable { .. } => prop_assert!(false, "parse read a file: {shown}"),
    }
    Ok(())
}

/// The error names the `mcp.toml` file, and a field or (for a syntax error) a line.
fn check_mcp_error(e: &ConfigError) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    prop_assert!(shown.starts_with(MCP), "{shown}");
    prop_assert!(!e.field.is_empty(), "no field in {shown}");
    if e.reason.starts_with("not valid TOML") {
        prop_assert!(e.reason.contains("line "), "no line in {shown}");
    }
    Ok(())
}

/// Whether the field path `field` starts at a top-level key of `doc` (keys may hold dots
/// and brackets themselves, so the path is not split).
fn in_doc(doc: &Table, field: &str) -> bool {
    doc.keys().any(|key| {
        field
            .strip_prefix(key.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    })
}

// ---------------------------------------------------------------------------------------
// Valid files, and one value replaced
// ---------------------------------------------------------------------------------------

/// A manifest that uses most fields, valid as it is.
const VALID_MANIFEST: &str = r#"
[package]
name = "demo"
version = "1.0.0"
description = "a capsule"

[module]
file = "demo.wat"

[capabilities]
grant = ["kv", "bus:subscribe:demo.>"]

[limits]
memory_pages = 16
fuel = 100000
call_timeout = "500ms"

[[command]]
name = "hello"
description = "says hello"

[[provider]]
topic = "demo.ask"
priority = 5

[[interceptor]]
topic = "demo.*"

[bus]
subscribe = ["demo.>"]

[restart]
policy = "transient"
intensity = 3
period = "5s"

[[mcp_server]]
name = "tools"
command = "/bin/tools"
args = ["--stdio"]
env = { A = "b" }
inherit_env = ["PATH"]
call_timeout = "30s"
"#;

/// Fields of [`VALID_MANIFEST`] replaced (or added) by the mutation test, as the errors
/// should name them.
const MANIFEST_FIELDS: &[&str] = &[
    "package.name",
    "package.version",
    "package.description",
    "module.file",
    "capabilities.grant[1]",
    "limits.memory_pages",
    "limits.fuel",
    "limits.call_timeout",
    "command[0].name",
    "command[0].description",
    "provider[0].topic",
    "provider[0].priority",
    "interceptor[0].topic",
    "bus.subscribe[0]",
    "restart.policy",
    "restart.intensity",
    "restart.period",
    "restart.backoff",
    "restart.backoff_max",
    "mcp_server[0].name",
    "mcp_server[0].command",
    "mcp_server[0].args",
    "mcp_server[0].env",
    "mcp_server[0].inherit_env",
    "mcp_server[0].cwd",
    "mcp_server[0].call_timeout",
    "mcp_server[0].restart",
];

/// An `mcp.toml` with two valid servers.
const VALID_MCP: &str = r#"
[[server]]
name = "first"
command = "/bin/first"

[[server]]
name = "second"
command = "/bin/second"
args = ["--stdio"]
env = { A = "b" }
inherit_env = ["PATH"]
cwd = "work"
call_timeout = "30s"

[server.restart]
policy = "permanent"
intensity = 3
period = "5s"
backoff = "50ms"
backoff_max = "5s"
"#;

/// Fields of the second server of [`VALID_MCP`] the mutation test replaces or adds.
const MCP_FIELDS: &[&str] = &[
    "name",
    "command",
    "args",
    "env",
    "inherit_env",
    "cwd",
    "call_timeout",
    "restart",
    "restart.policy",
    "restart.intensity",
    "restart.period",
    "restart.backoff",
    "restart.backoff_max",
];

/// Sets the value at `path` (`a.b`, `a[1].b`) in `doc`, creating what is missing.
fn set(doc: &mut Table, path: &str, new: Value) {
    let mut segments: Vec<(&str, Option<usize>)> = Vec::new();
    for part in path.split('.') {
        match part.split_once('[') {
            Some((name, index)) => {
                let index = index.trim_end_matches(']').parse().unwrap();
                segments.push((name, Some(index)));
            }
            None => segments.push((part, None)),
        }
    }
    let (last, rest) = segments.split_last().unwrap();
    let mut table = doc;
    for &(name, index) in rest {
        let entry = table
            .entry(name.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        let entry = match index {
            Some(i) => &mut entry.as_array_mut().unwrap()[i],
            None => entry,
        };
        table = entry.as_table_mut().unwrap();
    }
    match last.1 {
        Some(i) => {
            let array = table.get_mut(last.0).unwrap().as_array_mut().unwrap();
            if i < array.len() {
                array[i] = new;
            } else {
                array.push(new);
            }
        }
        None => {
            table.insert(last.0.to_owned(), new);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

/// Found by `an_mcp_server_with_one_value_replaced_fails_alone_and_on_that_field`: a value
/// of the wrong type in a server entry was reported at the entry (`server[1]`: "invalid type:
/// integer `0`, expected a string"), naming no field.
#[test]
fn a_value_of_the_wrong_type_in_an_mcp_server_is_reported_at_its_field() {
    let text = "[[server]]\nname = \"ok\"\ncommand = \"x\"\n\n\
                [[server]]\nname = 0\ncommand = \"x\"\n\n\
                [[server]]\nname = \"c\"\ncommand = \"x\"\nrestart = { period = 5 }\n";
    let (servers, errors) = config::parse(Path::new(MCP), text);
    assert_eq!(servers.len(), 1);
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["server[1].name", "server[2].restart.period"]);
}

#[test]
fn the_valid_files_of_the_mutation_tests_are_valid() {
    manifest::parse(Path::new(MANIFEST), VALID_MANIFEST).unwrap();
    let (servers, errors) = config::parse(Path::new(MCP), VALID_MCP);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(servers.len(), 2);
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_text_gives_a_manifest_or_an_error_naming_the_file_and_where(text in tomlish()) {
        if let Err(e) = manifest::parse(Path::new(MANIFEST), &text) {
            check_manifest_error(&e)?;
        }
    }

    #[test]
    fn any_text_gives_servers_or_errors_naming_the_file_and_where(text in tomlish()) {
        let (_, errors) = config::parse(Path::new(MCP), &text);
        for e in &errors {
            check_mcp_error(e)?;
        }
    }

    #[test]
    fn any_toml_document_as_a_manifest_fails_on_a_field_it_has_or_lacks(doc in document()) {
        let text = text(&doc);
        if let Err(e) = manifest::parse(Path::new(MANIFEST), &text) {
            check_manifest_error(&e)?;
            let ManifestError::Field { field, .. } = &e else {
                return Err(TestCaseError::fail(format!("valid TOML refused as text: {e}\n{text}")));
            };
            prop_assert!(
                field == "." || in_doc(&doc, field) || ["package", "module"].contains(&field.as_str()),
                "{e} names no field of\n{text}"
            );
        }
    }

    #[test]
    fn any_toml_document_as_mcp_toml_fails_on_its_entries_or_the_whole(doc in document()) {
        let text = text(&doc);
        let entries = doc.get("server").and_then(Value::as_array).map_or(0, Vec::len);
        let (servers, errors) = config::parse(Path::new(MCP), &text);
        prop_assert!(servers.len() + errors.len() <= entries.max(1));
        for e in &errors {
            check_mcp_error(e)?;
            prop_assert!(!e.reason.starts_with("not valid TOML"), "{e}\n{text}");
            let index = e.field.strip_prefix("server[").and_then(|rest| {
                rest.split(']').next().and_then(|i| i.parse::<usize>().ok())
            });
            match index {
                Some(i) => prop_assert!(i < entries, "{e}\n{text}"),
                None => prop_assert!(
                    e.field == "." || in_doc(&doc, &e.field),
                    "{e} names no field of\n{text}"
                ),
            }
        }
    }

    #[test]
    fn a_manifest_with_one_value_replaced_fails_only_on_that_field(
        field in prop::sample::select(MANIFEST_FIELDS),
        new in value(),
    ) {
        let mut doc: Table = toml::from_str(VALID_MANIFEST).unwrap();
        set(&mut doc, field, new);
        let text = text(&doc);
        if let Err(e) = manifest::parse(Path::new(MANIFEST), &text) {
            check_manifest_error(&e)?;
            let ManifestError::Field { field: named, .. } = &e else {
                return Err(TestCaseError::fail(format!("valid TOML refused as text: {e}")));
            };
            // A changed grant or topic may be found wanting where it is used: an
            // interceptor or subscription it no longer covers.
            let covered_by_grant = field.starts_with("capabilities.grant")
                && (named.starts_with("interceptor[0]") || named.starts_with("bus.subscribe[0]"));
            prop_assert!(
                named.starts_with(field) || covered_by_grant,
                "changed `{field}`, error names `{named}`: {e}\n{text}"
            );
        }
    }

    #[test]
    fn an_mcp_server_with_one_value_replaced_fails_alone_and_on_that_field(
        field in prop::sample::select(MCP_FIELDS),
        new in value(),
    ) {
        let mut doc: Table = toml::from_str(VALID_MCP).unwrap();
        let path = format!("server[1].{field}");
        set(&mut doc, &path, new);
        let text = text(&doc);
        let (servers, errors) = config::parse(Path::new(MCP), &text);
        prop_assert!(servers.iter().any(|s| s.name == "first"), "{errors:#?}\n{text}");
        prop_assert_eq!(servers.len() + errors.len(), 2, "{:#?}\n{}", errors, text);
        for e in &errors {
            check_mcp_error(e)?;
            // The field path, or the entry with the field named in the reason.
            let key = field.split('.').next_back().unwrap();
            let named = e.field.starts_with(&path)
                || (path.starts_with(&e.field) && e.reason.contains(key));
            prop_assert!(named, "changed `{path}`, error: {e}\n{text}");
        }
    }
}
