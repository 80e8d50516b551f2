//! Actor-level tests of the capability store (no socket), against real redb files in
//! temporary directories: deny by default, runtime grants allowing exactly what their
//! pattern covers (kv, vfs globs, bus topics, MCP tools), revocation, persistence across
//! actors, manifest grants (listed, replaced, not revocable), invalid subjects and
//! resources, every denial written to the audit log through the `ChildRef` the store was
//! given, and a grant that cannot be stored (a full disk, injected through a failing storage
//! backend) failing without taking effect. The audit actor runs over a ledger of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{DbFile, Disk, SESSION, close, eventually};
use actix::{Actor, Addr};
use astrid_actors::audit::chain::Entry;
use astrid_actors::audit::{self, AuditActor, AuditHealth, Tail, VerifyChain};
use astrid_actors::caps::resource::Access;
use astrid_actors::caps::{
    CapabilitiesActor, CapsError, Check, Grant, GrantCapability, GrantSource, ListCapabilities,
    RevokeCapability, SetManifestGrants, Verdict, prepare,
};
use astrid_actors::db::Db;
use astrid_actors::supervisor::{ChildRef, Terminate};

/// A capability store over a fresh database, auditing to an audit actor of its own.
struct Fixture {
    file: DbFile,
    db: Arc<Db>,
    disk: Disk,
    _audit_file: DbFile,
    audit: Addr<AuditActor>,
    caps: Addr<CapabilitiesActor>,
}

impl Fixture {
    fn new() -> Self {
        let audit_file = DbFile::new();
        let (ledger, _) = audit_file.open_ledger(SESSION);
        let health = Arc::new(AuditHealth::new(ledger.read(audit::verify_db).unwrap()));
        let audit = AuditActor::new(ledger, health).start();
        let file = DbFile::new();
        let (db, disk) = file.open(prepare);
        let caps = start_caps(&db, &audit);
        Self {
            file,
            db,
            disk,
            _audit_file: audit_file,
            audit,
            caps,
        }
    }

    async fn grant(&self, subject: &str, resource: &str) -> Result<Grant, CapsError> {
        self.caps
            .send(GrantCapability {
                subject: subject.into(),
                resource: resource.into(),
            })
            .await
            .unwrap()
    }

    async fn revoke(&self, subject: &str, resource: &str) -> Result<bool, CapsError> {
        self.caps
            .send(RevokeCapability {
                subject: subject.into(),
                resource: resource.into(),
            })
            .await
            .unwrap()
    }

    async fn manifest(&self, subject: &str, resources: &[&str]) -> Result<(), CapsError> {
        self.caps
            .send(SetManifestGrants {
                subject: subject.into(),
                resources: resources.iter().map(|r| (*r).to_owned()).collect(),
                approval_timeouts: BTreeMap::new(),
            })
            .await
            .unwrap()
    }

    async fn list(&self, subject: Option<&str>) -> Vec<Grant> {
        list(&self.caps, subject).await
    }

    async fn check(&self, subject: &str, access: Access) -> bool {
        check(&self.caps, subject, access).await
    }

    /// The last `n` audit entries.
    async fn audited(&self, n: usize) -> Vec<Entry> {
        self.audit
            .send(Tail { n, from: None })
            .await
            .unwrap()
            .unwrap()
    }

    /// Waits until the audit log holds `count` entries, and returns them.
    async fn audit_log_of(&self, count: usize) -> Vec<Entry> {
        eventually(&format!("{count} audit entries"), || async move {
            let entries = self.audited(usize::MAX).await;
            (entries.len() >= count).then_some(entries)
        })
        .await
    }
}

fn start_caps(db: &Arc<Db>, audit: &Addr<AuditActor>) -> Addr<CapabilitiesActor> {
    CapabilitiesActor::new(Arc::clone(db), ChildRef::with("audit", audit.clone()))
        .unwrap()
        .start()
}

async fn list(caps: &Addr<CapabilitiesActor>, subject: Option<&str>) -> Vec<Grant> {
    caps.send(ListCapabilities {
        subject: subject.map(str::to_owned),
    })
    .await
    .unwrap()
}

async fn check(caps: &Addr<CapabilitiesActor>, subject: &str, access: Access) -> bool {
    verdict(caps, subject, access).await == Verdict::Allowed
}

async fn verdict(caps: &Addr<CapabilitiesActor>, subject: &str, access: Access) -> Verdict {
    caps.send(Check {
        subject: subject.into(),
        access,
    })
    .await
    .unwrap()
}

fn resources(grants: &[Grant]) -> Vec<(&str, &str, GrantSource)> {
    grants
        .iter()
        .map(|g| (g.subject.as_str(), g.resource.as_str(), g.source))
        .collect()
}

fn read(path: &str) -> Access {
    Access::VfsRead(path.into())
}

fn write(path: &str) -> Access {
    Access::VfsWrite(path.into())
}

fn publish(topic: &str) -> Access {
    Access::BusPublish(topic.into())
}

fn subscribe(pattern: &str) -> Access {
    Access::BusSubscribe(pattern.into())
}

fn mcp(server: &str, tool: &str) -> Access {
    Access::McpCall {
        server: server.into(),
        tool: tool.into(),
    }
}

/// One access of every kind.
fn every_kind() -> Vec<Access> {
    vec![
        Access::Kv,
        read("a.txt"),
        write("a.txt"),
        publish("user.note"),
        subscribe("user.>"),
        mcp("fs", "read"),
    ]
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn everything_is_denied_by_default() {
    let f = Fixture::new();
    assert!(f.list(None).await.is_empty());
    for access in every_kind() {
        assert!(!f.check("echo", access.clone()).await, "{access} is denied");
    }
}

#[actix_rt::test]
async fn an_ask_grant_asks_unless_a_grant_given_outright_covers_the_same() {
    let f = Fixture::new();
    f.caps
        .send(SetManifestGrants {
            subject: "echo".into(),
            resources: vec!["ask:kv".into(), "ask:vfs:read:**".into()],
            approval_timeouts: [("ask:kv".to_owned(), Duration::from_secs(30))].into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        verdict(&f.caps, "echo", Access::Kv).await,
        Verdict::Ask {
            grant: "ask:kv".into(),
            timeout: Some(Duration::from_secs(30)),
        }
    );
    assert_eq!(
        verdict(&f.caps, "echo", read("a")).await,
        Verdict::Ask {
            grant: "ask:vfs:read:**".into(),
            timeout: None,
        }
    );
    assert_eq!(verdict(&f.caps, "echo", write("a")).await, Verdict::Denied);
    assert_eq!(verdict(&f.caps, "other", Access::Kv).await, Verdict::Denied);
    // `always`: the grant given outright wins over the question.
    f.grant("echo", "kv").await.unwrap();
    assert_eq!(verdict(&f.caps, "echo", Access::Kv).await, Verdict::Allowed);
    // A runtime `ask:` grant too; a subscription cannot wait for an answer.
    f.grant("other", "ask:kv").await.unwrap();
    assert!(matches!(
        verdict(&f.caps, "other", Access::Kv).await,
        Verdict::Ask { .. }
    ));
    let refused = f
        .grant("other", "ask:bus:subscribe:user.>")
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("grant bus:subscribe outright"),
        "{refused}"
    );
}

#[actix_rt::test]
async fn a_runtime_grant_allows_exactly_what_its_pattern_covers() {
    let f = Fixture::new();
    let cases: Vec<(&str, Vec<(Access, bool)>)> = vec![
        (
            "kv",
            vec![
                (Access::Kv, true),
                (read("kv"), false),
                (publish("kv"), false),
            ],
        ),
        (
            "vfs:read:src/*.rs",
            vec![
                (read("src/main.rs"), true),
                (read("src/lib.rs"), true),
                (read("src/a/b.rs"), false),
                (read("src/main.txt"), false),
                (read("main.rs"), false),
                (write("src/main.rs"), false),
            ],
        ),
        (
            "vfs:write:out/**",
            vec![
                (write("out/x"), true),
                (write("out/a/b/c.txt"), true),
                (write("outside/x"), false),
                (write("src/out/x"), false),
                (read("out/x"), false),
            ],
        ),
        (
            "bus:publish:user.>",
            vec![
                (publish("user.note"), true),
                (publish("user.a.b"), true),
                (publish("user"), false),
                (publish("astrid.user.note"), false),
                (subscribe("user.note"), false),
            ],
        ),
        (
            "bus:subscribe:news.*",
            vec![
                (subscribe("news.sport"), true),
                (subscribe("news.*"), true),
                (subscribe("news.>"), false),
                (subscribe("news.sport.local"), false),
                (subscribe("weather.*"), false),
                (publish("news.sport"), false),
            ],
        ),
        (
            "mcp:call:fs/read_*",
            vec![
                (mcp("fs", "read_file"), true),
                (mcp("fs", "read_dir"), true),
                (mcp("fs", "write_file"), false),
                (mcp("git", "read_file"), false),
            ],
        ),
        (
            "mcp:call:*/search",
            vec![
                (mcp("web", "search"), true),
                (mcp("docs", "search"), true),
                (mcp("web", "fetch"), false),
            ],
        ),
    ];
    // Each case gets its own subject, so the grants do not add up.
    for (i, (resource, expectations)) in cases.into_iter().enumerate() {
        let subject = format!("capsule-{i}");
        for (access, _) in &expectations {
            assert!(!f.check(&subject, access.clone()).await, "denied before");
        }
        let grant = f.grant(&subject, resource).await.unwrap();
        assert_eq!(
            (
                grant.subject.as_str(),
                grant.resource.as_str(),
                grant.source
            ),
            (subject.as_str(), resource, GrantSource::Runtime)
        );
        assert!(grant.granted_ms > 0);
        for (access, allowed) in expectations {
            assert_eq!(
                f.check(&subject, access.clone()).await,
                allowed,
                "`{resource}` {} {access}",
                if allowed { "allows" } else { "does not allow" }
            );
        }
        for access in every_kind() {
            assert!(
                !f.check("other", access.clone()).await,
                "a grant to {subject} gives `other` nothing ({access})"
            );
        }
    }
}

#[actix_rt::test]
async fn granting_twice_is_idempotent_and_grants_add_up() {
    let f = Fixture::new();
    let first = f.grant("echo", "vfs:read:docs/**").await.unwrap();
    let again = f.grant("echo", "vfs:read:docs/**").await.unwrap();
    assert_eq!(first, again, "the existing grant is returned unchanged");
    f.grant("echo", "kv").await.unwrap();
    f.grant("other", "kv").await.unwrap();
    assert_eq!(
        resources(&f.list(Some("echo")).await),
        [
            ("echo", "kv", GrantSource::Runtime),
            ("echo", "vfs:read:docs/**", GrantSource::Runtime)
        ]
    );
    assert_eq!(f.list(None).await.len(), 3);
    assert!(f.list(Some("nobody")).await.is_empty());
    assert!(f.check("echo", Access::Kv).await);
    assert!(f.check("echo", read("docs/a/b.md")).await);
}

#[actix_rt::test]
async fn revoking_a_grant_removes_it() {
    let f = Fixture::new();
    f.grant("echo", "kv").await.unwrap();
    f.grant("echo", "vfs:read:**").await.unwrap();
    assert!(f.check("echo", Access::Kv).await);

    assert!(f.revoke("echo", "kv").await.unwrap(), "it existed");
    assert!(!f.check("echo", Access::Kv).await);
    assert!(f.check("echo", read("x")).await, "the other grant stays");
    assert!(!f.revoke("echo", "kv").await.unwrap(), "already gone");
    assert!(
        !f.revoke("echo", "vfs:read:*").await.unwrap(),
        "revocation names the resource exactly as granted"
    );
    assert!(!f.revoke("other", "vfs:read:**").await.unwrap());
    assert!(f.check("echo", read("x")).await);
    assert_eq!(
        resources(&f.list(None).await),
        [("echo", "vfs:read:**", GrantSource::Runtime)]
    );
}

#[actix_rt::test]
async fn runtime_grants_persist_for_a_new_actor_over_the_same_database() {
    let f = Fixture::new();
    f.grant("echo", "kv").await.unwrap();
    f.grant("echo", "bus:publish:echo.>").await.unwrap();
    f.grant("other", "mcp:call:fs/*").await.unwrap();
    f.revoke("echo", "kv").await.unwrap();
    f.manifest("echo", &["vfs:read:**"]).await.unwrap();
    let before = f.list(None).await;
    f.caps.send(Terminate).await.unwrap();

    let caps = start_caps(&f.db, &f.audit);
    let after = list(&caps, None).await;
    let runtime: Vec<Grant> = before
        .into_iter()
        .filter(|g| g.source == GrantSource::Runtime)
        .collect();
    assert_eq!(
        after, runtime,
        "runtime grants persist, manifest grants do not"
    );
    assert!(check(&caps, "echo", publish("echo.x")).await);
    assert!(check(&caps, "other", mcp("fs", "stat")).await);
    assert!(
        !check(&caps, "echo", Access::Kv).await,
        "the revocation persists too"
    );

    // And after reopening the file.
    caps.send(Terminate).await.unwrap();
    close(f.db).await;
    let db = f.file.open_plain(prepare);
    let caps = start_caps(&db, &f.audit);
    assert_eq!(list(&caps, None).await, runtime);
}

// ---------------------------------------------------------------------------------------
// Manifest grants
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn manifest_grants_are_listed_replaced_and_cannot_be_revoked() {
    let f = Fixture::new();
    f.grant("echo", "mcp:call:fs/read").await.unwrap();
    f.manifest("echo", &["kv", "vfs:read:**"]).await.unwrap();
    f.manifest("other", &["kv"]).await.unwrap();
    assert_eq!(
        resources(&f.list(Some("echo")).await),
        [
            ("echo", "kv", GrantSource::Manifest),
            ("echo", "mcp:call:fs/read", GrantSource::Runtime),
            ("echo", "vfs:read:**", GrantSource::Manifest)
        ]
    );
    assert!(f.check("echo", Access::Kv).await);
    assert!(f.check("echo", read("a/b")).await);

    match f.revoke("echo", "kv").await {
        Err(CapsError::FromManifest { subject, resource }) => {
            assert_eq!((subject.as_str(), resource.as_str()), ("echo", "kv"));
        }
        other => panic!("expected FromManifest, got {other:?}"),
    }
    assert!(f.check("echo", Access::Kv).await, "still granted");

    // The next load replaces the manifest grants, and only those of this subject.
    f.manifest("echo", &["bus:publish:echo.>"]).await.unwrap();
    assert_eq!(
        resources(&f.list(Some("echo")).await),
        [
            ("echo", "bus:publish:echo.>", GrantSource::Manifest),
            ("echo", "mcp:call:fs/read", GrantSource::Runtime)
        ]
    );
    assert!(!f.check("echo", Access::Kv).await);
    assert!(!f.check("echo", read("a/b")).await);
    assert!(f.check("echo", publish("echo.out")).await);
    assert!(
        f.check("echo", mcp("fs", "read")).await,
        "runtime grants stay"
    );
    assert!(
        f.check("other", Access::Kv).await,
        "other subjects are untouched"
    );

    // An empty manifest clears them.
    f.manifest("echo", &[]).await.unwrap();
    assert_eq!(
        resources(&f.list(Some("echo")).await),
        [("echo", "mcp:call:fs/read", GrantSource::Runtime)]
    );

    // Manifest grants are audited as grants by the kernel (the two denials above are there
    // too, after them).
    let log = f.audit_log_of(6).await;
    let denials = log.iter().filter(|e| e.action == "deny").count();
    assert_eq!(denials, 2, "{log:#?}");
    let grants: Vec<(&str, &str, &str)> = log
        .iter()
        .filter(|e| e.action == "grant")
        .map(|e| (e.actor.as_str(), e.target.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        grants,
        [
            ("kernel", "echo:kv", "ok (manifest)"),
            ("kernel", "echo:vfs:read:**", "ok (manifest)"),
            ("kernel", "other:kv", "ok (manifest)"),
            ("kernel", "echo:bus:publish:echo.>", "ok (manifest)")
        ]
    );
}

/// A resource can be held twice, from the API and from the manifest; revoking the runtime
/// grant must leave the manifest grant (which only a manifest reload removes) in effect.
#[actix_rt::test]
async fn revoking_a_runtime_grant_keeps_a_manifest_grant_of_the_same_resource() {
    let f = Fixture::new();
    f.grant("echo", "kv").await.unwrap();
    f.manifest("echo", &["kv"]).await.unwrap();
    let grants = f.list(Some("echo")).await;
    let mut held = resources(&grants);
    held.sort_by_key(|(_, _, source)| *source == GrantSource::Runtime);
    assert_eq!(
        held,
        [
            ("echo", "kv", GrantSource::Manifest),
            ("echo", "kv", GrantSource::Runtime)
        ]
    );

    assert!(
        f.revoke("echo", "kv").await.unwrap(),
        "the runtime grant existed"
    );
    assert_eq!(
        resources(&f.list(Some("echo")).await),
        [("echo", "kv", GrantSource::Manifest)],
        "only the runtime grant is revoked"
    );
    assert!(
        f.check("echo", Access::Kv).await,
        "the manifest still grants kv"
    );
}

#[actix_rt::test]
async fn invalid_subjects_and_resources_are_refused_and_change_nothing() {
    let f = Fixture::new();
    let long = "a".repeat(65);
    for subject in [
        "",
        "Echo",
        "echo_1",
        "a/b",
        "capsule:echo",
        "é",
        long.as_str(),
    ] {
        match f.grant(subject, "kv").await {
            Err(CapsError::InvalidSubject(s)) => assert_eq!(s, subject),
            other => panic!("expected InvalidSubject for {subject:?}, got {other:?}"),
        }
        match f.manifest(subject, &["kv"]).await {
            Err(CapsError::InvalidSubject(s)) => assert_eq!(s, subject),
            other => panic!("expected InvalidSubject for {subject:?}, got {other:?}"),
        }
    }
    f.grant(&"a".repeat(64), "kv").await.unwrap();
    f.grant("echo-2", "kv").await.unwrap();

    for resource in [
        "",
        "kv:x",
        "net:example.com",
        "vfs:read:",
        "vfs:exec:a",
        "vfs:read:/etc/passwd",
        "vfs:write:../outside",
        "bus:publish:a..b",
        "bus:subscribe:a.>.b",
        "mcp:call:server",
    ] {
        match f.grant("echo", resource).await {
            Err(CapsError::InvalidResource(e)) => {
                assert_eq!(e.resource, resource);
                assert!(!e.reason.is_empty());
            }
            other => panic!("expected InvalidResource for {resource:?}, got {other:?}"),
        }
    }
    assert!(f.list(Some("echo")).await.is_empty());

    // A manifest with one bad resource is refused whole; the previous grants stay.
    f.manifest("echo", &["kv"]).await.unwrap();
    let refused = f.manifest("echo", &["vfs:read:**", "net:host"]).await;
    assert!(
        matches!(refused, Err(CapsError::InvalidResource(ref e)) if e.resource == "net:host"),
        "{refused:?}"
    );
    assert_eq!(
        resources(&f.list(Some("echo")).await),
        [("echo", "kv", GrantSource::Manifest)]
    );
    assert!(!f.check("echo", read("x")).await);
}

// ---------------------------------------------------------------------------------------
// Auditing of denials
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn every_denial_is_recorded_in_the_audit_log() {
    let f = Fixture::new();
    f.grant("echo", "kv").await.unwrap();
    f.grant("echo", "vfs:read:src/**").await.unwrap();

    let denied = [
        ("echo", read("secret/key")),
        ("echo", write("src/main.rs")),
        ("echo", publish("astrid.shutdown")),
        ("echo", subscribe("user.>")),
        ("echo", mcp("fs", "delete")),
        ("other", Access::Kv),
    ];
    for (subject, access) in &denied {
        assert!(!f.check(subject, access.clone()).await, "{access}");
        // Allowed checks in between are not audited.
        assert!(f.check("echo", Access::Kv).await);
        assert!(f.check("echo", read("src/lib.rs")).await);
    }

    let log = f.audit_log_of(denied.len()).await;
    let seen: Vec<(&str, &str, &str)> = log
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_str()))
        .collect();
    let expected: Vec<(String, &str, String)> = denied
        .iter()
        .map(|(subject, access)| (format!("capsule:{subject}"), "deny", access.to_string()))
        .collect();
    let expected: Vec<(&str, &str, &str)> = expected
        .iter()
        .map(|(a, b, c)| (a.as_str(), *b, c.as_str()))
        .collect();
    assert_eq!(seen, expected, "one entry per denial, nothing else");
    assert_eq!(log[0].target, "vfs:read:secret/key");
    assert_eq!(log[4].target, "mcp:call:fs/delete");
    for e in &log {
        assert!(e.outcome.starts_with("denied"), "{}", e.outcome);
    }
    let v = f.audit.send(VerifyChain).await.unwrap().unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.entries, denied.len() as u64);
}

// ---------------------------------------------------------------------------------------
// Storage failures
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn a_grant_that_cannot_be_stored_fails_and_is_not_in_effect() {
    let f = Fixture::new();
    f.grant("echo", "kv").await.unwrap();

    f.disk.fill();
    match f.grant("echo", "vfs:write:**").await {
        Err(CapsError::Storage { op, .. }) => assert_eq!(op, "grant"),
        other => panic!("expected a storage failure, got {other:?}"),
    }
    f.disk.free();

    assert!(!f.check("echo", write("anything")).await, "not in effect");
    assert!(f.check("echo", Access::Kv).await, "the earlier grant stays");
    assert_eq!(
        resources(&f.list(None).await),
        [("echo", "kv", GrantSource::Runtime)]
    );

    // Nor was it written: a restart over the file does not bring it back.
    f.caps.send(Terminate).await.unwrap();
    close(f.db).await;
    let db = f.file.open_plain(prepare);
    let caps = start_caps(&db, &f.audit);
    assert_eq!(
        resources(&list(&caps, None).await),
        [("echo", "kv", GrantSource::Runtime)]
    );
    assert!(!check(&caps, "echo", write("anything")).await);
}
