//! Retention with durations of seconds: old runs (history and run directories), satisfied
//! resources and notices are pruned in the background while every run inside the window
//! stays readable, and `dron gc --dry-run` says what would go without deleting it.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use support::cluster::{Cluster, ClusterAgent};
use support::{Server, dron, wait_for};

fn ms(time: &Value) -> i64 {
    DateTime::parse_from_rfc3339(time.as_str().unwrap_or_default())
        .map(|t| t.timestamp_millis())
        .unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn iso(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn satisfied(server: &Server, resource: &str) -> bool {
    let lineage = server
        .ok("GET", &format!("/api/resources?id={resource}"), None)
        .await;
    lineage["satisfied"] == true
}

async fn announce(server: &Server, resource: &str, at_ms: i64) {
    let event = json!({"resource": resource, "at": iso(at_ms)});
    server.ok("POST", "/api/resources", Some(event)).await;
}

/// The targets (ms) of the run directories of `job`.
fn run_dir_targets(server: &Server, job: &str) -> Vec<i64> {
    let dir = server.data.path().join("data/runs").join(job);
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries
        .filter_map(|e| e.file_name().to_str()?.split('-').next()?.parse().ok())
        .collect()
}

/// The number in `<verb> <N> <what>` of `dron gc`'s output.
fn count_of(out: &str, verb: &str, what: &str) -> u64 {
    out.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(verb)?.trim_start();
            let (count, named) = rest.split_once(' ')?;
            named.starts_with(what).then(|| count.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no '{verb} N {what}' in:\n{out}"))
}

const BACKGROUND: &str = r#"
[retention]
keep_runs = 2
max_age = "PT2S"
resources_max_age = "PT2S"
notices_max_age = "PT2S"
interval = "PT1S"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_runs_resources_and_notices_go_in_the_background_and_the_window_stays() {
    let server = Server::start_with_config(2, BACKGROUND).await;
    let started = Instant::now();
    server
        .create(json!({"name": "often", "command": "echo out", "schedule": "R//PT1S"}))
        .await;
    server
        .create(
            json!({"name": "failing", "command": "exit 3", "schedule": "R//PT1S", "retries": 0, "owner": "ops@example.com"}),
        )
        .await;
    announce(&server, "r:old", now_ms() - 3_600_000).await;
    announce(&server, "r:future", now_ms() + 3_600_000).await;

    // Pruned: older than max_age, plus a pass's interval and some slack.
    let stale = |target_ms: i64| target_ms < now_ms() - 5_000;
    wait_for(
        "old runs, resources and notices to be pruned",
        Duration::from_secs(40),
        || async {
            let runs = server.runs("often").await;
            let notices = server
                .ok("GET", "/api/notifications?limit=1000", None)
                .await;
            let notices = notices["notifications"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            started.elapsed() > Duration::from_secs(8)
                && runs.len() >= 2
                && !runs.iter().any(|run| stale(ms(&run["target"])))
                && !run_dir_targets(&server, "often").into_iter().any(stale)
                && !satisfied(&server, "r:old").await
                && notices.iter().any(|n| n["job"] == "failing")
                && !notices.iter().any(|n| stale(ms(&n["at"])))
        },
    )
    .await;
    assert!(
        satisfied(&server, "r:future").await,
        "a resource inside its window stays"
    );
    assert!(
        run_dir_targets(&server, "often").len() < 8,
        "run directories are pruned: {:?}",
        run_dir_targets(&server, "often")
    );

    // Every run inside the window is readable, its output included.
    let window_starts = now_ms() - 1_000;
    let runs = server.runs("often").await;
    let recent: Vec<&Value> = runs
        .iter()
        .filter(|run| run["state"] == "succeeded" && ms(&run["target"]) >= window_starts)
        .collect();
    for run in &recent {
        let task = run["taskId"].as_str().unwrap();
        let stdout = server
            .http
            .get(server.url(&format!("/api/jobs/often/runs/{task}/stdout")))
            .send()
            .await
            .unwrap();
        assert_eq!(stdout.status(), 200, "the output of {task}");
        assert_eq!(stdout.text().await.unwrap(), "out\n");
    }
    let metrics = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    for series in [
        "dron_disk_bytes{what=\"runs\"}",
        "dron_disk_inodes{what=\"runs\"}",
        "dron_disk_bytes{what=\"resources\"}",
        "dron_disk_bytes{what=\"shard-000\"}",
        "dron_retention_pruned_total{what=\"history\"}",
    ] {
        assert!(metrics.contains(series), "{series} in /metrics");
    }
}

const BY_HAND: &str = r#"
[retention]
keep_runs = 1
max_age = "PT1S"
resources_max_age = "P1D"
interval = "PT1H"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_dry_run_says_what_would_go_and_gc_deletes_it() {
    let server = Server::start_with_config(2, BY_HAND).await;
    announce(&server, "r:ancient", now_ms() - 3 * 86_400_000).await;
    announce(&server, "r:recent", now_ms()).await;
    server
        .create(json!({"name": "tick", "command": "echo tick", "schedule": "R//PT1S"}))
        .await;
    wait_for("four runs of tick", Duration::from_secs(20), || async {
        let runs = server.runs("tick").await;
        runs.iter().filter(|r| r["state"] == "succeeded").count() >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_100)).await; // the first three are past max_age
    let oldest = |runs: &[Value]| runs.iter().map(|r| ms(&r["target"])).min().unwrap();
    let first_target = oldest(&server.runs("tick").await);

    let (code, out, err) = dron(&server.url(""), &["gc", "--dry-run"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("runs before "), "{out}");
    assert!(
        count_of(&out, "would delete", "history entries") >= 2,
        "{out}"
    );
    assert!(out.contains("\n  tick ("), "the job is named: {out}");
    assert_eq!(
        count_of(&out, "would delete", "satisfied resources"),
        1,
        "{out}"
    );
    assert!(out.contains("\n  r:ancient\n"), "{out}");
    assert!(
        count_of(&out, "would delete", "run directories") >= 2,
        "{out}"
    );
    assert!(out.contains("\n  tick/"), "{out}");
    // A dry run deletes nothing.
    assert_eq!(oldest(&server.runs("tick").await), first_target);
    assert!(satisfied(&server, "r:ancient").await);
    assert!(run_dir_targets(&server, "tick").contains(&first_target));

    let (code, out, err) = dron(&server.url(""), &["gc"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(count_of(&out, "deleted", "history entries") >= 2, "{out}");
    assert!(oldest(&server.runs("tick").await) > first_target);
    assert!(!satisfied(&server, "r:ancient").await);
    assert!(satisfied(&server, "r:recent").await);
    assert!(!run_dir_targets(&server, "tick").contains(&first_target));
    assert!(Path::new(&server.data.path().join("data/runs/tick")).exists());

    let (status, body) = server
        .request("POST", "/api/gc", Some(json!({"dryRun": "yes"})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "dryRun", "{body}");
}

/// A cluster's runs, asked of server `index` (a follower forwards to the leader).
async fn cluster_runs(cluster: &Cluster, index: usize, job: &str) -> Vec<Value> {
    let path = format!("/api/jobs/{job}/runs?limit=1000");
    match cluster.request(index, "GET", &path, None).await {
        Ok((200, body)) => body["runs"].as_array().cloned().unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The index of the last entry server `index` has applied, as it says.
async fn applied(cluster: &Cluster, index: usize) -> u64 {
    let status = cluster.status(index).await.unwrap_or_default();
    status["lastApplied"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_cluster_the_leader_prunes_through_the_log_and_agents_prune_their_own() {
    let cluster = Cluster::start(3, BY_HAND).await;
    let agent_flags = [
        "--keep-runs",
        "1",
        "--max-age",
        "PT1S",
        "--prune-every",
        "PT1S",
    ];
    let agent = ClusterAgent::start_with_args(&cluster, "w1", 4.0, &agent_flags);
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let job = json!({"name": "tick", "command": "echo tick", "schedule": "R//PT1S"});
    let created = cluster
        .request(follower, "POST", "/scheduler/iso8601", Some(job))
        .await;
    assert!(
        matches!(created, Ok((204, _))),
        "{created:?}\n{}",
        cluster.logs()
    );
    wait_for("four runs of tick", Duration::from_secs(30), || async {
        let runs = cluster_runs(&cluster, follower, "tick").await;
        runs.iter().filter(|r| r["state"] == "succeeded").count() >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let runs = cluster_runs(&cluster, follower, "tick").await;
    let first_target = runs.iter().map(|r| ms(&r["target"])).min().unwrap();

    // Through a follower, to the leader's pruner, whose deletions go through the log.
    let (status, report) = cluster
        .request(follower, "POST", "/api/gc", Some(json!({})))
        .await
        .unwrap();
    assert_eq!(status, 200, "{report}");
    assert!(report["history"]["count"].as_u64() >= Some(2), "{report}");
    let oldest = |runs: &[Value]| runs.iter().map(|r| ms(&r["target"])).min().unwrap();
    assert!(oldest(&cluster_runs(&cluster, follower, "tick").await) > first_target);
    // The agent deletes its own old run directories.
    let first_dir = agent
        .runs_root()
        .join("tick")
        .join(format!("{first_target}-0"));
    wait_for(
        "the agent to prune its run directories",
        Duration::from_secs(15),
        || async { !first_dir.exists() },
    )
    .await;

    // The follower applied the deletions too: its own copy, backed up and restored.
    let committed = applied(&cluster, leader).await;
    wait_for(
        "the follower to apply the pruning",
        Duration::from_secs(10),
        || async { applied(&cluster, follower).await >= committed },
    )
    .await;
    let backups = tempfile::tempdir().unwrap();
    let dir = backups.path().join("node");
    let url = cluster.nodes[follower].url("");
    let (code, out, err) = dron(&url, &["backup", dir.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    let manifest = std::fs::read_to_string(dir.join("backup.json")).unwrap();
    assert!(manifest.contains("\"cluster-node\""), "{manifest}");
    drop(agent);
    drop(cluster);
    let restored = tempfile::tempdir().unwrap();
    let restore = std::process::Command::new(env!("CARGO_BIN_EXE_dron"))
        .arg("restore")
        .arg(&dir)
        .arg("--data-dir")
        .arg(restored.path().join("data"))
        .output()
        .unwrap();
    assert!(restore.status.success(), "{restore:?}");
    let server = Server::start_on(restored, 2, "").await;
    let runs = server.runs("tick").await;
    assert!(!runs.is_empty(), "the job and its runs are there");
    assert!(oldest(&runs) > first_target, "pruned on the follower too");
}
