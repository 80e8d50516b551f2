//! `astrid install` and `astrid uninstall` through a real daemon: the plan shown before
//! confirming (and its grant difference on an upgrade), confirmation by `--yes` or on
//! standard input, a refusal, a folder changed between inspection and installation, a
//! folder holding a link, an installed capsule changed afterwards (untrusted until installed
//! again), and removal.

use std::path::Path;

use astrid::protocol::{CapsuleState, ErrorCode, InstallPlan, Request};

use crate::common::{
    TestDaemon, audit_tail, copy_capsule, example_capsule, failure, invoke, output_text,
};

/// A copy of the example `echo` capsule in `root`, at `version`, with `grants`.
fn source(root: &Path, version: &str, grants: &str) -> String {
    let dir = copy_capsule(&example_capsule("echo"), root);
    let manifest = std::fs::read_to_string(dir.join("Capsule.toml"))
        .unwrap()
        .replace("version = \"0.1.0\"", &format!("version = \"{version}\""));
    std::fs::write(
        dir.join("Capsule.toml"),
        format!("{manifest}\n[capabilities]\ngrant = [{grants}]\n"),
    )
    .unwrap();
    dir.display().to_string()
}

async fn state(client: &astrid::client::Client, name: &str) -> Option<(CapsuleState, String)> {
    let list = client.capsules().await.unwrap();
    list.iter()
        .find(|c| c.name == name)
        .map(|c| (c.state, c.error.clone().unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_confirm_refuse_upgrade_and_uninstall() {
    let d = TestDaemon::builder().start();
    let client = d.client().await;
    let src = tempfile::tempdir().unwrap();
    let folder = source(src.path(), "0.1.0", "\"kv\"");

    // Refused at the prompt: nothing installed.
    let refused = d.cli_fed(&["install", &folder], b"n\n");
    assert_eq!(refused.status.code(), Some(1), "{}", output_text(&refused));
    assert!(
        output_text(&refused).contains("grants: kv"),
        "{}",
        output_text(&refused)
    );
    assert!(
        output_text(&refused).contains("not confirmed"),
        "{}",
        output_text(&refused)
    );
    assert!(state(&client, "echo").await.is_none());

    // Confirmed on standard input: installed, recorded, running.
    let done = d.cli_fed(&["install", &folder], b"y\n");
    assert!(done.status.success(), "{}", output_text(&done));
    let installed = d.home.path().join("capsules/echo");
    assert!(installed.join("Capsule.toml").is_file());
    assert!(d.home.path().join("installed.toml").is_file());
    assert_eq!(
        state(&client, "echo").await.unwrap().0,
        CapsuleState::Running
    );
    invoke(&client, "echo", &["hi"]).await.unwrap();

    // An upgrade shows the grants it adds and drops.
    let newer = tempfile::tempdir().unwrap();
    let folder2 = source(newer.path(), "0.2.0", "\"vfs:read:**\"");
    let asked = d.cli_fed(&["install", &folder2], b"no\n");
    assert_eq!(asked.status.code(), Some(1));
    for needle in [
        "replaces the installed version 0.1.0",
        "+ grant vfs:read:** (new)",
        "- grant kv (dropped)",
    ] {
        assert!(
            output_text(&asked).contains(needle),
            "{needle}: {}",
            output_text(&asked)
        );
    }
    let upgraded = d.cli(&["--json", "install", &folder2, "--yes"]);
    assert!(upgraded.status.success(), "{}", output_text(&upgraded));
    let report: serde_json::Value = serde_json::from_slice(&upgraded.stdout).unwrap();
    assert_eq!(report["replaced"], "0.1.0", "{report}");
    assert_eq!(report["version"], "0.2.0", "{report}");
    let entries = audit_tail(&client, 200).await;
    assert!(
        entries.iter().any(|e| e.action == "InstallCapsule"),
        "{entries:?}"
    );

    // Uninstalled: gone from the home and from the daemon.
    let gone = d.cli(&["uninstall", "echo"]);
    assert!(gone.status.success(), "{}", output_text(&gone));
    assert!(!installed.exists());
    assert!(state(&client, "echo").await.is_none());
    let again = d.cli(&["uninstall", "echo"]);
    assert!(
        output_text(&again).contains("not_found"),
        "{}",
        output_text(&again)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installed_capsule_changed_afterwards_does_not_run_until_installed_again() {
    let d = TestDaemon::builder().start();
    let client = d.client().await;
    let src = tempfile::tempdir().unwrap();
    let folder = source(src.path(), "0.1.0", "");
    assert!(d.cli(&["install", &folder, "--yes"]).status.success());
    let installed = d.home.path().join("capsules/echo");
    let module = installed.join("echo.wat");
    let wat = std::fs::read_to_string(&module).unwrap();
    std::fs::write(&module, format!("{wat}\n;; changed\n")).unwrap();
    let reload = d.cli(&["reload"]);
    assert!(reload.status.success(), "{}", output_text(&reload));
    let (now, why) = state(&client, "echo").await.unwrap();
    assert_eq!(now, CapsuleState::Untrusted, "{why}");
    assert!(
        why.contains("changed since it was installed") && why.contains("echo.wat"),
        "{why}"
    );
    let (code, _) = failure(invoke(&client, "echo", &[]).await);
    assert_eq!(code, ErrorCode::NotFound);

    // Installing the folder itself accepts it as it is.
    let accept = d.cli(&["install", installed.to_str().unwrap(), "--yes"]);
    assert!(accept.status.success(), "{}", output_text(&accept));
    assert_eq!(
        state(&client, "echo").await.unwrap().0,
        CapsuleState::Running
    );
    invoke(&client, "echo", &[]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_changed_after_inspection_or_holding_a_link_is_not_installed() {
    let d = TestDaemon::builder().start();
    let client = d.client().await;
    let src = tempfile::tempdir().unwrap();
    let folder = source(src.path(), "0.1.0", "");
    let plan: InstallPlan = client
        .call(Request::InspectCapsule {
            path: folder.clone(),
        })
        .await
        .unwrap();
    std::fs::write(Path::new(&folder).join("extra.txt"), "sneaked in").unwrap();
    let (code, message) = failure(
        client
            .call::<rmpv::Value>(Request::InstallCapsule {
                path: folder.clone(),
                digest: plan.digest,
            })
            .await,
    );
    assert_eq!(code, ErrorCode::BadRequest, "{message}");
    assert!(
        message.contains("changed since it was inspected"),
        "{message}"
    );
    assert!(!d.home.path().join("capsules/echo").exists());

    std::os::unix::fs::symlink("/etc/passwd", Path::new(&folder).join("link")).unwrap();
    let linked = d.cli(&["install", &folder, "--yes"]);
    assert_eq!(linked.status.code(), Some(1));
    assert!(
        output_text(&linked).contains("symbolic link"),
        "{}",
        output_text(&linked)
    );
    let relative = d.cli(&["install", "no-such-folder", "--yes"]);
    assert_eq!(relative.status.code(), Some(1));
    assert!(
        output_text(&relative).contains("bad_request"),
        "{}",
        output_text(&relative)
    );
}

/// `tar czf` of `dir` (as a top folder) into `archive`.
fn tar_gz(dir: &Path, archive: &Path) {
    let done = std::process::Command::new("tar")
        .arg("czf")
        .arg(archive)
        .arg("-C")
        .arg(dir.parent().unwrap())
        .arg(dir.file_name().unwrap())
        .status()
        .unwrap();
    assert!(done.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tar_gz_installs_as_its_folder_would_and_a_link_in_one_is_refused() {
    let d = TestDaemon::builder().start();
    let client = d.client().await;
    let src = tempfile::tempdir().unwrap();
    let folder = source(src.path(), "0.2.0", "\"kv\"");
    let archive = src.path().join("echo-0.2.0.tar.gz");
    tar_gz(Path::new(&folder), &archive);
    let archive = archive.display().to_string();

    let plan: InstallPlan = client
        .call(Request::InspectCapsule {
            path: archive.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        (plan.name.as_str(), plan.version.as_str()),
        ("echo", "0.2.0")
    );
    assert_eq!(plan.path, archive, "the plan names the archive");
    let done = d.cli(&["install", &archive, "--yes"]);
    assert!(done.status.success(), "{}", output_text(&done));
    assert!(
        output_text(&done).contains("grants: kv"),
        "{}",
        output_text(&done)
    );
    assert_eq!(
        invoke(&client, "echo", &["hi"]).await.unwrap().capsule,
        "echo"
    );
    let capsules = d.home.path().join("capsules");
    assert_eq!(
        crate::common::files_in(&capsules),
        ["echo"],
        "nothing unpacked is left"
    );

    // An archive holding a link is refused, naming it; nothing is installed or left.
    let hostile = tempfile::tempdir().unwrap();
    let folder = source(hostile.path(), "0.3.0", "\"kv\"");
    std::os::unix::fs::symlink("/etc/passwd", Path::new(&folder).join("passwd")).unwrap();
    let archive = hostile.path().join("echo.tgz");
    tar_gz(Path::new(&folder), &archive);
    let refused = d.cli(&["install", archive.to_str().unwrap(), "--yes"]);
    assert_eq!(refused.status.code(), Some(1), "{}", output_text(&refused));
    let text = output_text(&refused);
    assert!(text.contains("echo/passwd` is a link"), "{text}");
    assert_eq!(crate::common::files_in(&capsules), ["echo"]);
    let (code, _) = failure(
        client
            .call::<InstallPlan>(Request::InspectCapsule {
                path: archive.display().to_string(),
            })
            .await,
    );
    assert_eq!(code, ErrorCode::BadRequest);
}
