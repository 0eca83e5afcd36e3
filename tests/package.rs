//! The Debian package (scripts/package.sh) on this machine: built from the binaries under test,
//! installed with `dpkg -i`, its units checked with `systemd-analyze verify`, the installed
//! binary started with the installed config as the installed user (systemd need not run
//! here), a job run, then `dpkg --purge`d with nothing left behind.
//!
//! It needs root and dpkg, and a machine without a `dron` package or user (it would replace
//! and then remove them): it is skipped otherwise, unless `DRON_REQUIRE_PACKAGE` is set
//! (scripts/test.sh sets it as root), where it fails. Its server listens on a port of its own.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::json;
use support::{free_port, run_to_success, wait_for, wait_healthy};

/// What the package puts on the machine (or makes there) and purge must take away.
const INSTALLED: &[&str] = &[
    "/usr/bin/dron",
    "/usr/bin/dron-shim",
    "/etc/dron/dron.toml",
    "/etc/dron/agent.env",
    "/etc/default/dron",
    "/lib/systemd/system/dron.service",
    "/lib/systemd/system/dron-agent.service",
    "/usr/share/bash-completion/completions/dron",
    "/var/lib/dron",
    "/var/lib/dron-agent",
    "/etc/systemd/system/multi-user.target.wants/dron.service",
];

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn succeeds(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn is_root() -> bool {
    run("id", &["-u"]).stdout == b"0\n"
}

fn dron_package_known() -> bool {
    // `dpkg -s` fails for a package that is neither installed nor has configuration left.
    run("dpkg", &["-s", "dron"]).status.success()
}

/// The id of `user`, if the machine has it.
fn uid_of(user: &str) -> Option<u32> {
    let output = run("id", &["-u", user]);
    output.status.success().then(|| {
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap()
    })
}

/// Why the package cannot be tried on this machine, or None.
fn unavailable() -> Option<String> {
    if !is_root() {
        return Some("the test does not run as root (dpkg -i needs it)".into());
    }
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        return Some("dpkg-deb is not installed".into());
    }
    if dron_package_known() {
        return Some("a dron package is already on this machine".into());
    }
    if uid_of("dron").is_some() || Path::new("/etc/dron").exists() {
        return Some("this machine already has a dron user or /etc/dron".into());
    }
    None
}

/// The installed server and the package: the server is killed and the package purged however
/// the test ends.
struct Installed {
    server: Option<Child>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        if dron_package_known() {
            let _ = run("dpkg", &["--purge", "dron"]);
        }
    }
}

/// Processes running as `uid`.
fn processes_of(uid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let real_uid = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next()?.parse::<u32>().ok());
        if real_uid == Some(uid) {
            found.push(pid);
        }
    }
    found
}

fn build_package(out: &Path) -> PathBuf {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_dron")).parent().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package.sh");
    let stdout = succeeds(
        "bash",
        &[
            script.to_str().unwrap(),
            "--no-build",
            "--fast",
            "--bin-dir",
            bin_dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("package.sh prints the package's path"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_package_installs_runs_a_job_and_purges_cleanly() {
    if let Some(reason) = unavailable() {
        assert!(
            std::env::var_os("DRON_REQUIRE_PACKAGE").is_none(),
            "DRON_REQUIRE_PACKAGE is set but {reason}"
        );
        eprintln!("skipped: {reason}");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let deb = build_package(scratch.path());
    let fields = succeeds("dpkg-deb", &["--field", deb.to_str().unwrap()]);
    assert!(fields.contains("Package: dron\n"), "{fields}");

    let mut installed = Installed { server: None };
    succeeds("dpkg", &["-i", deb.to_str().unwrap()]);
    for path in INSTALLED {
        assert!(Path::new(path).exists(), "the package did not make {path}");
    }
    let uid = uid_of("dron").expect("the package made the dron user");
    assert!(uid > 0);
    let config = std::fs::read_to_string("/etc/dron/dron.toml").unwrap();
    assert!(
        config.contains("data_dir = \"/var/lib/dron/data\""),
        "{config}"
    );
    let state = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/var/lib/dron").unwrap());
    assert_eq!(state, uid, "/var/lib/dron belongs to dron");

    // The units as systemd would read them (it need not run here to check them).
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let output = run(
            "systemd-analyze",
            &[
                "verify",
                "/lib/systemd/system/dron.service",
                "/lib/systemd/system/dron-agent.service",
            ],
        );
        let complaints = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && !complaints.contains("dron"),
            "systemd-analyze verify: {complaints}"
        );
    }

    // The installed server, as dron.service starts it: the installed config, the dron user,
    // its state directory; only the port is the test's own.
    let port = free_port();
    let log = std::fs::File::create(scratch.path().join("server.log")).unwrap();
    let server = Command::new("setpriv")
        .args(["--reuid=dron", "--regid=dron", "--init-groups", "--"])
        .args(["/usr/bin/dron", "serve", "--config", "/etc/dron/dron.toml"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir("/var/lib/dron")
        .env("DRON_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting the installed dron");
    installed.server = Some(server);
    let server_log = || std::fs::read_to_string(scratch.path().join("server.log")).unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_healthy(&http, &url).await;
    let job = json!({"name": "packaged", "command": "id -un; echo \"$DRON_JOB\"", "schedule": "R1//PT1H"});
    run_to_success(&http, &url, job, server_log).await;
    // Its output through the installed CLI: it ran as the dron user.
    let logs = succeeds("/usr/bin/dron", &["logs", "packaged", "--url", &url]);
    assert_eq!(logs, "dron\npackaged\n", "{}", server_log());
    assert!(
        Path::new("/var/lib/dron/data/runs").is_dir(),
        "{}",
        server_log()
    );

    let mut server = installed.server.take().unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    wait_for(
        "the dron user's processes to end",
        Duration::from_secs(10),
        || async { processes_of(uid).is_empty() },
    )
    .await;
    succeeds("dpkg", &["--purge", "dron"]);
    assert!(!dron_package_known(), "dpkg still knows dron after purge");
    for path in INSTALLED {
        assert!(!Path::new(path).exists(), "{path} is left after purge");
    }
    assert!(
        !Path::new("/etc/dron").exists(),
        "/etc/dron is left after purge"
    );
    assert_eq!(uid_of("dron"), None, "the dron user is left after purge");
    let group = run("getent", &["group", "dron"]);
    assert!(
        !group.status.success(),
        "the dron group is left after purge"
    );
    // deb-systemd-helper's records of the units' enabled and masked states.
    let records = run("find", &["/var/lib/systemd", "-name", "*dron*"]);
    assert_eq!(
        String::from_utf8_lossy(&records.stdout),
        "",
        "left after purge"
    );
    drop(installed);
}
