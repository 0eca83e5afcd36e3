//! dron's own API beyond Chronos's: task output (whole and followed) and schedule previews.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Server;

/// GET `path`; answers the status, the body's bytes and the two follow headers.
async fn get_output(server: &Server, path: &str) -> (u16, Vec<u8>, Option<u64>, Option<String>) {
    let response = server.http.get(server.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let next = header("x-dron-next-offset").map(|v| v.parse().unwrap());
    let finished = header("x-dron-run-finished");
    let body = response.bytes().await.unwrap().to_vec();
    (status, body, next, finished)
}

/// Creates a job that never fires on its own, runs it once by hand and waits for its success;
/// answers the run's task id.
async fn run_once(server: &Server, name: &str, command: &str) -> String {
    server
        .create(json!({
            "name": name, "command": command, "schedule": "R/2099-01-01T00:00:00Z/P1D"
        }))
        .await;
    let (status, _) = server
        .request("PUT", &format!("/scheduler/job/{name}"), None)
        .await;
    assert_eq!(status, 204);
    let run = server.wait_for_run(name, "succeeded").await;
    run["taskId"].as_str().unwrap().to_string()
}

fn output_path(job: &str, task_id: &str, file: &str) -> String {
    format!("/api/jobs/{job}/runs/{task_id}/{file}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_of_a_finished_run_and_404s() {
    let server = Server::start(1).await;
    let task = &run_once(&server, "talk", "echo out-line; echo err-line >&2").await;

    let (status, body, next, finished) =
        get_output(&server, &output_path("talk", task, "stdout")).await;
    assert_eq!(status, 200);
    assert_eq!(body, b"out-line\n");
    assert_eq!(next, Some(9));
    assert_eq!(finished.as_deref(), Some("true"));
    let (status, body, _, _) = get_output(&server, &output_path("talk", task, "stderr")).await;
    assert_eq!(status, 200);
    assert_eq!(body, b"err-line\n");
    // From an offset: the rest.
    let (_, body, next, _) = get_output(
        &server,
        &format!("{}?offset=4", output_path("talk", task, "stdout")),
    )
    .await;
    assert_eq!(body, b"line\n");
    assert_eq!(next, Some(9));

    // A silent run leaves no output file (the shim creates it on the first bytes): its output
    // is empty and complete, not missing.
    let quiet_task = &run_once(&server, "quiet", "echo only-err >&2").await;
    let (status, body, next, finished) =
        get_output(&server, &output_path("quiet", quiet_task, "stdout")).await;
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert_eq!(next, Some(0));
    assert_eq!(finished.as_deref(), Some("true"));

    // A run that never happened, a task of another job, a foreign id, an unknown job name.
    let target: i64 = task.split(':').nth(1).unwrap().parse().unwrap();
    let missing = format!("ct:{}:0:talk:", target + 1);
    let (status, body) = server
        .request("GET", &output_path("talk", &missing, "stdout"), None)
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("no run"), "{body}");
    let (status, body) = server
        .request("GET", &output_path("other", task, "stdout"), None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "taskId");
    let (status, body) = server
        .request("GET", &output_path("talk", "mesos-1", "stdout"), None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "taskId");
    let (status, body) = server
        .request(
            "GET",
            &format!("{}?offset=-1", output_path("talk", task, "stdout")),
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "offset");
    let (status, _) = server
        .request("GET", &output_path("talk", task, "stdin"), None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_receives_every_line_of_a_running_task_then_ends() {
    let server = Server::start(1).await;
    server
        .create(json!({
            "name": "slow", "command": "for i in 1 2 3; do echo $i; sleep 0.3; done",
            "schedule": "R/2099-01-01T00:00:00Z/P1D"
        }))
        .await;
    let (status, _) = server.request("PUT", "/scheduler/job/slow", None).await;
    assert_eq!(status, 204);
    let run = server.wait_for_run("slow", "running").await;
    let task = run["taskId"].as_str().unwrap().to_string();

    let started = Instant::now();
    let mut received = Vec::new();
    let mut offset = 0;
    let mut answers = 0;
    loop {
        let path = format!(
            "{}?follow=true&offset={offset}",
            output_path("slow", &task, "stdout")
        );
        let (status, body, next, finished) = get_output(&server, &path).await;
        assert_eq!(status, 200);
        answers += 1;
        received.extend_from_slice(&body);
        offset = next.unwrap();
        assert_eq!(offset as usize, received.len());
        if finished.as_deref() == Some("true") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "follow never ended"
        );
    }
    assert_eq!(String::from_utf8(received).unwrap(), "1\n2\n3\n");
    assert!(answers >= 2, "the output came while the task ran");
}

async fn preview(server: &Server, query: &str) -> (u16, Value) {
    server
        .request("GET", &format!("/api/schedule/preview?{query}"), None)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_marks_daylight_saving_changes_and_the_gap_rule() {
    let server = Server::start(1).await;
    let (status, body) = preview(
        &server,
        "schedule=R/2027-03-26T02:30:00/P1D&timeZone=Europe/Berlin&n=4",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let targets = body["targets"].as_array().unwrap();
    let fields = |i: usize, key: &str| targets[i][key].clone();
    assert_eq!(targets.len(), 4);
    assert_eq!(fields(0, "utc"), "2027-03-26T01:30:00.000Z");
    assert_eq!(fields(0, "local"), "2027-03-26T02:30:00.000+01:00");
    assert_eq!(fields(0, "offsetChanged"), false);
    assert_eq!(fields(1, "offsetChanged"), false);
    // 02:30 does not exist on 2027-03-28: it runs at the transition instant, 03:00 CEST.
    assert_eq!(fields(2, "utc"), "2027-03-28T01:00:00.000Z");
    assert_eq!(fields(2, "local"), "2027-03-28T03:00:00.000+02:00");
    assert_eq!(fields(2, "offset"), "+02:00");
    assert_eq!(fields(2, "offsetChanged"), true);
    assert_eq!(fields(3, "local"), "2027-03-29T02:30:00.000+02:00");
    assert_eq!(fields(3, "offsetChanged"), false);
    assert!(body["dstRule"].as_str().unwrap().contains("gap"));

    // Cron, with `from`; n is clamped.
    let (status, body) = preview(
        &server,
        "schedule=30%202%20*%20*%20*&timeZone=Europe/Berlin&from=2027-03-27T12:00:00Z&n=0",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["targets"].as_array().unwrap().len(), 1);
    assert_eq!(body["targets"][0]["local"], "2027-03-28T03:00:00.000+02:00");
    let (_, body) = preview(&server, "schedule=R//PT1S&n=5000").await;
    assert_eq!(body["targets"].as_array().unwrap().len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_errors_name_the_field() {
    let server = Server::start(1).await;
    for (query, field) in [
        ("schedule=R/nonsense/P1D", "schedule"),
        ("schedule=61%20*%20*%20*%20*", "schedule"),
        ("timeZone=UTC", "schedule"),
        ("schedule=R//P1D&timeZone=Mars/Olympus", "timeZone"),
        ("schedule=R//P1D&n=ten", "n"),
        ("schedule=R//P1D&from=yesterday", "from"),
    ] {
        let (status, body) = preview(&server, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_next_targets() {
    let server = Server::start(1).await;
    server
        .create(json!({
            "name": "daily", "command": "true",
            "schedule": "R/2099-01-01T06:00:00/P1D", "scheduleTimeZone": "America/New_York"
        }))
        .await;
    let body = server.ok("GET", "/api/jobs/daily/next?n=3", None).await;
    assert_eq!(body["timeZone"], "America/New_York");
    let targets = body["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3);
    assert_eq!(targets[0]["local"], "2099-01-01T06:00:00.000-05:00");
    assert_eq!(targets[0]["utc"], "2099-01-01T11:00:00.000Z");
    assert_eq!(targets[2]["utc"], "2099-01-03T11:00:00.000Z");
    let (status, body) = server.request("GET", "/api/jobs/nope/next", None).await;
    assert_eq!(status, 404, "{body}");
}
