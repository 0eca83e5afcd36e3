//! CI's smoke of every workload, in seconds rather than minutes, against a real dron server
//! the tool starts itself, so the load-test tool cannot rot. The figures mean nothing here;
//! docs/benchmarks.md has the real runs.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The dron binary built beside this crate's (cargo builds the workspace's binaries before
/// running any test).
fn dron_bin() -> PathBuf {
    let loadtest = PathBuf::from(env!("CARGO_BIN_EXE_dron-loadtest"));
    loadtest.with_file_name("dron")
}

/// Runs one workload against a server of its own; answers its last line as JSON.
fn run(args: &[&str]) -> Value {
    let data = std::env::temp_dir().join(format!(
        "dron-loadtest-smoke-{}-{}",
        std::process::id(),
        args[0]
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_dron-loadtest"))
        .arg("--dron-bin")
        .arg(dron_bin())
        .arg("--data-dir")
        .arg(&data)
        .args(["--shards", "2"])
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
    let _ = std::fs::remove_dir_all(&data);
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

#[test]
fn every_workload_runs_and_reports() {
    assert!(dron_bin().exists(), "{} is not built", dron_bin().display());
    let api = run(&["api", "--jobs", "200", "--concurrency", "16"]);
    assert!(api["creates_per_s"].as_f64().unwrap() > 0.0, "{api}");

    let saturate = run(&[
        "saturate",
        "--builtin",
        "--step",
        "50",
        "--step-secs",
        "2",
        "--period-ms",
        "1000",
        "--max-jobs",
        "100",
        "--limit-ms",
        "1000",
    ]);
    assert_eq!(saturate["held_per_s"], 100.0, "{saturate}");
    assert!(
        saturate["server_rss_mb"].as_f64().unwrap() > 0.0,
        "{saturate}"
    );

    let processes = run(&[
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
    ]);
    assert!(
        processes["bare_fork_exec_per_s"].as_f64().unwrap() > 0.0,
        "{processes}"
    );
    assert_eq!(
        processes["steps"].as_array().unwrap().len(),
        1,
        "{processes}"
    );

    let highload = run(&[
        "highload",
        "--builtin",
        "--step",
        "100",
        "--step-secs",
        "2",
        "--max-running",
        "200",
        "--run-secs",
        "60",
    ]);
    assert_eq!(highload["peak_running"], 200.0, "{highload}");

    let runs =
        std::env::temp_dir().join(format!("dron-loadtest-smoke-runs-{}", std::process::id()));
    let facebook = run(&[
        "facebook",
        "--long-jobs",
        "5",
        "--per-second",
        "2",
        "--duration-secs",
        "8",
        "--epsilon-ms",
        "3000",
        "--allowance-ms",
        "2000",
        "--floor-secs",
        "2",
        "--runs",
        runs.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_dir_all(&runs);
    assert_eq!(facebook["bare_launch_idle_processes"], 5, "{facebook}");
    assert!(
        facebook["bare_launch_count"].as_u64().unwrap() >= 3,
        "{facebook}"
    );
    assert_eq!(facebook["missed"], 0, "{facebook}");
    assert_eq!(facebook["duplicates"], 0, "{facebook}");
    assert!(facebook["satisfied"].as_u64().unwrap() > 0, "{facebook}");

    let million = run(&["million", "--jobs", "2000", "--concurrency", "32"]);
    assert!(
        million["restart_to_health_ms"].as_u64().is_some(),
        "{million}"
    );
    assert!(
        million["restart_to_first_fire_ms"].as_i64().is_some(),
        "{million}"
    );
}
