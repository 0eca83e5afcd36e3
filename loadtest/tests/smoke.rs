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

/// The tests here load the machine: one at a time, so that none measures under another's load.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs one workload against a server of its own; answers its last line as JSON, after
/// checking that the tool said the workload passed.
fn run(args: &[&str]) -> Value {
    let (passed, last) = run_judged(args);
    assert!(passed, "{args:?} did not pass: {last}");
    last
}

/// Runs one workload against a server of its own; answers whether the tool said it passed,
/// and its last line as JSON.
fn run_judged(args: &[&str]) -> (bool, Value) {
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
    let last = stdout.lines().last().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&data);
    let last = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!("{args:?}: the last line is not JSON ({e}):\n{stdout}\n{stderr}")
    });
    (output.status.success(), last)
}

#[test]
fn every_workload_runs_and_reports() {
    let _alone = ONE_AT_A_TIME.lock();
    assert!(dron_bin().exists(), "{} is not built", dron_bin().display());
    let api = run(&["api", "--jobs", "200", "--concurrency", "16"]);
    assert!(api["creates_per_s"].as_f64().unwrap() > 0.0, "{api}");
    // The open loop: 100 creates due over half a second, each timed from when it was due.
    let open = run(&["api", "--jobs", "100", "--rate", "200"]);
    assert_eq!(open["mode"], "open", "{open}");
    assert!(open["p99_ms"].as_f64().unwrap() > 0.0, "{open}");
    assert!(open["p50_ms"].as_f64() <= open["p99_ms"].as_f64(), "{open}");

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

/// Issue 18's overload, short: real processes (their ceiling is low enough to reach in
/// seconds here), twice the rate held for a few seconds, then the load drops to 40 % of it.
/// The figures depend on the machine and are not judged as targets (docs/benchmarks.md holds
/// the real runs); what is checked is that nothing collapses while overloaded and that the
/// server gets back on time by itself. Before the overload work the started rate fell to
/// about 1 % of the rate held and memory grew without bound; here it must stay at half or
/// more, memory within twice its held figure (the bar; at this scale the cap of
/// launches on their way, which bounds the built-in overload's memory, is not reached, so
/// the built-in run in docs/benchmarks.md is what shows the cap at work), and a second must
/// be held again within 30 s of the drop (about 6 s here). The margin is wide because the
/// held step overstates what processes sustain (the 2 s steps end before the agent's
/// launcher queue fills: 1,130-1,620 a second started while overloaded against 1,600 held),
/// and recovery time goes with the margin under that (docs/benchmarks.md).
#[test]
fn overload_does_not_collapse() {
    let _alone = ONE_AT_A_TIME.lock();
    assert!(dron_bin().exists(), "{} is not built", dron_bin().display());
    let (_, overload) = run_judged(&[
        "overload",
        "--step",
        "400",
        "--step-secs",
        "2",
        "--period-ms",
        "1000",
        "--max-jobs",
        "1600",
        "--limit-ms",
        "1000",
        "--epsilon-ms",
        "2000",
        "--factor",
        "2",
        "--secs",
        "5",
        "--recovery-secs",
        "30",
        "--recovery-margin",
        "0.6",
    ]);
    eprintln!("overload: {overload}");
    let figure = |name: &str| {
        overload[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}: {overload}"))
    };
    let held = figure("held_per_s");
    assert!(
        figure("offered_per_s") >= 1.5 * held,
        "not overloaded: {overload}"
    );
    assert!(
        figure("started_per_s") >= 0.5 * held,
        "collapsed: {overload}"
    );
    assert!(
        figure("rss_peak_mb") <= 2.0 * figure("rss_held_mb").max(50.0),
        "memory ran away: {overload}"
    );
    assert!(
        overload["recovery_ms"].is_u64(),
        "not back on time within 30 s of the drop: {overload}"
    );
}
