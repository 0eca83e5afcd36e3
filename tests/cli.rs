//! The client commands (`dron job ...`, `dron runs`) run as the real binary against a real server.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};
use support::Server;

/// Runs `dron <args> --url <server>`; answers (exit code, stdout, stderr).
async fn dron(url: &str, args: &[&str]) -> (i32, String, String) {
    let output: Output = tokio::process::Command::new(env!("CARGO_BIN_EXE_dron"))
        .args(args)
        .args(["--url", url])
        .env_remove("DRON_URL")
        .env_remove("DRON_TOKEN")
        .output()
        .await
        .expect("running dron");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

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

    // A parent cannot be deleted before its child: the server's 409 is passed on.
    let (code, _, err) = dron(&url, &["job", "delete", "hello"]).await;
    assert_eq!((code, err.starts_with("error: ")), (1, true), "{err}");
    for name in ["after-hello", "hello"] {
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
