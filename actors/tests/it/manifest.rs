//! Tests of the capsule manifest (`Capsule.toml`): a manifest using every field parses into
//! exactly the expected value, a minimal one gets every default, and every way a manifest
//! can be wrong is refused with the right error: TOML syntax, unknown tables and keys, missing
//! fields, wrong types, bad names, versions and module paths, capability grammar, limits out of
//! range on either side, provider topics, interceptor and subscription patterns (invalid, or
//! not covered by a `bus:subscribe:` grant), the restart policy, and `[[config]]` settings. Each error names the file
//! and the field path, and so does its message. `load` is tested on temporary folders: no
//! manifest, no module file, and a module file that exists.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use astrid_actors::capsules::manifest::{
    self, Command, Hook, Limits, Manifest, ManifestError, Package, Restart, SettingDecl,
};
use astrid_actors::mcp::config::ServerConfig;
use astrid_actors::supervisor::{RestartPolicy, RestartType};

/// The file every parsed manifest claims to come from; errors must name it.
const FILE: &str = "/capsules/demo/Capsule.toml";

/// A manifest with the given `[package]` name and version and `[module]` file, then `rest`
/// (which starts with its own table headers).
fn manifest_with(name: &str, version: &str, module: &str, rest: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"{version}\"\n\n\
         [module]\nfile = \"{module}\"\n\n{rest}"
    )
}

/// The minimal manifest, followed by `rest`.
fn minimal_with(rest: &str) -> String {
    manifest_with("demo", "1.0.0", "demo.wasm", rest)
}

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    manifest::parse(Path::new(FILE), text)
}

#[track_caller]
fn parse_ok(text: &str) -> Manifest {
    match parse(text) {
        Ok(manifest) => manifest,
        Err(e) => panic!("expected a valid manifest, got: {e}\n--- manifest ---\n{text}"),
    }
}

/// Asserts that `err` is a `Field` error about `field` of `file`, and that its message names
/// both; returns the reason.
#[track_caller]
fn expect_field(err: ManifestError, file: &Path, field: &str) -> String {
    let shown = err.to_string();
    assert!(
        shown.contains(&file.display().to_string()),
        "message does not name the file: {shown}"
    );
    assert!(
        shown.contains(&format!("`{field}`")),
        "message does not name `{field}`: {shown}"
    );
    match err {
        ManifestError::Field {
            file: f,
            field: path,
            reason,
        } => {
            assert_eq!(f, file);
            assert_eq!(path, field, "wrong field path (reason: {reason})");
            assert!(!reason.is_empty(), "empty reason for `{field}`");
            reason
        }
        other => panic!("expected a field error about `{field}`, got {other:?}"),
    }
}

/// Asserts that `text` is refused because of `field`; returns the reason.
#[track_caller]
fn field_error(text: &str, field: &str) -> String {
    match parse(text) {
        Ok(m) => panic!("expected an error at `{field}`, got {m:?}\n--- manifest ---\n{text}"),
        Err(e) => expect_field(e, Path::new(FILE), field),
    }
}

/// Asserts that `text` is refused because of `field`, with a reason containing `needle`.
#[track_caller]
fn assert_refused(text: &str, field: &str, needle: &str) {
    let reason = field_error(text, field);
    assert!(
        reason.contains(needle),
        "reason for `{field}` lacks {needle:?}: {reason}"
    );
}

const FULL: &str = r#"
[package]
name = "weather-2"
version = "1.2.3-alpha.1+build.5"
description = "Forecasts on demand"

[module]
file = "build/weather.wasm"

[capabilities]
grant = [
    "kv",
    "vfs:read:data/**",
    "vfs:write:out/*.json",
    "bus:publish:weather.>",
    "bus:subscribe:user.>",
    "bus:subscribe:astrid.tick",
    "mcp:call:http/get",
    "ask:net:http:https://api.weather.example",
]

[capabilities.approval_timeout]
"ask:net:http:https://api.weather.example" = "2m"

[limits]
memory_pages = 64
fuel = 5000000
call_timeout = "250ms"

[[command]]
name = "weather"
description = "Show the forecast"

[[command]]
name = "w2"

[[provider]]
topic = "weather.forecast"
priority = 5

[[provider]]
topic = "weather.alerts"

[[interceptor]]
topic = "user.chat.*"
priority = -3

[bus]
subscribe = ["user.>", "astrid.tick"]

[restart]
policy = "permanent"
intensity = 7
period = "30s"
backoff = "100ms"
backoff_max = "2s"

[[mcp_server]]
name = "weather-api"
command = "bin/weather-mcp"
args = ["--stdio"]
env = { UNITS = "metric" }
inherit_env = ["PATH"]
call_timeout = "3s"

[[config]]
name = "api_key"
description = "The forecast service's key"
secret = true
"#;

#[test]
fn a_manifest_using_every_field_parses_exactly() {
    let expected = Manifest {
        package: Package {
            name: "weather-2".into(),
            version: "1.2.3-alpha.1+build.5".into(),
            description: Some("Forecasts on demand".into()),
        },
        module: PathBuf::from("build/weather.wasm"),
        capabilities: [
            "kv",
            "vfs:read:data/**",
            "vfs:write:out/*.json",
            "bus:publish:weather.>",
            "bus:subscribe:user.>",
            "bus:subscribe:astrid.tick",
            "mcp:call:http/get",
            "ask:net:http:https://api.weather.example",
        ]
        .map(String::from)
        .to_vec(),
        approval_timeouts: [(
            "ask:net:http:https://api.weather.example".to_owned(),
            Duration::from_mins(2),
        )]
        .into(),
        limits: Limits {
            memory_pages: 64,
            fuel: 5_000_000,
            call_timeout: Duration::from_millis(250),
        },
        commands: vec![
            Command {
                name: "weather".into(),
                description: Some("Show the forecast".into()),
            },
            Command {
                name: "w2".into(),
                description: None,
            },
        ],
        providers: vec![
            Hook {
                topic: "weather.forecast".into(),
                priority: 5,
            },
            Hook {
                topic: "weather.alerts".into(),
                priority: 100,
            },
        ],
        interceptors: vec![Hook {
            topic: "user.chat.*".into(),
            priority: -3,
        }],
        subscriptions: vec!["user.>".into(), "astrid.tick".into()],
        restart: Restart {
            kind: RestartType::Permanent,
            policy: RestartPolicy {
                intensity: 7,
                period: Duration::from_secs(30),
                backoff_base: Duration::from_millis(100),
                backoff_max: Duration::from_secs(2),
            },
        },
        mcp_servers: vec![ServerConfig {
            name: "weather-api".into(),
            // Relative to the capsule folder.
            command: "/capsules/demo/bin/weather-mcp".into(),
            args: vec!["--stdio".into()],
            env: [("UNITS".to_owned(), "metric".to_owned())].into(),
            inherit_env: vec!["PATH".into()],
            // The capsule folder, unless the entry names one.
            cwd: Some(PathBuf::from("/capsules/demo")),
            call_timeout: Duration::from_secs(3),
            restart: Restart {
                kind: RestartType::Permanent,
                policy: RestartPolicy::default(),
            },
            source: PathBuf::from(FILE),
        }],
        settings: vec![SettingDecl {
            name: "api_key".into(),
            description: Some("The forecast service's key".into()),
            default: None,
            secret: true,
        }],
    };
    assert_eq!(parse_ok(FULL), expected);
}

#[test]
fn mcp_server_entries_are_checked_like_mcp_toml() {
    let server = |extra: &str| {
        minimal_with(&format!(
            "[[mcp_server]]\nname = \"s\"\ncommand = \"x\"\n{extra}\n"
        ))
    };
    assert_eq!(parse_ok(&server("")).mcp_servers.len(), 1);
    for (extra, field) in [
        ("call_timeout = \"never\"", "mcp_server[0].call_timeout"),
        (
            "restart = { policy = \"often\" }",
            "mcp_server[0].restart.policy",
        ),
        (
            "[[mcp_server]]\nname = \"s\"\ncommand = \"y\"",
            "mcp_server[1].name",
        ),
    ] {
        match parse(&server(extra)) {
            Err(e) => drop(expect_field(e, Path::new(FILE), field)),
            Ok(m) => panic!("{extra}: accepted {m:?}"),
        }
    }
    let e = parse(&minimal_with(
        "[[mcp_server]]\nname = \"Bad\"\ncommand = \"x\"\n",
    ))
    .unwrap_err();
    drop(expect_field(e, Path::new(FILE), "mcp_server[0].name"));
}

#[test]
fn a_minimal_manifest_gets_every_default() {
    let m = parse_ok(&minimal_with(""));
    assert_eq!(m.package.name, "demo");
    assert_eq!(m.package.version, "1.0.0");
    assert_eq!(m.package.description, None);
    assert_eq!(m.module, PathBuf::from("demo.wasm"));
    assert!(m.capabilities.is_empty());
    assert_eq!(
        m.limits,
        Limits {
            memory_pages: 16,
            fuel: 10_000_000,
            call_timeout: Duration::from_secs(1),
        }
    );
    assert_eq!(m.limits, Limits::default());
    assert!(m.commands.is_empty());
    assert!(m.providers.is_empty());
    assert!(m.interceptors.is_empty());
    assert!(m.subscriptions.is_empty());
    assert_eq!(m.restart.kind, RestartType::Transient);
    assert_eq!(m.restart.policy, RestartPolicy::default());
    assert_eq!(m.restart, Restart::default());
}

#[test]
fn empty_tables_and_omitted_keys_also_get_the_defaults() {
    let m = parse_ok(&minimal_with(
        "[capabilities]\n[limits]\n[bus]\n[restart]\n\
         [[provider]]\ntopic = \"a.b\"\n\
         [[command]]\nname = \"go\"\n",
    ));
    assert!(m.capabilities.is_empty());
    assert_eq!(m.limits, Limits::default());
    assert!(m.subscriptions.is_empty());
    assert_eq!(m.restart, Restart::default());
    assert_eq!(
        m.providers[0].priority, 100,
        "hook priority defaults to 100"
    );
    assert_eq!(m.commands[0].description, None);
}

#[test]
fn invalid_toml_is_a_syntax_error_naming_the_file() {
    for text in [
        "[package\nname = \"demo\"\n",
        "[package]\nname = \n",
        "[package]\nname = \"demo\"\nname = \"again\"\n",
        "[package]\nname = \"unterminated\n",
        &format!("{}[package]\nname = \"twice\"\n", minimal_with("")),
    ] {
        let err = parse(text).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains(FILE), "{shown}");
        assert!(shown.contains("not valid TOML"), "{shown}");
        match err {
            ManifestError::Syntax { file, reason } => {
                assert_eq!(file, Path::new(FILE));
                assert!(reason.contains("line"), "no line in {reason:?}");
                assert!(!reason.contains('\n'), "reason is not one line: {reason:?}");
            }
            other => panic!("expected a syntax error for {text:?}, got {other:?}"),
        }
    }
}

#[test]
fn unknown_top_level_tables_and_keys_are_refused() {
    for (rest, field) in [
        ("[extra]\nx = 1\n", "extra"),
        ("[[commands]]\nname = \"go\"\n", "commands"),
        ("[limit]\nfuel = 5000\n", "limit"),
        ("[[providers]]\ntopic = \"a\"\n", "providers"),
    ] {
        let reason = field_error(&minimal_with(rest), field);
        assert!(
            reason.contains(&format!("unknown field `{field}`")),
            "{reason}"
        );
    }
    // A stray key before the first table.
    let text = format!("colour = \"red\"\n{}", minimal_with(""));
    assert_refused(&text, "colour", "unknown field `colour`");
}

#[test]
fn unknown_keys_are_refused_inside_every_table() {
    let in_package =
        "[package]\nname = \"demo\"\nversion = \"1.0.0\"\nbogus = 1\n[module]\nfile = \"a.wasm\"\n";
    let in_module =
        "[package]\nname = \"demo\"\nversion = \"1.0.0\"\n[module]\nfile = \"a.wasm\"\nbogus = 1\n";
    let cases = [
        (in_package.to_owned(), "package.bogus"),
        (in_module.to_owned(), "module.bogus"),
        (
            minimal_with("[capabilities]\ngrant = []\nbogus = 1\n"),
            "capabilities.bogus",
        ),
        (minimal_with("[limits]\nbogus = 1\n"), "limits.bogus"),
        (
            minimal_with("[[command]]\nname = \"a\"\n[[command]]\nname = \"b\"\nbogus = 1\n"),
            "command[1].bogus",
        ),
        (
            minimal_with("[[provider]]\ntopic = \"a\"\nbogus = 1\n"),
            "provider[0].bogus",
        ),
        (
            minimal_with("[[interceptor]]\ntopic = \"a\"\nbogus = 1\n"),
            "interceptor[0].bogus",
        ),
        (minimal_with("[bus]\nbogus = 1\n"), "bus.bogus"),
        (minimal_with("[restart]\nbogus = 1\n"), "restart.bogus"),
    ];
    for (text, field) in cases {
        assert_refused(&text, field, "unknown field `bogus`");
    }
}

#[test]
fn missing_required_fields_are_reported_at_their_table() {
    // serde names the table that lacks the field; the field itself is in the reason.
    let module = "[module]\nfile = \"a.wasm\"\n";
    let cases = [
        (
            format!("[package]\nversion = \"1.0.0\"\n{module}"),
            "package",
            "missing field `name`",
        ),
        (
            format!("[package]\nname = \"demo\"\n{module}"),
            "package",
            "missing field `version`",
        ),
        (
            "[package]\nname = \"demo\"\nversion = \"1.0.0\"\n".to_owned(),
            ".",
            "missing field `module`",
        ),
        (
            "[package]\nname = \"demo\"\nversion = \"1.0.0\"\n[module]\n".to_owned(),
            "module",
            "missing field `file`",
        ),
        (module.to_owned(), ".", "missing field `package`"),
        (String::new(), ".", "missing field `package`"),
        (
            minimal_with("[[command]]\ndescription = \"no name\"\n"),
            "command[0]",
            "missing field `name`",
        ),
        (
            minimal_with("[[provider]]\npriority = 1\n"),
            "provider[0]",
            "missing field `topic`",
        ),
        (
            minimal_with("[[interceptor]]\npriority = 1\n"),
            "interceptor[0]",
            "missing field `topic`",
        ),
    ];
    for (text, field, needle) in cases {
        assert_refused(&text, field, needle);
    }
}

#[test]
fn values_of_the_wrong_type_are_refused() {
    let cases = [
        (minimal_with("[limits]\nfuel = \"ten\"\n"), "limits.fuel"),
        (
            minimal_with("[limits]\nmemory_pages = 1.5\n"),
            "limits.memory_pages",
        ),
        (
            minimal_with("[limits]\nmemory_pages = -1\n"),
            "limits.memory_pages",
        ),
        (
            minimal_with("[limits]\ncall_timeout = 5\n"),
            "limits.call_timeout",
        ),
        (
            minimal_with("[capabilities]\ngrant = [\"kv\", 3]\n"),
            "capabilities.grant[1]",
        ),
        (
            minimal_with("[capabilities]\ngrant = \"kv\"\n"),
            "capabilities.grant",
        ),
        (
            minimal_with("[bus]\nsubscribe = \"user.x\"\n"),
            "bus.subscribe",
        ),
        (
            minimal_with("[restart]\nintensity = \"three\"\n"),
            "restart.intensity",
        ),
        (
            minimal_with("[restart]\nintensity = -1\n"),
            "restart.intensity",
        ),
        (minimal_with("[restart]\nperiod = 5\n"), "restart.period"),
        (minimal_with("[restart]\npolicy = 1\n"), "restart.policy"),
        (
            minimal_with("[[provider]]\ntopic = \"a\"\npriority = \"high\"\n"),
            "provider[0].priority",
        ),
        (
            minimal_with("[[provider]]\ntopic = \"a\"\npriority = 99999999999\n"),
            "provider[0].priority",
        ),
        (minimal_with("[[command]]\nname = 5\n"), "command[0].name"),
        (minimal_with("[command]\nname = \"go\"\n"), "command"),
        (
            "[package]\nname = 5\nversion = \"1.0.0\"\n[module]\nfile = \"a.wasm\"\n".to_owned(),
            "package.name",
        ),
        (
            "[package]\nname = \"a\"\nversion = \"1.0.0\"\ndescription = true\n\
             [module]\nfile = \"a.wasm\"\n"
                .to_owned(),
            "package.description",
        ),
        (
            "module = \"a.wasm\"\n[package]\nname = \"a\"\nversion = \"1.0.0\"\n".to_owned(),
            "module",
        ),
    ];
    for (text, field) in cases {
        let reason = field_error(&text, field);
        assert!(
            reason.contains("invalid type") || reason.contains("invalid value"),
            "`{field}`: {reason}"
        );
    }
}

const BAD_NAMES: &[&str] = &[
    "Demo",
    "dEmo",
    "-demo",
    "",
    "my capsule",
    "demo_1",
    "demo.x",
    "démo",
    "demo/x",
];

/// A name of `len` letters (64 is the longest allowed).
fn long_name(len: usize) -> String {
    "a".repeat(len)
}

const GOOD_NAMES: &[&str] = &["a", "7", "0day", "my-capsule-2", "a-", "a--b"];

#[test]
fn package_names_are_checked() {
    let too_long = long_name(65);
    for name in BAD_NAMES.iter().copied().chain([too_long.as_str()]) {
        let text = manifest_with(name, "1.0.0", "a.wasm", "");
        assert_refused(&text, "package.name", &format!("`{name}` must be 1 to 64"));
    }
    let longest = long_name(64);
    for name in GOOD_NAMES.iter().copied().chain([longest.as_str()]) {
        let m = parse_ok(&manifest_with(name, "1.0.0", "a.wasm", ""));
        assert_eq!(m.package.name, name);
    }
}

#[test]
fn command_names_are_checked() {
    let too_long = long_name(65);
    for name in BAD_NAMES.iter().copied().chain([too_long.as_str()]) {
        // The bad name is the second command, so the index must be right.
        let text = minimal_with(&format!(
            "[[command]]\nname = \"ok\"\n[[command]]\nname = \"{name}\"\n"
        ));
        assert_refused(
            &text,
            "command[1].name",
            &format!("`{name}` must be 1 to 64"),
        );
    }
    let longest = long_name(64);
    for name in GOOD_NAMES.iter().copied().chain([longest.as_str()]) {
        let m = parse_ok(&minimal_with(&format!("[[command]]\nname = \"{name}\"\n")));
        assert_eq!(m.commands[0].name, name);
    }
}

#[test]
fn duplicate_command_names_are_refused() {
    let text = minimal_with("[[command]]\nname = \"go\"\n[[command]]\nname = \"go\"\n");
    assert_refused(&text, "command[1].name", "`go` is declared twice");
    let text = minimal_with(
        "[[command]]\nname = \"a\"\n[[command]]\nname = \"b\"\n\
         [[command]]\nname = \"c\"\n[[command]]\nname = \"b\"\n",
    );
    assert_refused(&text, "command[3].name", "`b` is declared twice");
    // The same name as the package is fine.
    parse_ok(&minimal_with("[[command]]\nname = \"demo\"\n"));
}

#[test]
fn versions_must_be_semantic() {
    for version in [
        "1.2",
        "1",
        "01.2.3",
        "1.02.3",
        "1.2.03",
        "1.2.3-",
        "1.2.3+",
        "1.2.3-alpha+",
        "a.b.c",
        "1.2.3.4",
        "",
        "v1.2.3",
        " 1.2.3",
        "1.2.3-alpha..1",
        "1.2.3-al_pha",
        "1.2.3+build+2",
        "1..3",
        "-1.2.3",
    ] {
        let text = manifest_with("demo", version, "a.wasm", "");
        assert_refused(
            &text,
            "package.version",
            &format!("`{version}` is not a semantic version"),
        );
    }
    for version in [
        "0.0.0",
        "1.2.3",
        "10.20.30",
        "1.2.3-alpha",
        "1.2.3-alpha.1+build.5",
        "1.2.3+build",
        "1.2.3+build.2024-01-01",
        "1.0.0-rc-1",
        "1.2.3-0.3.7",
        "1.0.0-x.7.z.92",
    ] {
        let m = parse_ok(&manifest_with("demo", version, "a.wasm", ""));
        assert_eq!(m.package.version, version);
    }
}

#[test]
fn an_empty_prerelease_before_build_metadata_is_refused() {
    let text = manifest_with("demo", "1.2.3-+build", "a.wasm", "");
    field_error(&text, "package.version");
}

#[test]
fn semver_edge_cases_follow_the_specification() {
    // Identifiers may end in `-`; numeric pre-release identifiers may not have leading zeros.
    for version in ["1.2.3-alpha-", "1.2.3+build-", "1.2.3-0", "1.2.3-0a"] {
        let m = parse_ok(&manifest_with("demo", version, "a.wasm", ""));
        assert_eq!(m.package.version, version);
    }
    for version in ["1.2.3-01", "1.2.3-alpha.01"] {
        field_error(
            &manifest_with("demo", version, "a.wasm", ""),
            "package.version",
        );
    }
}

#[test]
fn a_backoff_alone_raises_the_default_ceiling_with_it() {
    let m = parse_ok(&minimal_with("[restart]\nbackoff = \"6s\"\n"));
    assert_eq!(m.restart.policy.backoff_base, Duration::from_secs(6));
    assert_eq!(m.restart.policy.backoff_max, Duration::from_secs(6));
}

#[test]
fn the_listener_name_is_reserved() {
    assert_refused(
        &manifest_with("astrid-capsule-cli", "1.0.0", "a.wasm", ""),
        "package.name",
        "reserved for the built-in listener",
    );
}

#[test]
fn load_refuses_a_module_that_a_symlink_leads_outside_the_folder() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x.wasm"), b"\0asm").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("sub")).unwrap();
    std::fs::write(
        dir.path().join("Capsule.toml"),
        manifest_with("demo", "1.0.0", "sub/x.wasm", ""),
    )
    .unwrap();
    let err = manifest::load(dir.path()).unwrap_err();
    let ManifestError::Field { field, reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(field, "module.file");
    assert!(reason.contains("outside the capsule folder"), "{reason}");
}

#[test]
fn the_module_file_must_be_a_relative_wasm_or_wat_path() {
    for file in [
        "/abs/x.wasm",
        "../x.wasm",
        "sub/../x.wasm",
        "sub/../../x.wat",
        "",
        "sub/",
        "a.wasm/",
    ] {
        let text = manifest_with("demo", "1.0.0", file, "");
        assert_refused(
            &text,
            "module.file",
            &format!("`{file}` must be a relative path inside the capsule folder"),
        );
    }
    for file in ["x.so", "x", "x.wasm.bak", "x.WASM", ".wasm"] {
        let text = manifest_with("demo", "1.0.0", file, "");
        assert_refused(
            &text,
            "module.file",
            &format!("`{file}` must be a `.wasm` module or `.wat` text"),
        );
    }
    for file in ["x.wasm", "x.wat", "sub/dir/x.wat", "./x.wasm"] {
        let m = parse_ok(&manifest_with("demo", "1.0.0", file, ""));
        assert_eq!(m.module, PathBuf::from(file));
    }
}

#[test]
fn each_capability_grammar_error_names_the_grant() {
    for (grant, needle) in [
        ("net:connect:example.com", "expected kv"),
        ("kv:x", "expected kv"),
        ("vfs:exec:a", "expected kv"),
        ("bus:listen:a", "expected kv"),
        ("", "expected kv"),
        ("vfs:read:../secrets", "`..`"),
        ("vfs:write:out/../../x", "`..`"),
        ("vfs:read:/etc/passwd", "relative to the workspace"),
        ("vfs:read:", "the pattern is empty"),
        ("vfs:read:[", "unclosed character class"),
        ("bus:publish:a..b", "empty segment"),
        ("bus:subscribe:a.>.b", "'>' may only be the last segment"),
        ("bus:subscribe:", "it is empty"),
        ("bus:subscribe:us*r", "must be whole segments"),
        ("mcp:call:server", "expected mcp:call:<server>/<tool>"),
        ("mcp:call:/tool", "the pattern is empty"),
        ("mcp:call:server/", "the pattern is empty"),
        ("ask:bus:subscribe:user.>", "grant bus:subscribe outright"),
        ("ask:vfs:read:/etc", "relative to the workspace"),
    ] {
        // The bad grant is the second one, so the index must be right.
        let text = minimal_with(&format!("[capabilities]\ngrant = [\"kv\", \"{grant}\"]\n"));
        assert_refused(&text, "capabilities.grant[1]", needle);
    }
}

#[test]
fn an_approval_timeout_names_an_ask_grant_and_stays_within_bounds() {
    for (table, needle) in [
        ("\"kv\" = \"1m\"", "names no `ask:` grant"),
        ("\"ask:kv\" = \"1h\"", "outside 1s..=10m"),
        ("\"ask:kv\" = \"soon\"", "not a duration"),
    ] {
        let text = minimal_with(&format!(
            "[capabilities]\ngrant = [\"kv\", \"ask:kv\"]\n\n[capabilities.approval_timeout]\n{table}\n"
        ));
        let field = table.split(" = ").next().unwrap();
        assert_refused(
            &text,
            &format!("capabilities.approval_timeout.{field}"),
            needle,
        );
    }
}

#[test]
fn every_capability_kind_is_accepted_as_written() {
    let grants = [
        "kv",
        "vfs:read:**",
        "vfs:read:src/*.rs",
        "vfs:write:out/**",
        "bus:publish:>",
        "bus:publish:weather.*.x",
        "bus:subscribe:user.>",
        "mcp:call:fs/read",
        "mcp:call:*/*",
    ];
    let list = grants.map(|g| format!("\"{g}\"")).join(", ");
    let m = parse_ok(&minimal_with(&format!(
        "[capabilities]\ngrant = [{list}]\n"
    )));
    assert_eq!(m.capabilities, grants);
}

#[test]
fn limits_out_of_range_are_refused() {
    for (limits, field, needle) in [
        (
            "memory_pages = 0",
            "limits.memory_pages",
            "0 is outside 1..=4096",
        ),
        (
            "memory_pages = 4097",
            "limits.memory_pages",
            "4097 is outside 1..=4096",
        ),
        (
            "fuel = 0",
            "limits.fuel",
            "0 is outside 1000..=1000000000000",
        ),
        (
            "fuel = 999",
            "limits.fuel",
            "999 is outside 1000..=1000000000000",
        ),
        (
            "fuel = 1000000000001",
            "limits.fuel",
            "1000000000001 is outside 1000..=1000000000000",
        ),
        (
            "call_timeout = \"0ms\"",
            "limits.call_timeout",
            "is outside 1ms..=1m",
        ),
        (
            "call_timeout = \"999us\"",
            "limits.call_timeout",
            "is outside 1ms..=1m",
        ),
        (
            "call_timeout = \"61s\"",
            "limits.call_timeout",
            "is outside 1ms..=1m",
        ),
        (
            "call_timeout = \"2h\"",
            "limits.call_timeout",
            "is outside 1ms..=1m",
        ),
        (
            "call_timeout = \"soon\"",
            "limits.call_timeout",
            "`soon` is not a duration",
        ),
        (
            "call_timeout = \"\"",
            "limits.call_timeout",
            "`` is not a duration",
        ),
        (
            "call_timeout = \"5\"",
            "limits.call_timeout",
            "`5` is not a duration",
        ),
    ] {
        assert_refused(
            &minimal_with(&format!("[limits]\n{limits}\n")),
            field,
            needle,
        );
    }
}

#[test]
fn limits_at_their_bounds_are_accepted() {
    let limits = |text: &str| parse_ok(&minimal_with(&format!("[limits]\n{text}\n"))).limits;
    assert_eq!(limits("memory_pages = 1").memory_pages, 1);
    assert_eq!(limits("memory_pages = 4096").memory_pages, 4096);
    assert_eq!(limits("fuel = 1000").fuel, 1000);
    assert_eq!(limits("fuel = 1_000_000_000_000").fuel, 1_000_000_000_000);
    let timeout = |text: &str| limits(&format!("call_timeout = \"{text}\"")).call_timeout;
    assert_eq!(timeout("1ms"), Duration::from_millis(1));
    assert_eq!(timeout("1500us"), Duration::from_micros(1500));
    assert_eq!(timeout("60s"), Duration::from_mins(1));
    assert_eq!(timeout("1m"), Duration::from_mins(1));
    assert_eq!(timeout("1s 500ms"), Duration::from_millis(1500));
    // One limit set leaves the others at their defaults.
    let only_fuel = limits("fuel = 5000");
    assert_eq!(only_fuel.memory_pages, Limits::default().memory_pages);
    assert_eq!(only_fuel.call_timeout, Limits::default().call_timeout);
}

#[test]
fn provider_topics_must_be_concrete_topics() {
    for (topic, needle) in [
        ("weather.*", "a topic cannot contain wildcards"),
        ("weather.>", "a topic cannot contain wildcards"),
        ("weather..forecast", "it has an empty segment"),
        (".weather", "it has an empty segment"),
        ("weather.", "it has an empty segment"),
        ("", "it is empty"),
        ("weather forecast", "segments may only hold"),
        ("weather.fore*", "'*' and '>' must be whole segments"),
    ] {
        // The bad topic is the second provider, so the index must be right.
        let text = minimal_with(&format!(
            "[[provider]]\ntopic = \"ok\"\n[[provider]]\ntopic = \"{topic}\"\n"
        ));
        assert_refused(&text, "provider[1].topic", needle);
    }
    let text = minimal_with("[[provider]]\ntopic = \"weather.*\"\n");
    assert_refused(&text, "provider[0].topic", "wildcards");
    // Providers need no bus grant.
    let m = parse_ok(&minimal_with(
        "[[provider]]\ntopic = \"a:b_c-D.9\"\npriority = -1\n",
    ));
    assert_eq!(
        m.providers,
        [Hook {
            topic: "a:b_c-D.9".into(),
            priority: -1
        }]
    );
}

/// Invalid patterns, with what the reason must say.
const BAD_PATTERNS: &[(&str, &str)] = &[
    ("user..chat", "it has an empty segment"),
    ("user.>.x", "'>' may only be the last segment"),
    ("user.ch*t", "'*' and '>' must be whole segments"),
    ("user chat", "segments may only hold"),
    ("", "it is empty"),
];

#[test]
fn interceptor_patterns_must_be_valid() {
    for (pattern, needle) in BAD_PATTERNS {
        let text = minimal_with(&format!(
            "[capabilities]\ngrant = [\"bus:subscribe:>\"]\n\
             [[interceptor]]\ntopic = \"user.x\"\n[[interceptor]]\ntopic = \"{pattern}\"\n"
        ));
        assert_refused(&text, "interceptor[1].topic", needle);
    }
}

#[test]
fn bus_subscriptions_must_be_valid() {
    for (pattern, needle) in BAD_PATTERNS {
        let text = minimal_with(&format!(
            "[capabilities]\ngrant = [\"bus:subscribe:>\"]\n\
             [bus]\nsubscribe = [\"user.x\", \"{pattern}\"]\n"
        ));
        assert_refused(&text, "bus.subscribe[1]", needle);
    }
}

/// Grants and patterns no grant covers.
const UNCOVERED: &[(&[&str], &str)] = &[
    (&[], "user.chat"),
    (&["bus:publish:>"], "user.chat"),
    (&["kv", "vfs:read:**"], "user.chat"),
    (&["bus:subscribe:user.*"], "user.>"),
    (&["bus:subscribe:user.*"], "user.chat.x"),
    (&["bus:subscribe:user.>"], "user"),
    (&["bus:subscribe:user.>"], "astrid.tick"),
    (&["bus:subscribe:user.chat"], "user.*"),
    (&["bus:subscribe:*"], "user.chat"),
    (&["bus:subscribe:a.>", "bus:subscribe:b.*"], "b.x.y"),
];

fn grant_list(grants: &[&str]) -> String {
    let quoted: Vec<String> = grants.iter().map(|g| format!("\"{g}\"")).collect();
    format!("[capabilities]\ngrant = [{}]\n", quoted.join(", "))
}

#[test]
fn uncovered_interceptors_are_refused() {
    for (grants, pattern) in UNCOVERED {
        let text = minimal_with(&format!(
            "{}[[interceptor]]\ntopic = \"{pattern}\"\n",
            grant_list(grants)
        ));
        assert_refused(
            &text,
            "interceptor[0].topic",
            &format!("`{pattern}` is not covered by a `bus:subscribe:` capability"),
        );
    }
}

#[test]
fn uncovered_subscriptions_are_refused() {
    for (grants, pattern) in UNCOVERED {
        let text = minimal_with(&format!(
            "{}[bus]\nsubscribe = [\"{pattern}\"]\n",
            grant_list(grants)
        ));
        assert_refused(
            &text,
            "bus.subscribe[0]",
            &format!("`{pattern}` is not covered by a `bus:subscribe:` capability"),
        );
    }
}

#[test]
fn covered_interceptors_and_subscriptions_are_accepted() {
    for (grants, pattern) in [
        (&["bus:subscribe:user.>"][..], "user.chat.*"),
        (&["bus:subscribe:user.>"], "user.x"),
        (&["bus:subscribe:user.>"], "user.>"),
        (&["bus:subscribe:user.>"], "user.*.x.>"),
        (&["bus:subscribe:user.*"], "user.chat"),
        (&["bus:subscribe:user.*"], "user.*"),
        (&["bus:subscribe:astrid.tick"], "astrid.tick"),
        (&["bus:subscribe:>"], "anything.at.all"),
        (&["bus:subscribe:>"], ">"),
        (&["bus:subscribe:*"], "a"),
        (&["kv", "bus:subscribe:a.>", "bus:subscribe:b.*"], "b.x"),
    ] {
        let text = minimal_with(&format!(
            "{}[[interceptor]]\ntopic = \"{pattern}\"\n[bus]\nsubscribe = [\"{pattern}\"]\n",
            grant_list(grants)
        ));
        let m = parse_ok(&text);
        assert_eq!(m.interceptors[0].topic, pattern);
        assert_eq!(m.interceptors[0].priority, 100);
        assert_eq!(m.subscriptions, [pattern]);
    }
}

#[test]
fn each_restart_policy_parses() {
    for (policy, kind) in [
        ("permanent", RestartType::Permanent),
        ("transient", RestartType::Transient),
        ("temporary", RestartType::Temporary),
    ] {
        let m = parse_ok(&minimal_with(&format!(
            "[restart]\npolicy = \"{policy}\"\n"
        )));
        assert_eq!(m.restart.kind, kind);
        assert_eq!(m.restart.policy, RestartPolicy::default());
    }
}

#[test]
fn restart_values_are_checked() {
    for (restart, field, needle) in [
        (
            "policy = \"always\"",
            "restart.policy",
            "`always` is not one of permanent, transient, temporary",
        ),
        (
            "policy = \"Permanent\"",
            "restart.policy",
            "`Permanent` is not one of",
        ),
        ("policy = \"\"", "restart.policy", "`` is not one of"),
        ("intensity = 1001", "restart.intensity", "1001 is over 1000"),
        (
            "period = \"0s\"",
            "restart.period",
            "must be longer than zero",
        ),
        (
            "period = \"0ms\"",
            "restart.period",
            "must be longer than zero",
        ),
        (
            "period = \"soon\"",
            "restart.period",
            "`soon` is not a duration",
        ),
        (
            "backoff = \"fast\"",
            "restart.backoff",
            "`fast` is not a duration",
        ),
        (
            "backoff_max = \"5 parsecs\"",
            "restart.backoff_max",
            "`5 parsecs` is not a duration",
        ),
        (
            "backoff = \"2s\"\nbackoff_max = \"1s\"",
            "restart.backoff_max",
            "must not be shorter than restart.backoff",
        ),
        (
            "backoff_max = \"10ms\"",
            "restart.backoff_max",
            "must not be shorter than restart.backoff",
        ),
        ("period = \"25h\"", "restart.period", "is longer than 1day"),
        ("backoff = \"2h\"", "restart.backoff", "is longer than 1h"),
        (
            "backoff_max = \"61m\"",
            "restart.backoff_max",
            "is longer than 1h",
        ),
    ] {
        assert_refused(
            &minimal_with(&format!("[restart]\n{restart}\n")),
            field,
            needle,
        );
    }
}

#[test]
fn restart_values_at_their_bounds_are_accepted() {
    let policy = |text: &str| parse_ok(&minimal_with(&format!("[restart]\n{text}\n"))).restart;
    assert_eq!(policy("intensity = 1000").policy.intensity, 1000);
    assert_eq!(policy("intensity = 0").policy.intensity, 0);
    assert_eq!(
        policy("period = \"1ms\"").policy.period,
        Duration::from_millis(1)
    );
    let equal = policy("backoff = \"1s\"\nbackoff_max = \"1s\"").policy;
    assert_eq!(equal.backoff_base, Duration::from_secs(1));
    assert_eq!(equal.backoff_max, Duration::from_secs(1));
    let zero = policy("backoff = \"0s\"\nbackoff_max = \"0s\"").policy;
    assert_eq!(zero.backoff_base, Duration::ZERO);
    assert_eq!(zero.backoff_max, Duration::ZERO);
    // Setting some values leaves the kind and the others at their defaults.
    let some = policy("intensity = 9\nbackoff_max = \"10s\"");
    assert_eq!(some.kind, RestartType::Transient);
    assert_eq!(
        some.policy,
        RestartPolicy {
            intensity: 9,
            backoff_max: Duration::from_secs(10),
            ..RestartPolicy::default()
        }
    );
}

#[test]
fn load_reports_a_missing_manifest_as_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Capsule.toml");
    let err = manifest::load(dir.path()).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains(&file.display().to_string()), "{shown}");
    assert!(shown.contains("cannot be read"), "{shown}");
    match err {
        ManifestError::Unreadable { file: f, reason } => {
            assert_eq!(f, file);
            assert!(!reason.is_empty());
        }
        other => panic!("expected Unreadable, got {other:?}"),
    }
}

#[test]
fn load_requires_the_module_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Capsule.toml");
    std::fs::write(&file, minimal_with("")).unwrap();
    let reason = expect_field(
        manifest::load(dir.path()).unwrap_err(),
        &file,
        "module.file",
    );
    assert!(reason.contains("demo.wasm"), "{reason}");
    assert!(reason.contains("does not exist"), "{reason}");
    // A directory of that name is not a module file.
    std::fs::create_dir(dir.path().join("demo.wasm")).unwrap();
    let reason = expect_field(
        manifest::load(dir.path()).unwrap_err(),
        &file,
        "module.file",
    );
    assert!(reason.contains("does not exist"), "{reason}");
}

#[test]
fn load_validates_before_looking_for_the_module() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Capsule.toml");
    std::fs::write(&file, minimal_with("[limits]\nfuel = 1\n")).unwrap();
    std::fs::write(dir.path().join("demo.wasm"), b"\0asm").unwrap();
    expect_field(
        manifest::load(dir.path()).unwrap_err(),
        &file,
        "limits.fuel",
    );
    std::fs::write(&file, "not toml [").unwrap();
    match manifest::load(dir.path()) {
        Err(ManifestError::Syntax { file: f, .. }) => assert_eq!(f, file),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn load_succeeds_when_the_module_file_exists() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Capsule.toml"), minimal_with("")).unwrap();
    std::fs::write(dir.path().join("demo.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let m = manifest::load(dir.path()).unwrap();
    assert_eq!(m, parse_ok(&minimal_with("")));

    // A module in a subfolder, as text.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Capsule.toml"),
        manifest_with("nested", "0.1.0", "sub/dir/x.wat", ""),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("sub/dir")).unwrap();
    std::fs::write(dir.path().join("sub/dir/x.wat"), "(module)").unwrap();
    let m = manifest::load(dir.path()).unwrap();
    assert_eq!(m.package.name, "nested");
    assert_eq!(m.module, PathBuf::from("sub/dir/x.wat"));
}

#[test]
fn settings_are_declared_with_defaults_and_secrets_and_checked() {
    let m = parse_ok(&minimal_with(
        "[[config]]\nname = \"region\"\ndescription = \"Where\"\ndefault = \"eu\"\n\n\
         [[config]]\nname = \"api_key\"\nsecret = true\n",
    ));
    assert_eq!(m.settings.len(), 2);
    assert_eq!(m.settings[0].default.as_deref(), Some("eu"));
    assert!(!m.settings[0].required() && !m.settings[0].secret);
    assert!(m.settings[1].required() && m.settings[1].secret);
    assert!(parse_ok(&minimal_with("")).settings.is_empty());

    assert_refused(
        &minimal_with("[[config]]\nname = \"Key\"\n"),
        "config[0].name",
        "lowercase",
    );
    assert_refused(
        &minimal_with("[[config]]\nname = \"k\"\n\n[[config]]\nname = \"k\"\n"),
        "config[1].name",
        "declared twice",
    );
    assert_refused(
        &minimal_with("[[config]]\nname = \"k\"\nsecret = true\ndefault = \"x\"\n"),
        "config[0].default",
        "not secret",
    );
    let long = "x".repeat(64 * 1024 + 1);
    assert_refused(
        &minimal_with(&format!("[[config]]\nname = \"k\"\ndefault = \"{long}\"\n")),
        "config[0].default",
        "at most 65536",
    );
    let many = (0..257).fold(String::new(), |mut all, i| {
        let _ = writeln!(all, "[[config]]\nname = \"k{i}\"\n");
        all
    });
    assert_refused(&minimal_with(&many), "config", "at most 256");
    field_error(
        &minimal_with("[[config]]\nname = \"k\"\nhidden = true\n"),
        "config[0].hidden",
    );
}
