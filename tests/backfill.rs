//! Backfill and rerun end to end (issue 21): the real binary, RocksDB, processes and HTTP.
//! Jobs record each run's logical time with when it started and ended, so order, overlap,
//! "once each" and "after its upstream" are read from what really ran.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, dron, lines, wait_for};

/// A daily schedule whose start is long past: its past targets exist, and nothing is due
/// while a test runs (its next target is tomorrow's).
const DAILY: &str = "R/2026-01-01T00:00:00Z/P1D";
const DAY_MS: i64 = 86_400_000;
/// 2026-11-10T00:00:00Z.
const NOV_10: i64 = 1_794_268_800_000;

fn day(n: i64) -> String {
    rfc3339(NOV_10 + n * DAY_MS)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A command that records `<target> start <ns>`, sleeps, then `<target> end <ns>` in
/// `<out>/<job>`; it fails (after recording its start) while `<out>/fail-<target>` exists.
fn recording(out: &Path, sleep: &str) -> String {
    let file = format!("{}/$DRON_JOB", out.display());
    format!(
        "echo \"$DRON_TARGET start $(date +%s%N)\" >> {file}; sleep {sleep}; \
         if [ -e \"{}/fail-$DRON_TARGET\" ]; then exit 1; fi; \
         echo \"$DRON_TARGET end $(date +%s%N)\" >> {file}",
        out.display()
    )
}

fn daily_job(name: &str, out: &Path, sleep: &str) -> Value {
    json!({"name": name, "command": recording(out, sleep), "schedule": DAILY,
           "epsilon": "PT1M", "retries": 0, "cpus": 0.1, "mem": 16})
}

/// One run as recorded: its target, and when it started and ended (ns; None: it failed).
#[derive(Debug, Clone)]
struct Run {
    target: String,
    start: i64,
    end: Option<i64>,
}

fn recorded(out: &Path, job: &str) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for line in lines(&out.join(job)) {
        let parts: Vec<&str> = line.split(' ').collect();
        let [target, what, at] = parts[..] else {
            continue;
        };
        let at: i64 = at.parse().unwrap();
        match what {
            "start" => runs.push(Run {
                target: target.to_string(),
                start: at,
                end: None,
            }),
            _ => {
                let run = runs.iter_mut().rev().find(|r| r.target == target);
                run.expect("an end after its start").end = Some(at);
            }
        }
    }
    runs
}

fn targets_of(runs: &[Run]) -> Vec<String> {
    runs.iter().map(|r| r.target.clone()).collect()
}

/// The most runs that were going at once.
fn most_at_once(runs: &[Run]) -> usize {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for run in runs {
        edges.push((run.start, 1));
        edges.push((run.end.unwrap_or(i64::MAX), -1));
    }
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

async fn start_backfill(server: &Server, job: &str, body: Value) -> String {
    let path = format!("/api/jobs/{job}/backfill");
    let answer = server.ok("POST", &path, Some(body)).await;
    answer["id"].as_str().expect("an id").to_string()
}

async fn status(server: &Server, id: &str) -> Value {
    server
        .ok("GET", &format!("/api/backfills/{id}"), None)
        .await
}

/// Waits until the backfill is finished (or cancelled with nothing running); answers it.
async fn wait_done(server: &Server, id: &str, timeout_s: u64) -> Value {
    let mut last = Value::Null;
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout_s);
    while std::time::Instant::now() < deadline {
        last = status(server, id).await;
        let state = last["state"].as_str().unwrap_or("");
        if state == "finished" || (state == "cancelled" && last["running"] == 0) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "backfill {id} not done in {timeout_s}s: {last}\n{}",
        server.log()
    );
}

fn job_progress<'a>(summary: &'a Value, job: &str) -> &'a Value {
    let jobs = summary["jobs"].as_array().expect("jobs");
    jobs.iter()
        .find(|j| j["job"] == job)
        .expect("the job's part")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_past_days_run_once_each_in_order_or_at_most_parallel_at_once() {
    let server = Server::start(2).await;
    let out = server.scratch();
    server.create(daily_job("serial", &out, "0.1")).await;
    server.create(daily_job("wide", &out, "0.4")).await;
    let range = json!({"from": day(0), "to": day(9)});
    let serial = start_backfill(&server, "serial", range.clone()).await;
    let mut wide_range = range.clone();
    wide_range["parallel"] = json!(4);
    let wide = start_backfill(&server, "wide", wide_range).await;

    let summary = wait_done(&server, &serial, 60).await;
    let days: Vec<String> = (0..10).map(day).collect();
    let runs = recorded(&out, "serial");
    assert_eq!(targets_of(&runs), days, "each day once, oldest first");
    assert_eq!(most_at_once(&runs), 1, "parallel 1: one at a time");
    assert_eq!(summary["state"], "finished");
    assert_eq!(
        (&summary["total"], &summary["succeeded"]),
        (&json!(10), &json!(10))
    );

    wait_done(&server, &wide, 60).await;
    let runs = recorded(&out, "wide");
    let mut targets = targets_of(&runs);
    targets.sort();
    assert_eq!(targets, days, "each day once");
    let most = most_at_once(&runs);
    assert!((2..=4).contains(&most), "{most} at once with parallel 4");

    // Marked as backfill runs, with their logical times, in the history.
    let history = server.runs("serial").await;
    assert_eq!(history.len(), 10);
    assert!(
        history
            .iter()
            .all(|r| r["cause"] == "backfill" && r["state"] == "succeeded")
    );
    let listed = server.ok("GET", "/api/backfills", None).await;
    assert_eq!(listed["backfills"].as_array().unwrap().len(), 2);

    // The CLI: a list, and a backfill followed to its end; the days that succeeded are left
    // alone unless asked.
    let url = server.url("");
    let (code, stdout, stderr) = dron(&url, &["backfill", "list"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&serial) && stdout.contains("finished"),
        "{stdout}"
    );
    let from = day(8);
    let to = day(11);
    let args = [
        "backfill", "serial", "--from", &from, "--to", &to, "--follow",
    ];
    let (code, stdout, stderr) = dron(&url, &args).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("finished") && stdout.contains("LEFT ALONE"),
        "{stdout}"
    );
    let again = targets_of(&recorded(&out, "serial"));
    assert_eq!(again[10..], [day(10), day(11)], "days 8 and 9 left alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_jobs_run_each_day_after_their_upstream_and_not_after_a_failure() {
    let server = Server::start(3).await;
    let out = server.scratch();
    server.create(daily_job("up", &out, "0.05")).await;
    let child = json!({"name": "child", "command": recording(&out, "0"), "parents": ["up"],
                       "retries": 0, "cpus": 0.1, "mem": 16});
    server.create(child).await;
    let mut consumer = daily_job("consumer", &out, "0");
    consumer["dependsOn"] = json!(["job:up@{TODAY}"]);
    server.create(consumer).await;
    // Day 3 of `up` fails.
    std::fs::write(out.join(format!("fail-{}", day(3))), "").unwrap();
    let body = json!({"from": day(0), "to": day(5), "downstream": true, "parallel": 2});
    let id = start_backfill(&server, "up", body).await;
    let summary = wait_done(&server, &id, 60).await;

    let up = recorded(&out, "up");
    let succeeded: BTreeMap<String, i64> = up
        .iter()
        .filter_map(|r| Some((r.target.clone(), r.end?)))
        .collect();
    let good: Vec<String> = [0, 1, 2, 4, 5].into_iter().map(day).collect();
    assert_eq!(succeeded.keys().cloned().collect::<Vec<_>>(), good);
    for job in ["child", "consumer"] {
        let runs = recorded(&out, job);
        let mut targets = targets_of(&runs);
        targets.sort();
        assert_eq!(targets, good, "{job}: once per day, never the failed day");
        for run in &runs {
            assert!(
                run.start > succeeded[&run.target],
                "{job} ran {} before its upstream's run of that day ended",
                run.target
            );
        }
    }
    assert_eq!(summary["state"], "finished");
    let child = job_progress(&summary, "child");
    assert_eq!(
        (&child["succeeded"], &child["upstreamFailed"]),
        (&json!(5), &json!(1))
    );
    assert_eq!(
        job_progress(&summary, "up")["failedTargets"],
        json!([day(3)])
    );

    // The failed day, rerun once its cause is gone, with what is downstream.
    std::fs::remove_file(out.join(format!("fail-{}", day(3)))).unwrap();
    let path = format!("/api/jobs/up/runs/{}/rerun", day(3));
    let rerun = server
        .ok("POST", &path, Some(json!({"downstream": true})))
        .await;
    let summary = wait_done(&server, rerun["id"].as_str().unwrap(), 30).await;
    assert_eq!(summary["succeeded"], 3, "{summary}");
    for job in ["child", "consumer"] {
        let day_3 = targets_of(&recorded(&out, job));
        assert_eq!(day_3.iter().filter(|t| **t == day(3)).count(), 1, "{job}");
    }

    // Without downstream, a backfill's success reaches no child: not through `parents`.
    let alone = json!({"from": day(7), "to": day(7)});
    let id = start_backfill(&server, "up", alone).await;
    wait_done(&server, &id, 30).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!targets_of(&recorded(&out, "child")).contains(&day(7)));
    let view = server.ok("GET", "/api/jobs/child", None).await;
    assert_eq!(view["parentsSucceeded"], json!([]), "{view}");
    assert!(
        server
            .runs("child")
            .await
            .iter()
            .all(|r| r["cause"] == "backfill"),
        "no run of the child by its parent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_resumes_its_backfill_without_running_a_day_twice() {
    let mut server = Server::start(2).await;
    let out = server.scratch();
    server.create(daily_job("slow", &out, "0.5")).await;
    let body = json!({"from": day(0), "to": day(9), "parallel": 2});
    let id = start_backfill(&server, "slow", body).await;
    wait_for("three days to end", Duration::from_secs(30), || {
        let out = out.clone();
        async move {
            recorded(&out, "slow")
                .iter()
                .filter(|r| r.end.is_some())
                .count()
                >= 3
        }
    })
    .await;
    server.kill9();
    server.restart().await;
    let summary = wait_done(&server, &id, 60).await;
    let runs = recorded(&out, "slow");
    let mut targets = targets_of(&runs);
    targets.sort();
    let days: Vec<String> = (0..10).map(day).collect();
    assert_eq!(targets, days, "each day once across the crash");
    assert!(runs.iter().all(|r| r.end.is_some()));
    assert_eq!(summary["succeeded"], 10, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_backfill_starts_nothing_new() {
    let server = Server::start(1).await;
    let out = server.scratch();
    server.create(daily_job("long", &out, "1")).await;
    let id = start_backfill(&server, "long", json!({"from": day(0), "to": day(9)})).await;
    wait_for("the first run", Duration::from_secs(20), || {
        let out = out.clone();
        async move { !recorded(&out, "long").is_empty() }
    })
    .await;
    let (code, stdout, stderr) = dron(&server.url(""), &["backfill", "cancel", &id]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let summary = wait_done(&server, &id, 20).await;
    assert_eq!(summary["state"], "cancelled");
    let started = recorded(&out, "long").len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        recorded(&out, "long").len(),
        started,
        "nothing started after the cancel"
    );
    assert!(started <= 2, "{started} runs");

    // Cancelled with --kill: the live run is killed too.
    let body = json!({"from": day(12), "to": day(15)});
    let id = start_backfill(&server, "long", body).await;
    let running = server.wait_for_run("long", "running").await;
    let (code, stdout, stderr) =
        dron(&server.url(""), &["backfill", "cancel", &id, "--kill"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let summary = wait_done(&server, &id, 20).await;
    assert_eq!(
        (&summary["state"], &summary["failed"]),
        (&json!("cancelled"), &json!(1))
    );
    let runs = server.runs("long").await;
    let killed = runs
        .iter()
        .find(|r| r["taskId"] == running["taskId"])
        .unwrap();
    assert_eq!(killed["state"], "killed", "{killed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_answer_400_naming_the_problem_and_change_nothing() {
    let server = Server::start_with_config(2, "backfill_max_targets = 20").await;
    let out = server.scratch();
    server.create(daily_job("daily", &out, "0")).await;
    let child = json!({"name": "child", "command": "true", "parents": ["daily"]});
    server.create(child).await;
    let cases = [
        (
            "daily",
            json!({"from": day(5), "to": day(1)}),
            400,
            "to",
            "inverted",
        ),
        (
            "daily",
            json!({"from": day(0) .replace("00:00:00", "01:00:00"), "to": day(0).replace("00:00:00", "02:00:00")}),
            400,
            "from",
            "empty",
        ),
        (
            "daily",
            json!({"from": day(0), "to": day(29)}),
            400,
            "to",
            "more than 20",
        ),
        (
            "daily",
            json!({"from": day(0), "to": day(1), "parallel": 0}),
            400,
            "parallel",
            "parallel",
        ),
        (
            "daily",
            json!({"from": "yesterday", "to": day(1)}),
            400,
            "from",
            "RFC 3339",
        ),
        (
            "child",
            json!({"from": day(0), "to": day(1)}),
            400,
            "job",
            "no schedule",
        ),
        (
            "nope",
            json!({"from": day(0), "to": day(1)}),
            404,
            "",
            "does not exist",
        ),
    ];
    for (job, body, code, field, words) in cases {
        let path = format!("/api/jobs/{job}/backfill");
        let (status, answer) = server.request("POST", &path, Some(body.clone())).await;
        assert_eq!(status, code, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(words),
            "{answer}"
        );
        if !field.is_empty() {
            assert_eq!(answer["field"], field, "{answer}");
        }
    }
    let listed = server.ok("GET", "/api/backfills", None).await;
    assert_eq!(listed["backfills"], json!([]), "nothing was created");
    assert!(lines(&out.join("daily")).is_empty(), "nothing ran");
    let (status, _) = server.request("GET", "/api/backfills/bf-0-0", None).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_runs_stay_on_time_during_a_large_backfill() {
    let server = Server::start(2).await;
    let now = || chrono::Utc::now().timestamp_millis();
    let start = rfc3339(now() + 1_000);
    let ticker = json!({"name": "ticker", "command": "true", "schedule": format!("R/{start}/PT0.2S"),
                        "epsilon": "PT30S", "cpus": 0.1, "mem": 16});
    server.create(ticker).await;
    let hourly = json!({"name": "hourly", "command": "true",
                        "schedule": "R/2026-01-01T00:00:00Z/PT1H", "cpus": 0.1, "mem": 16});
    server.create(hourly).await;
    server.wait_for_run("ticker", "succeeded").await;
    let targets = 1_000;
    let to = NOV_10 + (targets - 1) * 3_600_000;
    let body = json!({"from": rfc3339(NOV_10), "to": rfc3339(to), "parallel": 8});
    let began = now();
    let id = start_backfill(&server, "hourly", body).await;
    let summary = wait_done(&server, &id, 120).await;
    let ended = now();
    assert_eq!(summary["succeeded"], targets, "{summary}");
    let target_ms = |run: &Value| {
        let target = run["target"].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(target)
            .unwrap()
            .timestamp_millis()
    };
    let late: Vec<i64> = server
        .runs("ticker")
        .await
        .iter()
        .filter(|r| (began..=ended).contains(&target_ms(r)))
        .filter_map(|r| r["lateMs"].as_i64())
        .collect();
    assert!(
        late.len() >= 3,
        "the ticker ran during the backfill: {late:?}"
    );
    let worst = late.iter().max().copied().unwrap_or(0);
    let mean = late.iter().sum::<i64>() / late.len() as i64;
    eprintln!(
        "ticker lateness during a {targets}-target backfill ({} ms): mean {mean} ms, worst {worst} ms over {} runs",
        ended - began,
        late.len()
    );
    assert!(
        worst < 1_000,
        "a scheduled run started {worst} ms late: {late:?}"
    );
}
