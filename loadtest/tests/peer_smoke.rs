//! CI's smoke of the Celery peer (`dron-loadtest peer celery ...`), in seconds. It needs the
//! peer's virtual environment (`loadtest/peers/celery/setup.sh`) and RabbitMQ on 127.0.0.1:5672;
//! without the environment it passes with a message. The figures mean nothing here.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/celery")
}

/// False (with a message) when the peer is not set up.
fn set_up() -> bool {
    let celery = peer_dir().join(".venv/bin/celery");
    if !celery.exists() {
        eprintln!(
            "skipped: {} is missing (run loadtest/peers/celery/setup.sh)",
            celery.display()
        );
        return false;
    }
    true
}

fn run(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_dron-loadtest"))
        .args(["peer", "celery"])
        .args(args)
        .output()
        .expect("running dron-loadtest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{args:?} failed:\n{stdout}\n{stderr}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

fn runs_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dron-peer-smoke-{name}-{}", std::process::id()))
}

#[test]
fn the_peers_pure_parts_pass_their_unit_tests() {
    if !set_up() {
        return;
    }
    let status = Command::new(peer_dir().join(".venv/bin/python"))
        .args(["-m", "unittest", "-q", "test_peer"])
        .current_dir(peer_dir())
        .status()
        .expect("running the peer's unit tests");
    assert!(status.success());
}

#[test]
fn saturate_runs_against_celery() {
    if !set_up() {
        return;
    }
    let runs = runs_dir("saturate");
    let saturate = run(&[
        "saturate",
        "--step",
        "10",
        "--step-secs",
        "2",
        "--period-ms",
        "1000",
        "--max-jobs",
        "10",
        "--limit-ms",
        "1000",
        "--runs",
        runs.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_dir_all(&runs);
    let steps = saturate["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{saturate}");
    assert!(
        steps[0]["window_targets"].as_u64().unwrap() > 0,
        "{saturate}"
    );
}

#[test]
fn facebook_runs_against_celery_and_is_checked() {
    if !set_up() {
        return;
    }
    let runs = runs_dir("facebook");
    let facebook = run(&[
        "facebook",
        "--long-jobs",
        "1",
        "--per-second",
        "2",
        "--duration-secs",
        "6",
        "--epsilon-ms",
        "3000",
        "--allowance-ms",
        "1000",
        "--runs",
        runs.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_dir_all(&runs);
    assert_eq!(facebook["missed"], 0, "{facebook}");
    assert_eq!(facebook["duplicates"], 0, "{facebook}");
    assert!(facebook["satisfied"].as_u64().unwrap() > 0, "{facebook}");
}
