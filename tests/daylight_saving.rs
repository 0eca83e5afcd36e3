//! Daylight saving under a faked clock (issue 20's daylight-saving fault): a real server whose
//! wall clock (libfaketime; the machine's clock untouched) reads 45 s before one of Berlin's
//! changes runs jobs whose targets fall in the spring-forward gap or the fall-back overlap
//! (`P1D`, `PT30M`, cron), and the targets it really runs, around the change, must be exactly
//! the instants `/api/schedule/preview` gives: no target skipped, none run twice, none moved.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use support::{Server, faketime_env, log_task_command, targets, wait_for};

/// The server's clock starts this long before the change, and the runs are read up to this
/// long after it.
const LEAD_S: i64 = 45;
const TAIL_S: i64 = 45;
const ZONE: &str = "Europe/Berlin";

/// Runs `jobs` (name, schedule in Berlin time) on a server whose clock reads `LEAD_S` before
/// `change` (UTC), and checks the targets they ran until `TAIL_S` after it against the
/// previews.
async fn runs_match_the_previews_across(change: &str, jobs: &[(&str, &str)]) {
    let change_ms = DateTime::parse_from_rfc3339(change)
        .unwrap()
        .timestamp_millis();
    let offset_s = (change_ms / 1000 - LEAD_S) - Utc::now().timestamp();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(data, 2, "", faketime_env(offset_s)).await;
    let until_ms = change_ms + TAIL_S * 1000;
    let dir = server.scratch();
    let mut expected = Vec::new();
    for (name, schedule) in jobs {
        // From the server's now: every target a job created now may run.
        let preview = preview(&server, schedule).await;
        let due: Vec<i64> = preview
            .into_iter()
            .filter(|&target| target <= until_ms)
            .collect();
        server
            .create(json!({
                "name": name, "command": log_task_command(&dir), "schedule": schedule,
                "scheduleTimeZone": ZONE, "epsilon": "PT30S"
            }))
            .await;
        expected.push((name.to_string(), due));
    }
    assert!(
        expected.iter().map(|(_, due)| due.len()).sum::<usize>() >= 3,
        "the jobs have targets around the change: {expected:?}"
    );
    // Until the server's clock is past the window, and every expected run is recorded.
    let server_now = || Utc::now().timestamp_millis() + offset_s * 1000;
    let wait = Duration::from_millis((until_ms - server_now()).max(0) as u64 + 2_000);
    tokio::time::sleep(wait).await;
    wait_for(
        "every previewed target to run",
        Duration::from_secs(15),
        || {
            let ran = ran(&dir, &expected, until_ms);
            let done = ran
                .iter()
                .zip(&expected)
                .all(|(r, (_, e))| r.len() >= e.len());
            async move { done }
        },
    )
    .await;
    let ran = ran(&dir, &expected, until_ms);
    for ((name, due), ran) in expected.iter().zip(ran) {
        assert_eq!(
            ran,
            *due,
            "{name}: the targets it ran (left) against the preview's (right), in ms\n{}",
            server.log()
        );
    }
}

/// The preview's targets from the server's now, in ms.
async fn preview(server: &Server, schedule: &str) -> Vec<i64> {
    let query = [("schedule", schedule), ("timeZone", ZONE), ("n", "20")];
    let url = reqwest::Url::parse_with_params(&server.url("/api/schedule/preview"), query);
    let answer: Value = server
        .http
        .get(url.unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let targets = answer["targets"].as_array().expect("targets");
    targets
        .iter()
        .map(|t| {
            let utc = t["utc"].as_str().unwrap();
            DateTime::parse_from_rfc3339(utc)
                .unwrap()
                .timestamp_millis()
        })
        .collect()
}

/// The targets each job ran, up to `until_ms`, in the order they ran.
fn ran(dir: &std::path::Path, jobs: &[(String, Vec<i64>)], until_ms: i64) -> Vec<Vec<i64>> {
    jobs.iter()
        .map(|(name, _)| {
            let log = dir.join(format!("{name}.log"));
            targets(&log)
                .into_iter()
                .filter(|&t| t <= until_ms)
                .collect()
        })
        .collect()
}

/// 2027-03-28 01:00Z: Berlin's clocks go from 02:00 CET to 03:00 CEST; 02:xx does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_in_the_spring_forward_gap_run_where_the_preview_says() {
    runs_match_the_previews_across(
        "2027-03-28T01:00:00Z",
        &[
            // 02:00:20 does not exist on the 28th.
            ("daily-in-gap", "R/2027-03-26T02:00:20/P1D"),
            // From 01:30:10 CET: 00:30:10Z, 01:00:10Z, ... exactly 30 minutes apart.
            ("half-hourly", "R/2027-03-28T01:30:10/PT30M"),
            // Second 30 of every minute from 01:00 to 03:59 local: hour 2 is missing.
            ("cron-each-minute", "30 * 1-3 * * *"),
        ],
    )
    .await;
}

/// 2027-10-31 01:00Z: Berlin's clocks go from 03:00 CEST back to 02:00 CET; 02:xx happens twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_in_the_fall_back_overlap_run_where_the_preview_says() {
    runs_match_the_previews_across(
        "2027-10-31T01:00:00Z",
        &[
            // 02:59:40 CEST (00:59:40Z) runs; 02:59:40 CET an hour later would be a second run.
            ("daily-in-overlap", "R/2027-10-30T02:59:40/P1D"),
            // From 02:30:10, the earlier (CEST) instant: 00:30:10Z, 01:00:10Z, ...
            ("half-hourly", "R/2027-10-31T02:30:10/PT30M"),
            // Second 30 of every minute of hour 2 local: after the change hour 2 comes again.
            ("cron-hour-two", "30 * 2 * * *"),
        ],
    )
    .await;
}
