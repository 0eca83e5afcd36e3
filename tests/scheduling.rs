//! Scheduling end to end: the real server, real processes, real HTTP.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Server, log_task_command, targets, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pt1s_job_fires_every_second_once_per_target() {
    let server = Server::start(2).await;
    let dir = server.scratch();
    server
        .create(json!({"name": "tick", "command": log_task_command(&dir), "schedule": "R//PT1S"}))
        .await;
    let log = dir.join("tick.log");
    wait_for("five runs", Duration::from_secs(20), || async {
        targets(&log).len() >= 5
    })
    .await;
    let seen = targets(&log);
    for pair in seen.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            1000,
            "consecutive targets one second apart: {seen:?}"
        );
    }
    wait_for("success counted", Duration::from_secs(10), || async {
        server.job("tick").await["successCount"].as_u64() >= Some(5)
    })
    .await;
    // Runs page newest first.
    let first = server.ok("GET", "/api/jobs/tick/runs?limit=2", None).await;
    let second = server
        .ok("GET", "/api/jobs/tick/runs?limit=2&offset=2", None)
        .await;
    let target = |page: &serde_json::Value, i: usize| {
        page["runs"][i]["target"].as_str().unwrap().to_string()
    };
    assert!(target(&first, 0) > target(&first, 1) && target(&first, 1) > target(&second, 0));
    let listed = server.ok("GET", "/scheduler/jobs", None).await;
    assert_eq!(listed[0]["name"], "tick");
    assert_eq!(
        listed[0]["schedule"].as_str().unwrap().split('/').count(),
        3,
        "start made explicit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_passes_environment_and_arguments() {
    let server = Server::start(2).await;
    let out = server.scratch().join("env.txt");
    let script = format!(
        "echo \"$DRON_JOB $GREETING $mesos_task_id\" > {}",
        out.display()
    );
    server
        .create(json!({
            "name": "argv", "command": "/bin/sh", "shell": false, "arguments": ["-c", script],
            "schedule": "R/2099-01-01T00:00:00Z/P1D",
            "environmentVariables": [{"name": "GREETING", "value": "hello"}]
        }))
        .await;
    let (status, _) = server.request("PUT", "/scheduler/job/argv", None).await;
    assert_eq!(status, 204);
    let run = server.wait_for_run("argv", "succeeded").await;
    let written = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        written.trim(),
        format!("argv hello {}", run["taskId"].as_str().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_then_count_as_errors() {
    let server = Server::start(1).await;
    let attempts = server.scratch().join("attempts");
    let command = format!("echo x >> {}; exit 3", attempts.display());
    server
        .create(json!({"name": "flaky", "command": command, "schedule": "R1//PT1H", "retries": 2}))
        .await;
    let run = server.wait_for_run("flaky", "failed").await;
    assert_eq!(run["exitCode"], 3);
    assert_eq!(run["attempt"], 2);
    assert_eq!(
        support::lines(&attempts).len(),
        3,
        "one run and two retries"
    );
    let job = server.job("flaky").await;
    assert_eq!(job["errorCount"], 1);
    assert_ne!(job["lastError"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_whole_process_group() {
    let server = Server::start(1).await;
    let marker = server.scratch().join("survived");
    // The grandchild would write the marker if it outlived the timeout.
    let command = format!("(sleep 2; touch {}) & sleep 30", marker.display());
    server
        .create(json!({"name": "slow", "command": command, "schedule": "R1//PT1H", "retries": 0, "maxCompletionTime": 300}))
        .await;
    server.wait_for_run("slow", "timed_out").await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // past the grandchild's 2 s
    assert!(!marker.exists(), "the grandchild was killed with its group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_ends_a_running_task() {
    let server = Server::start(1).await;
    server.create(json!({"name": "sleeper", "command": "sleep 300", "schedule": "R/2099-01-01T00:00:00Z/P1D"})).await;
    server.ok("PUT", "/v1/scheduler/job/sleeper", None).await;
    server.wait_for_run("sleeper", "running").await;
    let (status, _) = server
        .request("DELETE", "/scheduler/task/kill/sleeper", None)
        .await;
    assert_eq!(status, 204);
    let run = server.wait_for_run("sleeper", "killed").await;
    assert_eq!(run["attempt"], 0, "a killed task is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_job_ends_when_its_task_reports() {
    let server = Server::start(1).await;
    server.create(json!({"name": "async", "command": "true", "async": true, "schedule": "R/2099-01-01T00:00:00Z/P1D"})).await;
    server.ok("PUT", "/scheduler/job/async", None).await;
    let run = server.wait_for_run("async", "running").await;
    let task = run["taskId"].as_str().unwrap().to_string();
    // The process has exited, but the job is async: it stays running until reported.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.runs("async").await[0]["state"], "running");
    let (status, body) = server
        .request(
            "PUT",
            &format!("/scheduler/task/{task}"),
            Some(json!({"statusCode": 0})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    server.wait_for_run("async", "succeeded").await;
    let (status, body) = server
        .request(
            "PUT",
            &format!("/scheduler/task/{task}"),
            Some(json!({"statusCode": 0})),
        )
        .await;
    assert_eq!(status, 404, "a finished task: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_job_runs_after_all_its_parents() {
    let server = Server::start(3).await;
    let dir = server.scratch();
    for parent in ["extract", "load"] {
        server.create(json!({"name": parent, "command": log_task_command(&dir), "schedule": "R/2099-01-01T00:00:00Z/P1D"})).await;
    }
    server.create(json!({"name": "report", "command": log_task_command(&dir), "parents": ["extract", "load"]})).await;
    server.ok("PUT", "/scheduler/job/extract", None).await;
    server.wait_for_run("extract", "succeeded").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        targets(&dir.join("report.log")).is_empty(),
        "one parent is not enough"
    );
    server.ok("PUT", "/scheduler/job/load", None).await;
    wait_for("the child run", Duration::from_secs(20), || async {
        targets(&dir.join("report.log")).len() == 1
    })
    .await;

    let dot = server.ok("GET", "/scheduler/graph/dot", None).await;
    let dot = dot.as_str().unwrap();
    assert!(
        dot.contains("\"extract\" -> \"report\"") && dot.contains("\"load\" -> \"report\""),
        "{dot}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_and_unknown_parents_are_refused_naming_them() {
    let server = Server::start(3).await;
    server
        .create(json!({"name": "a", "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D"}))
        .await;
    server
        .create(json!({"name": "b", "command": "true", "parents": ["a"]}))
        .await;
    server
        .create(json!({"name": "c", "command": "true", "parents": ["b"]}))
        .await;
    let (status, body) = server
        .request(
            "POST",
            "/scheduler/dependency",
            Some(json!({"name": "a", "command": "true", "parents": ["c"]})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["field"], "parents");
    assert_eq!(
        body["error"],
        "parents would close a dependency cycle: a -> c -> b -> a"
    );
    let (status, body) = server
        .request(
            "POST",
            "/scheduler/dependency",
            Some(json!({"name": "d", "command": "true", "parents": ["a", "ghost"]})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("ghost"), "{body}");
    // Deleting a parent re-wires its children to its own parents, as Chronos does.
    let (status, body) = server.request("DELETE", "/scheduler/job/b", None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(server.job("c").await["parents"], json!(["a"]));
    // Nothing changed: a is still a scheduled job.
    assert_eq!(server.job("a").await["parents"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_parent_rewires_its_children_as_chronos_does() {
    let server = Server::start(3).await;
    let schedule = "R/2099-01-01T00:00:00Z/P1D";
    for name in ["root", "other"] {
        server
            .create(json!({"name": name, "command": "true", "schedule": schedule}))
            .await;
    }
    server
        .create(json!({"name": "mid", "command": "true", "parents": ["root", "other"]}))
        .await;
    server
        .create(json!({"name": "leaf", "command": "true", "parents": ["other", "mid"], "disabled": true}))
        .await;
    server
        .create(json!({"name": "only", "command": "true", "parents": ["mid"]}))
        .await;
    server.ok("PUT", "/scheduler/job/success/only", None).await;

    // A dependent parent: its children take its parents, deduplicated, keeping the others.
    let (status, body) = server.request("DELETE", "/scheduler/job/mid", None).await;
    assert_eq!(status, 204, "{body}");
    let leaf = server.job("leaf").await;
    assert_eq!(leaf["parents"], json!(["other", "root"]));
    assert_eq!(leaf["disabled"], true, "the rest of the child is kept");
    let only = server.job("only").await;
    assert_eq!(only["parents"], json!(["root", "other"]));
    assert_eq!(only["successCount"], 1, "counters are kept");
    let (status, _) = server.request("GET", "/scheduler/job/mid", None).await;
    assert_eq!(status, 404);

    // A scheduled parent: a child keeping other parents just loses it; a child left with
    // none takes its schedule.
    let (status, body) = server.request("DELETE", "/scheduler/job/root", None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(server.job("only").await["parents"], json!(["other"]));
    assert_eq!(server.job("leaf").await["parents"], json!(["other"]));
    let (status, body) = server.request("DELETE", "/scheduler/job/other", None).await;
    assert_eq!(status, 204, "{body}");
    for name in ["only", "leaf"] {
        let job = server.job(name).await;
        assert_eq!(job["parents"], json!([]), "{job}");
        assert!(job["schedule"].as_str().unwrap().ends_with("/P1D"), "{job}");
    }
    assert_eq!(server.job("leaf").await["disabled"], true);
    assert_eq!(server.job("only").await["successCount"], 1);
}

/// Jobs whose runs outlast their period are overloaded for good: each keeps one live
/// instance (its running run), its targets due meanwhile wait with no record of their own,
/// and those that cannot start within epsilon are recorded as skipped ranges. Before, every
/// due target became a queued instance (written when queued and again when skipped), and the
/// live set grew with the overload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_slower_than_their_period_keep_one_live_instance_each() {
    let server = Server::start(2).await;
    let jobs = 20;
    for i in 0..jobs {
        server
            .create(json!({
                "name": format!("slow-{i}"), "command": "", "builtinSleepMs": 1500,
                "schedule": "R//PT0.2S", "epsilon": "PT0.5S",
            }))
            .await;
    }
    let live = || async {
        let shards = server.ok("GET", "/api/shards", None).await;
        let shards = shards["shards"].as_array().cloned().unwrap_or_default();
        shards
            .iter()
            .map(|s| s["live_instances"].as_u64().unwrap())
            .sum::<u64>()
    };
    let mut most = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        most = most.max(live().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(most <= jobs, "{most} live instances for {jobs} jobs");
    let runs = server
        .ok("GET", "/api/jobs/slow-0/runs?limit=50", None)
        .await;
    let runs = runs["runs"].as_array().unwrap();
    let kinds = |kind: &str| runs.iter().filter(|r| r["kind"] == kind).count();
    assert!(kinds("skipped") >= 1, "skipped ranges recorded: {runs:#?}");
    let succeeded = runs.iter().filter(|r| r["state"] == "succeeded").count();
    assert!(succeeded >= 2, "runs go on one after another: {runs:#?}");
}
