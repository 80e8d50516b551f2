//! Property tests of workspace paths against capability grants. For any string, parsing
//! and matching never panic, and a path is allowed exactly when its normal form is. For
//! any path `VfsPath::parse` accepts, every spelling of it (`./` components, doubled `/`,
//! a trailing `/`) parses to the same path, is allowed by exactly the same grants and is
//! reserved exactly when the path is. No grant ever allows a path with `..`, an absolute
//! path, or one in `.astrid/`, in any case. Case counts are bounded: this runs in seconds.

use astrid_actors::caps::resource::{Access, ResourcePattern};
use astrid_actors::vfs::path::{Reserved, VfsPath};
use proptest::prelude::*;

/// Globs of every shape: wildcards within and across directories, classes, `.astrid`.
const GLOBS: &[&str] = &[
    "**",
    "*",
    "*/*",
    "*/secret.txt",
    "data/*/x",
    "a/**",
    "**/x",
    "a/b",
    "[ab]/?",
    ".astrid/**",
    ".*/**",
    "*/.astrid/*",
];

fn grants() -> Vec<(String, ResourcePattern)> {
    GLOBS
        .iter()
        .flat_map(|g| [format!("vfs:read:{g}"), format!("vfs:write:{g}")])
        .map(|g| {
            let pattern = ResourcePattern::parse(&g).unwrap();
            (g, pattern)
        })
        .collect()
}

/// Which grants allow reading and writing `raw`, in the order of [`grants`].
fn verdicts(grants: &[(String, ResourcePattern)], raw: &str) -> Vec<bool> {
    grants
        .iter()
        .map(|(g, p)| {
            let access = if g.starts_with("vfs:read:") {
                Access::VfsRead(raw.to_owned())
            } else {
                Access::VfsWrite(raw.to_owned())
            };
            p.allows(&access)
        })
        .collect()
}

/// One normal component: a few names the globs care about, or short arbitrary text
/// (with glob characters, dots, spaces and non-ASCII, but no `/` or NUL).
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("x".to_owned()),
        Just("data".to_owned()),
        Just("secret.txt".to_owned()),
        Just("...".to_owned()),
        Just(".astridx".to_owned()),
        "[a-z.*?é \\[\\]{}!]{1,5}".prop_filter("not . or ..", |c| c != "." && c != ".."),
    ]
}

/// `.astrid` in any mix of cases.
fn config_dir() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<bool>(), 7).prop_map(|upper| {
        ".astrid"
            .chars()
            .zip(upper)
            .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

/// A way of writing a separator: `/`, `//`, `/./`, `/.//./`...
fn separator() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![Just("/"), Just("./"), Just("/")], 0..3)
        .prop_map(|parts| format!("/{}", parts.concat()))
}

/// `components` written with the separators `seps`, an optional `./` before and `/`
/// after.
fn spell(components: &[String], seps: &[String], lead: bool, trail: bool) -> String {
    let mut raw = String::new();
    if lead {
        raw.push_str("./");
    }
    for (i, c) in components.iter().enumerate() {
        if i > 0 {
            raw.push_str(&seps[i % seps.len()]);
        }
        raw.push_str(c);
    }
    if trail {
        raw.push('/');
    }
    raw
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Anything at all: no panic, and a verdict that is the normal form's.
    #[test]
    fn any_string_is_judged_as_its_normal_form(raw in "(\\PC|/|\\.|\\x00){0,40}") {
        let grants = grants();
        let got = verdicts(&grants, &raw);
        match VfsPath::parse(&raw) {
            Ok(path) => {
                let normal = path.as_str();
                prop_assert!(!normal.starts_with('/'));
                if !path.is_root() {
                    prop_assert!(normal.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
                }
                prop_assert_eq!(VfsPath::parse(normal).unwrap(), path.clone());
                prop_assert_eq!(&got, &verdicts(&grants, normal));
            }
            Err(_) => prop_assert!(got.iter().all(|allowed| !allowed), "{raw:?}: {got:?}"),
        }
    }

    /// Every spelling of a path is the same path, with the same verdicts.
    #[test]
    fn every_spelling_gets_the_same_verdict(
        components in proptest::collection::vec(component(), 1..5),
        seps in proptest::collection::vec(separator(), 1..4),
        lead: bool,
        trail: bool,
    ) {
        let grants = grants();
        let normal = components.join("/");
        let raw = spell(&components, &seps, lead, trail);
        let path = VfsPath::parse(&raw).unwrap();
        prop_assert_eq!(path.as_str(), normal.as_str());
        prop_assert_eq!(verdicts(&grants, &raw), verdicts(&grants, &normal));
        let home = Reserved::with_home("/w".as_ref(), "/w/a/b".as_ref());
        prop_assert_eq!(
            home.covers(&path),
            home.covers(&VfsPath::parse(&normal).unwrap())
        );
    }

    /// A `..` anywhere, or a leading `/`, is never allowed.
    #[test]
    fn parent_and_absolute_paths_are_never_allowed(
        components in proptest::collection::vec(component(), 0..4),
        at in 0usize..5,
        seps in proptest::collection::vec(separator(), 1..3),
    ) {
        let grants = grants();
        let mut with_parent = components.clone();
        with_parent.insert(at.min(components.len()), "..".to_owned());
        let raw = spell(&with_parent, &seps, false, false);
        prop_assert!(VfsPath::parse(&raw).is_err());
        prop_assert!(verdicts(&grants, &raw).iter().all(|a| !a), "{raw}");
        let absolute = format!("/{}", spell(&components, &seps, false, false));
        prop_assert!(VfsPath::parse(&absolute).is_err());
        prop_assert!(verdicts(&grants, &absolute).iter().all(|a| !a), "{absolute}");
    }

    /// Nothing in `.astrid/`, however written, is allowed, and all of it is reserved.
    #[test]
    fn the_config_dir_is_never_allowed(
        dir in config_dir(),
        rest in proptest::collection::vec(component(), 0..4),
        seps in proptest::collection::vec(separator(), 1..3),
        lead: bool,
        trail: bool,
    ) {
        let grants = grants();
        let mut components = vec![dir];
        components.extend(rest);
        let raw = spell(&components, &seps, lead, trail);
        prop_assert!(verdicts(&grants, &raw).iter().all(|a| !a), "{raw}");
        prop_assert!(Reserved::default().covers(&VfsPath::parse(&raw).unwrap()), "{raw}");
    }
}
