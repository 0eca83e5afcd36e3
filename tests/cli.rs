//! The client commands (`dron job ...`, `dron runs`) run as the real binary against a real server.

mod support;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::{Server, dron};

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

/// A job that fires only on demand (its first scheduled target is years away).
fn manual_job(name: &str, command: &str) -> String {
    json!({"name": name, "command": command, "schedule": "R/2099-01-01T00:00:00Z/P1D"}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_added_listed_shown_run_and_deleted() {
    let server = Server::start(2).await;
    let url = server.url("");
    let dir = server.scratch();
    let file = write(&dir, "hello.json", &manual_job("hello", "echo hi"));
    let (code, out, err) = dron(&url, &["job", "add", file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(server.job("hello").await["command"], "echo hi");

    let child = json!({"name": "after-hello", "command": "true", "parents": ["hello"]});
    let file = write(&dir, "child.json", &child.to_string());
    let (code, out, err) = dron(&url, &["job", "add", file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(server.job("after-hello").await["parents"], json!(["hello"]));

    let (code, out, _) = dron(&url, &["job", "list"]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.contains("hello") && out.contains("after hello"),
        "{out}"
    );
    let (code, out, _) = dron(&url, &["job", "list", "--json"]).await;
    assert_eq!(code, 0);
    let jobs: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(jobs.as_array().map(Vec::len), Some(2), "{jobs}");

    let (code, out, _) = dron(&url, &["job", "show", "hello"]).await;
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).expect("show prints JSON");
    assert_eq!(shown["job"]["name"], "hello");

    let (code, out, err) = dron(&url, &["job", "run", "hello"]).await;
    assert_eq!(code, 0, "{out}{err}");
    server.wait_for_run("hello", "succeeded").await;
    let (code, out, _) = dron(&url, &["runs", "hello", "--limit", "5"]).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with("TARGET") && out.contains("succeeded"),
        "{out}"
    );

    // Deleting a parent re-wires its child (Chronos): the child is kept.
    let (code, out, err) = dron(&url, &["job", "delete", "hello"]).await;
    assert_eq!(code, 0, "{out}{err}");
    for name in ["after-hello"] {
        let (code, out, err) = dron(&url, &["job", "delete", name]).await;
        assert_eq!(code, 0, "{out}{err}");
    }
    let (code, _, err) = dron(&url, &["job", "show", "hello"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("error: job 'hello' does not exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_ends_a_running_job() {
    let server = Server::start(1).await;
    let url = server.url("");
    let file = write(
        &server.scratch(),
        "sleeper.json",
        &manual_job("sleeper", "sleep 60"),
    );
    assert_eq!(
        dron(&url, &["job", "add", file.to_str().unwrap()]).await.0,
        0
    );
    assert_eq!(dron(&url, &["job", "run", "sleeper"]).await.0, 0);
    server.wait_for_run("sleeper", "running").await;
    let (code, out, err) = dron(&url, &["job", "kill", "sleeper"]).await;
    assert_eq!(code, 0, "{out}{err}");
    server.wait_for_run("sleeper", "killed").await;
    let (_, out, _) = dron(&url, &["runs", "sleeper"]).await;
    assert!(out.contains("killed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_job_files_are_explained() {
    let server = Server::start(1).await;
    let url = server.url("");
    let dir = server.scratch();
    let bad = json!({"name": "bad", "command": "true", "schedule": "R//PXYZ"});
    let file = write(&dir, "bad.json", &bad.to_string());
    let (code, _, err) = dron(&url, &["job", "add", file.to_str().unwrap()]).await;
    assert_eq!(code, 1);
    assert!(err.starts_with("error: schedule: "), "{err}");

    let file = write(&dir, "broken.json", "{\"name\": ");
    let (code, _, err) = dron(&url, &["job", "add", file.to_str().unwrap()]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("broken.json") && err.contains("not valid JSON"),
        "{err}"
    );

    let missing = dir.join("missing.json");
    let (code, _, err) = dron(&url, &["job", "add", missing.to_str().unwrap()]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot read job file") && err.contains("missing.json"),
        "{err}"
    );

    let (code, _, err) = dron(&url, &["job", "show", "no-such-job"]).await;
    assert_eq!(code, 1, "{err}");
    let jobs = server.ok("GET", "/scheduler/jobs", None).await;
    assert_eq!(jobs, json!([]), "nothing was created");
}

#[tokio::test]
async fn an_unreachable_server_exits_2() {
    for args in [&["job", "list"][..], &["runs", "x"], &["shards", "show"]] {
        let (code, _, err) = dron("http://127.0.0.1:9", args).await;
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.starts_with("error: cannot reach the dron server at http://127.0.0.1:9: "),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_sent_as_a_bearer() {
    let server = Server::start_with_config(1, "[auth]\ntokens = [\"s3cret\"]").await;
    let url = server.url("");
    let (code, _, err) = dron(&url, &["job", "list"]).await;
    assert_eq!(code, 1, "{err}");
    let (code, out, err) = dron(&url, &["job", "list", "--token", "s3cret"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "no jobs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_print_a_finished_runs_output() {
    let server = Server::start(1).await;
    let url = server.url("");
    let file = write(
        &server.scratch(),
        "talker.json",
        &manual_job("talker", "echo to-out; echo to-err >&2"),
    );
    assert_eq!(
        dron(&url, &["job", "add", file.to_str().unwrap()]).await.0,
        0
    );
    let (code, _, err) = dron(&url, &["logs", "talker"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("has no runs yet"), "{err}");
    assert_eq!(dron(&url, &["job", "run", "talker"]).await.0, 0);
    let run = server.wait_for_run("talker", "succeeded").await;
    let (code, out, err) = dron(&url, &["logs", "talker"]).await;
    assert_eq!((code, out.as_str()), (0, "to-out\n"), "{err}");
    let (code, out, err) = dron(&url, &["logs", "talker", "--stderr"]).await;
    assert_eq!((code, out.as_str()), (0, "to-err\n"), "{err}");
    let task = run["taskId"].as_str().unwrap();
    let (code, out, err) = dron(&url, &["logs", "talker", "--task", task]).await;
    assert_eq!((code, out.as_str()), (0, "to-out\n"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_a_running_task_to_its_end() {
    let server = Server::start(1).await;
    let url = server.url("");
    let file = write(
        &server.scratch(),
        "counter.json",
        &manual_job("counter", "for i in 1 2 3; do echo $i; sleep 0.3; done"),
    );
    assert_eq!(
        dron(&url, &["job", "add", file.to_str().unwrap()]).await.0,
        0
    );
    assert_eq!(dron(&url, &["job", "run", "counter"]).await.0, 0);
    server.wait_for_run("counter", "running").await;
    let (code, out, err) = dron(&url, &["logs", "counter", "--follow"]).await;
    assert_eq!((code, out.as_str()), (0, "1\n2\n3\n"), "{err}");
    let runs = server.runs("counter").await;
    assert_eq!(
        runs[0]["state"], "succeeded",
        "follow ends with the task: {runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_prints_n_targets() {
    let server = Server::start(1).await;
    let url = server.url("");
    // Crosses Berlin's spring-forward on 2027-03-28 (02:30 does not exist: 03:00 CEST).
    server
        .create(json!({"name": "daily", "command": "true",
            "schedule": "R/2027-03-26T02:30:00/P1D", "scheduleTimeZone": "Europe/Berlin"}))
        .await;
    let (code, out, err) = dron(&url, &["next", "daily", "-n", "4"]).await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("2027-03-")).collect();
    assert_eq!(rows.len(), 4, "{out}");
    assert!(
        rows[0].starts_with("2027-03-26 01:30:00  2027-03-26 02:30:00+01:00  CET"),
        "{out}"
    );
    assert!(!rows[1].contains("offset changed"), "{out}");
    assert!(
        rows[2].contains("2027-03-28 03:00:00+02:00") && rows[2].contains("offset changed"),
        "{out}"
    );
    assert!(out.contains("UTC") && out.contains("LOCAL"), "{out}");
}

/// Jobs on the server, by name.
async fn server_jobs(server: &Server) -> Vec<String> {
    let jobs = server.ok("GET", "/scheduler/jobs", None).await;
    let mut names: Vec<String> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_creates_updates_prunes_and_dry_runs() {
    let server = Server::start(2).await;
    let url = server.url("");
    let dir = server.scratch().join("jobs");
    std::fs::create_dir_all(&dir).unwrap();
    let sync = |extra: &'static [&'static str]| {
        let mut args = vec!["sync", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let url = url.clone();
        async move {
            let args: Vec<&str> = args;
            dron(&url, &args).await
        }
    };
    // The child sorts before its parent by name: it must still be sent after it.
    let parent = json!({"name": "b-parent", "command": "true", "schedule": "R//P1D"});
    let child = json!({"name": "a-child", "command": "true", "parents": ["b-parent"]});
    write(&dir, "parent.json", &parent.to_string());
    write(&dir, "child.json", &child.to_string());
    write(&dir, "notes.txt", "not a job");
    let (code, out, err) = sync(&[]).await;
    assert_eq!(code, 0, "{out}{err}");
    let out_lines: Vec<&str> = out.lines().collect();
    assert_eq!(out_lines, ["+ b-parent", "+ a-child"], "{out}");
    assert_eq!(server_jobs(&server).await, ["a-child", "b-parent"]);

    let (code, out, err) = sync(&[]).await;
    assert_eq!(code, 0, "{out}{err}");
    let out_lines: Vec<&str> = out.lines().collect();
    assert_eq!(out_lines, ["= b-parent", "= a-child"], "idempotent: {out}");

    let changed = json!({"name": "b-parent", "command": "echo v2", "schedule": "R//P1D"});
    write(&dir, "parent.json", &changed.to_string());
    let (code, out, err) = sync(&["--dry-run"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("~ b-parent: command \"true\" -> \"echo v2\""),
        "{out}"
    );
    assert_eq!(server.job("b-parent").await["command"], "true");
    let (code, out, err) = sync(&[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("~ b-parent: command"), "{out}");
    assert!(out.contains("= a-child"), "{out}");
    assert_eq!(server.job("b-parent").await["command"], "echo v2");

    // Jobs only on the server stay without --prune; --prune deletes them, children first.
    server
        .create(
            json!({"name": "extra", "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D"}),
        )
        .await;
    server
        .create(json!({"name": "extra-child", "command": "true", "parents": ["extra"]}))
        .await;
    let (code, out, _) = sync(&[]).await;
    assert_eq!(code, 0);
    assert!(!out.contains("- extra"), "{out}");
    let (code, out, _) = sync(&["--prune", "--dry-run"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("- extra-child\n- extra\n"), "{out}");
    assert_eq!(server_jobs(&server).await.len(), 4);
    let (code, out, err) = sync(&["--prune"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("- extra-child\n- extra\n"), "{out}");
    assert_eq!(server_jobs(&server).await, ["a-child", "b-parent"]);

    // A job the server refuses is reported; the others are still applied; exit 1.
    write(
        &dir,
        "refused.json",
        &json!({"name": "refused", "command": "true", "schedule": "R//PXYZ"}).to_string(),
    );
    write(&dir, "fine.json", &manual_job("fine", "true"));
    let (code, out, err) = sync(&[]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("+ refused") && out.contains("+ fine"), "{out}");
    assert!(err.contains("error: refused: schedule: "), "{err}");
    assert!(err.contains("1 request(s) failed"), "{err}");
    assert_eq!(server_jobs(&server).await, ["a-child", "b-parent", "fine"]);
    std::fs::remove_file(dir.join("refused.json")).unwrap();
    std::fs::remove_file(dir.join("fine.json")).unwrap();
    let (code, out, err) = sync(&["--prune"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(server_jobs(&server).await, ["a-child", "b-parent"]);

    // A malformed file stops the sync before anything is sent.
    write(&dir, "new.json", &manual_job("new", "true"));
    write(&dir, "zz-broken.json", "{\"name\": ");
    let (code, out, err) = sync(&["--prune"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("zz-broken.json"), "{err}");
    assert_eq!(out, "");
    assert_eq!(server_jobs(&server).await, ["a-child", "b-parent"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_of_many_jobs_shows_progress() {
    let server = Server::start(1).await;
    let url = server.url("");
    let dir = server.scratch().join("many");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..21 {
        let name = format!("job-{i:02}");
        write(&dir, &format!("{name}.json"), &manual_job(&name, "true"));
    }
    let (code, out, err) = dron(&url, &["sync", dir.to_str().unwrap(), "--dry-run"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("+ job-")).count(), 21);
    assert!(
        err.contains("synced 1/21") && err.contains("synced 21/21"),
        "{err}"
    );
    assert!(
        server_jobs(&server).await.is_empty(),
        "--dry-run sends nothing"
    );
    let (code, _, err) = dron(&url, &["sync", dir.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(server_jobs(&server).await.len(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_job_files_are_accepted() {
    let server = Server::start(1).await;
    let url = server.url("");
    let dir = server.scratch();
    let yaml = "name: from-yaml\ncommand: echo hi\nschedule: R/2099-01-01T00:00:00Z/P1D\nowner: me@example.com\n";
    let file = write(&dir, "job.yaml", yaml);
    let (code, _, err) = dron(&url, &["job", "add", file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.job("from-yaml").await["owner"], "me@example.com");

    let broken = write(&dir, "broken.yml", "name: [unclosed\n");
    let (code, _, err) = dron(&url, &["job", "add", broken.to_str().unwrap()]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("broken.yml") && err.contains("not valid YAML"),
        "{err}"
    );
}

/// Runs the dron binary with `args` alone (no server); answers (exit code, stdout, stderr).
fn dron_offline(args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dron"))
        .args(args)
        .output()
        .expect("running dron");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, marks) in [
        ("bash", ["complete -F _dron", "agent-token"]),
        ("zsh", ["#compdef dron", "agent-token"]),
        ("fish", ["complete -c dron", "agent-token"]),
    ] {
        let (code, out, err) = dron_offline(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for mark in marks {
            assert!(out.contains(mark), "{shell} completions lack {mark:?}");
        }
    }
    let (code, _, err) = dron_offline(&["completions", "tcsh"]);
    assert_eq!(code, 2);
    assert!(err.contains("bash") && err.contains("fish"), "{err}");
}

/// `dron --version` names the commit it was built from (build.rs): this checkout's HEAD, or
/// `unknown` outside a git checkout.
#[test]
fn the_version_names_the_commit() {
    let (code, out, _) = dron_offline(&["--version"]);
    assert_eq!(code, 0);
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
    let commit = head.unwrap_or_else(|| "unknown".to_string());
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(out, format!("dron {version} (commit {commit})\n"));
}
