//! Crashes: kill -9 of the server, a panic inside one shard's coordinator.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dron_model::ring::Ring;
use serde_json::json;
use support::{
    Server, children_running, find_files, kill9_pid, lines, log_task_command, parent_of, targets,
    wait_for,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_no_acknowledged_job() {
    let mut server = Server::start(4).await;
    let mut creates = Vec::new();
    for i in 0..200 {
        let job = json!({"name": format!("job-{i}"), "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D"});
        let request = server
            .http
            .post(server.url("/scheduler/iso8601"))
            .json(&job)
            .send();
        creates.push(tokio::spawn(request));
    }
    let mut acknowledged = HashSet::new();
    for (i, create) in creates.into_iter().enumerate() {
        if create.await.unwrap().is_ok_and(|r| r.status() == 204) {
            acknowledged.insert(format!("job-{i}"));
        }
    }
    assert_eq!(acknowledged.len(), 200);
    server.kill9();
    server.restart().await;
    let jobs = server.ok("GET", "/scheduler/jobs", None).await;
    let names: HashSet<String> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, acknowledged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_running_across_a_kill9_is_adopted_not_rerun() {
    let mut server = Server::start(2).await;
    let dir = server.scratch();
    let done = dir.join("done");
    let log = start_long(
        &server,
        &format!("sleep 2; echo done >> {}", done.display()),
    )
    .await;
    server.kill9();
    // The task outlives the server and finishes while it is down.
    wait_for(
        "the task to finish without its server",
        Duration::from_secs(10),
        || async { done.exists() },
    )
    .await;
    server.restart().await;
    succeeded_once(&server, &done, &log).await;
}

/// Creates the job `long` (it logs its start, then runs `rest`), runs it now and waits until
/// its process has really started ("running" only means handed to the agent); answers the
/// file its start was logged in.
async fn start_long(server: &Server, rest: &str) -> PathBuf {
    let dir = server.scratch();
    let command = format!("{}; {rest}", log_task_command(&dir));
    server
        .create(
            json!({"name": "long", "command": command, "schedule": "R/2099-01-01T00:00:00Z/P1D"}),
        )
        .await;
    server.ok("PUT", "/scheduler/job/long", None).await;
    let log = dir.join("long.log");
    wait_for("the task to start", Duration::from_secs(10), || async {
        targets(&log).len() == 1
    })
    .await;
    log
}

/// The run of `long` is recorded as succeeded on its first attempt, and it ran once.
async fn succeeded_once(server: &Server, done: &Path, log: &Path) {
    let run = server.wait_for_run("long", "succeeded").await;
    assert_eq!(run["exitCode"], 0);
    assert_eq!(run["attempt"], 0);
    assert_eq!(lines(done).len(), 1, "the task ran once");
    assert_eq!(targets(log).len(), 1);
}

/// The server's launcher forks each task's shim: the shim outlives a kill -9 of the launcher
/// and then of the server, and the restarted server records how the task ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_launched_through_the_launcher_survives_kill9_of_launcher_and_server() {
    let mut server = Server::start(2).await;
    let dir = server.scratch();
    let (go, done) = (dir.join("go"), dir.join("done"));
    let rest = format!(
        "while [ ! -f {} ]; do sleep 0.05; done; echo done >> {}",
        go.display(),
        done.display()
    );
    let log = start_long(&server, &rest).await;
    let server_pid = server.pid().unwrap();
    let launchers = children_running(server_pid, "task-launcher");
    assert_eq!(launchers.len(), 1, "one launcher runs beside the server");
    let shim_pid_file = &find_files(&server.data.path().join("data/runs/long"), "shim.pid")[0];
    let shim_pid: u32 = std::fs::read_to_string(shim_pid_file)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        parent_of(shim_pid),
        Some(launchers[0]),
        "the launcher forked the shim"
    );
    kill9_pid(launchers[0]);
    server.kill9();
    std::fs::write(&go, "").unwrap();
    wait_for(
        "the task to finish without its launcher and server",
        Duration::from_secs(10),
        || async { done.exists() },
    )
    .await;
    server.restart().await;
    succeeded_once(&server, &done, &log).await;
}

/// A launcher killed while the server runs: the next run starts its shim directly, the one
/// after through a new launcher, and both succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_go_on_when_the_launcher_dies() {
    let mut server = Server::start(1).await;
    let job = json!({"name": "quick", "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D"});
    server.create(job).await;
    server.ok("PUT", "/scheduler/job/quick", None).await;
    server.wait_for_run("quick", "succeeded").await;
    let server_pid = server.pid().unwrap();
    let first = children_running(server_pid, "task-launcher");
    assert_eq!(first.len(), 1, "one launcher runs beside the server");
    kill9_pid(first[0]);
    for expected in [2, 3] {
        server.ok("PUT", "/scheduler/job/quick", None).await;
        wait_for("the run to succeed", Duration::from_secs(10), || async {
            server.job("quick").await["successCount"] == expected
        })
        .await;
    }
    assert!(
        server.log().contains("launcher unavailable"),
        "no fallback logged"
    );
    let second = children_running(server_pid, "task-launcher");
    assert_eq!(second.len(), 1, "a new launcher runs");
    assert_ne!(second, first);
    server.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_missed_while_down_are_skipped_and_open_ones_run_once() {
    let mut server = Server::start(2).await;
    let dir = server.scratch();
    server.create(json!({"name": "beat", "command": log_task_command(&dir), "schedule": "R//PT1S", "epsilon": "PT2S"})).await;
    let log = dir.join("beat.log");
    wait_for("the first runs", Duration::from_secs(10), || async {
        targets(&log).len() >= 2
    })
    .await;
    server.kill9();
    // Down for longer than epsilon: the downtime is the point of this test.
    tokio::time::sleep(Duration::from_secs(5)).await;
    server.restart().await;
    let skipped = server.wait_for_run("beat", "skipped").await;
    assert!(skipped["count"].as_u64().unwrap() >= 2, "{skipped}");
    let before = targets(&log).len();
    wait_for(
        "runs after the restart",
        Duration::from_secs(10),
        || async { targets(&log).len() >= before + 3 },
    )
    .await;
    let seen = targets(&log);
    let unique: HashSet<&i64> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no target ran twice: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_shard_is_rebuilt_and_the_others_never_notice() {
    let server = Server::start(2).await;
    let dir = server.scratch();
    let ring = Ring::new(2);
    let on_shard = |shard: u32| {
        (0..)
            .map(|i| format!("beat-{i}"))
            .find(|name| ring.owner(name) == shard)
            .unwrap()
    };
    let (victim, bystander) = (on_shard(0), on_shard(1));
    for name in [&victim, &bystander] {
        server
            .create(json!({"name": name, "command": log_task_command(&dir), "schedule": "R//PT1S"}))
            .await;
    }
    let (victim_log, bystander_log) = (
        dir.join(format!("{victim}.log")),
        dir.join(format!("{bystander}.log")),
    );
    wait_for("both jobs running", Duration::from_secs(10), || async {
        targets(&victim_log).len() >= 2 && targets(&bystander_log).len() >= 2
    })
    .await;

    let (status, _) = server
        .request("POST", "/api/debug/shards/0/panic", None)
        .await;
    assert_eq!(status, 202);
    wait_for(
        "the panic to be logged",
        Duration::from_secs(10),
        || async { server.log().contains("coordinator restarted from storage") },
    )
    .await;
    let after_panic = targets(&victim_log).len();
    wait_for(
        "the rebuilt shard to fire again",
        Duration::from_secs(10),
        || async { targets(&victim_log).len() >= after_panic + 3 },
    )
    .await;

    for log in [&victim_log, &bystander_log] {
        let seen = targets(log);
        let unique: HashSet<&i64> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "no duplicate target: {seen:?}");
        for pair in seen.windows(2) {
            assert_eq!(pair[1] - pair[0], 1000, "no target missed: {seen:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parents_success_is_remembered_across_a_kill9() {
    let mut server = Server::start(3).await;
    let dir = server.scratch();
    for parent in ["left", "right"] {
        server.create(json!({"name": parent, "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D"})).await;
    }
    server.create(json!({"name": "joined", "command": log_task_command(&dir), "parents": ["left", "right"]})).await;
    server.ok("PUT", "/scheduler/job/left", None).await;
    server.wait_for_run("left", "succeeded").await;
    wait_for(
        "the child to record its parent's success",
        Duration::from_secs(10),
        || async {
            server.ok("GET", "/api/jobs/joined", None).await["parentsSucceeded"] == json!(["left"])
        },
    )
    .await;
    // Chronos kept "left has succeeded" in memory and forgot it on fail-over; dron persists it.
    server.restart().await;
    server.ok("PUT", "/scheduler/job/right", None).await;
    let log = dir.join("joined.log");
    wait_for("the child to run", Duration::from_secs(20), || async {
        targets(&log).len() == 1
    })
    .await;
}
