//! The server's log lines (src/logging.rs) as a log store and a file see them: JSON lines
//! carrying the run's span fields, and text without colour codes when not on a terminal.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, free_port, run_to_success, wait_for, wait_healthy};

/// A server started with `args` after `serve`, logging to `log`; killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data: &Path, port: u16, args: &[&str], log: &Path) -> Process {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dron"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--shards", "2"])
        .args(args)
        // The run spans exist at debug (actors/src/trace.rs).
        .env("DRON_LOG", "info,dron_actors=debug")
        .env_remove("DRON_LOG_FORMAT")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting dron");
    Process(child)
}

/// Waits for the server, then runs a job once to success.
async fn run_once(http: &reqwest::Client, url: &str, name: &str) {
    wait_healthy(http, url).await;
    let job = json!({"name": name, "command": "true", "schedule": "R1//PT1H"});
    run_to_success(http, url, job, String::new).await;
}

/// With `--log-format json`, every line is a JSON object, and the lines logged for a run
/// carry its job, task and (on the shard's hops) shard in `span`.
#[tokio::test(flavor = "multi_thread")]
async fn json_lines_carry_the_runs_span_fields() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let port = free_port();
    let _server = start(
        &dir.path().join("data"),
        port,
        &["--log-format", "json"],
        &log,
    );
    let url = format!("http://127.0.0.1:{port}");
    run_once(&reqwest::Client::new(), &url, "followed").await;

    // The coordinator logs the run's end once the run is durable: wait for that line.
    let text = || std::fs::read_to_string(&log).unwrap();
    wait_for("the run's last line", Duration::from_secs(10), || async {
        text().contains("run ended")
    })
    .await;
    let text = text();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines.iter().all(|line| line["level"].is_string()
        && line["timestamp"].is_string()
        && line["target"].is_string()));
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "recovery finished; dron is ready")
    );
    let of_run = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message && l["span"]["job"] == "followed")
            .unwrap_or_else(|| panic!("no '{message}' line in the run's span:\n{text}"))
    };
    let released = of_run("launch released");
    assert!(
        released["span"]["task"]
            .as_str()
            .is_some_and(|task| task.starts_with("ct:")),
        "{released}"
    );
    assert!(released["span"]["shard"].is_u64(), "{released}");
    assert_eq!(of_run("placed")["span"]["task"], released["span"]["task"]);
    assert!(!text.contains('\u{1b}'), "colour codes in JSON lines");
}

/// Text lines written to a file (not a terminal) have no colour codes.
#[tokio::test(flavor = "multi_thread")]
async fn text_lines_to_a_file_have_no_colour_codes() {
    let server = Server::start(1).await;
    run_once(&server.http, &server.url(""), "plain").await;
    let log = server.log();
    assert!(log.contains("dron is ready"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in the log file:\n{log}"
    );
}

/// A bad format is refused before anything starts, naming the choices.
#[test]
fn an_unknown_log_format_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_dron"))
        .args(["serve", "--log-format", "xml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("text") && stderr.contains("json"),
        "{stderr}"
    );
}
