//! Changing the shard count of a live server while jobs fire every second.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use support::{Server, log_task_command, targets, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_under_a_running_schedule_misses_and_repeats_nothing() {
    let mut server = Server::start(4).await;
    let dir = server.scratch();
    let names: Vec<String> = (0..24).map(|i| format!("job-{i}")).collect();
    for name in &names {
        server
            .create(json!({"name": name, "command": log_task_command(&dir), "schedule": "R//PT1S"}))
            .await;
    }
    let total = || {
        names
            .iter()
            .map(|n| targets(&dir.join(format!("{n}.log"))).len())
            .sum::<usize>()
    };
    for count in [7, 2, 5] {
        let before = total();
        wait_for("jobs firing", Duration::from_secs(20), || async {
            total() >= before + 48
        })
        .await;
        let answer = server
            .ok("PUT", "/api/shards", Some(json!({"count": count})))
            .await;
        assert_eq!(answer["count"], count);
        let shards = server.ok("GET", "/api/shards", None).await;
        let jobs: u64 = shards["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["jobs"].as_u64().unwrap())
            .sum();
        assert_eq!(shards["count"], count);
        assert_eq!(jobs, 24, "every job on exactly one shard: {shards}");
    }
    let before = total();
    wait_for(
        "jobs firing after the last move",
        Duration::from_secs(20),
        || async { total() >= before + 48 },
    )
    .await;
    // The count survives a restart.
    server.restart().await;
    assert_eq!(server.ok("GET", "/api/shards", None).await["count"], 5);

    for name in &names {
        let seen = targets(&dir.join(format!("{name}.log")));
        let unique: HashSet<&i64> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{name}: a target ran twice: {seen:?}"
        );
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        for pair in sorted.windows(2) {
            assert_eq!(
                pair[1] - pair[0],
                1000,
                "{name}: a target was missed: {sorted:?}"
            );
        }
    }
}

#[test]
fn the_shards_cli_explains_an_unreachable_server() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dron"))
        .args(["shards", "show", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach the dron server at http://127.0.0.1:9"),
        "{stderr}"
    );
}
