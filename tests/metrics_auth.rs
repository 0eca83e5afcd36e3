//! `GET /metrics` and optional authentication, against the real server.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, wait_for};

/// The value of the sample line `series` (name with its labels, exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

/// The sum of every sample of metric `name`, whatever its labels.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(server: &Server) -> String {
    let response = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_shows_in_the_metrics() {
    let server = Server::start(2).await;
    server
        .create(json!({"name": "once", "command": "true", "schedule": "R1//PT1H"}))
        .await;
    server.wait_for_run("once", "succeeded").await;

    // Histograms are folded in by the exporter's upkeep: allow it a few seconds.
    let mut text = String::new();
    let ready = |text: &str| {
        sample(text, "dron_runs_finished_total{state=\"succeeded\"}") == Some(1.0)
            && sample(text, "dron_start_lateness_seconds_count") == Some(1.0)
            && sample(text, "dron_launch_delay_seconds_count") == Some(1.0)
    };
    for _ in 0..150 {
        text = scrape(&server).await;
        if ready(&text) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready(&text), "{text}");
    assert_eq!(sample(&text, "dron_launches_total"), Some(1.0), "{text}");
    assert!(
        text.contains("# TYPE dron_start_lateness_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("dron_start_lateness_seconds_bucket{le=\"+Inf\"} 1"),
        "{text}"
    );
    let lateness = sample(&text, "dron_start_lateness_seconds_sum").unwrap();
    assert!((0.0..5.0).contains(&lateness), "lateness {lateness}");
    // Its launch, from the shard's start to the agent's report, timed once.
    assert_eq!(
        sample(&text, "dron_launch_delay_seconds_count"),
        Some(1.0),
        "{text}"
    );
    let delay = sample(&text, "dron_launch_delay_seconds_sum").unwrap();
    assert!((0.0..5.0).contains(&delay), "launch delay {delay}");
    // Nothing failed, retried or was skipped.
    assert_eq!(
        sample(&text, "dron_runs_finished_total{state=\"failed\"}").unwrap_or(0.0),
        0.0
    );
    assert_eq!(sample(&text, "dron_retries_total").unwrap_or(0.0), 0.0);
    assert_eq!(
        sample(&text, "dron_skipped_targets_total").unwrap_or(0.0),
        0.0
    );
    // Per-shard gauges, read at scrape time: one job, on one of the two shards.
    assert_eq!(sum(&text, "dron_jobs"), 1.0, "{text}");
    assert!(text.contains("dron_jobs{shard=\"0\"}"), "{text}");
    assert!(text.contains("dron_jobs{shard=\"1\"}"), "{text}");
    assert_eq!(sum(&text, "dron_live_instances"), 0.0, "{text}");
    assert!(text.contains("dron_runs_launching{shard=\"1\"}"), "{text}");
    assert_eq!(sum(&text, "dron_runs_launching"), 0.0, "{text}");
    assert!(
        text.contains("dron_shard_behind_seconds{shard=\"1\"}"),
        "{text}"
    );
    // Every API request is timed, by method and status.
    assert!(
        sample(
            &text,
            "dron_api_request_duration_seconds_count{method=\"POST\",status=\"204\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_and_retries_are_counted() {
    let server = Server::start(1).await;
    server
        .create(json!({"name": "bad", "command": "false", "schedule": "R1//PT1H", "retries": 1}))
        .await;
    server.wait_for_run("bad", "failed").await;
    let text = scrape(&server).await;
    assert_eq!(
        sample(&text, "dron_runs_finished_total{state=\"failed\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "dron_retries_total"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "dron_launches_total"), Some(2.0), "{text}");
}

const AUTH: &str =
    "[auth]\nbasic = [{ user = \"ops\", password = \"pw\" }]\ntokens = [\"tok-1\"]\n";

#[tokio::test(flavor = "multi_thread")]
async fn configured_auth_guards_every_endpoint_but_health() {
    let server = Server::start_with_config(1, AUTH).await;
    let jobs = server.url("/scheduler/jobs");

    let refused = server.http.get(&jobs).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.headers()["www-authenticate"],
        "Basic realm=\"dron\""
    );
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body, json!({"error": "authentication required"}));

    let basic = server.http.get(&jobs).basic_auth("ops", Some("pw"));
    assert_eq!(basic.send().await.unwrap().status(), 200);
    let bearer = server.http.get(&jobs).bearer_auth("tok-1");
    assert_eq!(bearer.send().await.unwrap().status(), 200);

    for wrong in [
        server.http.get(&jobs).basic_auth("ops", Some("pW")),
        server.http.get(&jobs).basic_auth("ops", None::<&str>),
        server.http.get(&jobs).basic_auth("nobody", Some("pw")),
        server.http.get(&jobs).bearer_auth("tok-2"),
        server.http.get(&jobs).bearer_auth("tok-1x"),
        server.http.get(&jobs).header("authorization", "tok-1"),
    ] {
        assert_eq!(wrong.send().await.unwrap().status(), 401);
    }

    // Writes and the metrics page are guarded too; an unknown path does not leak a 404.
    let create = server
        .http
        .post(server.url("/scheduler/iso8601"))
        .json(&json!({"name": "x", "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D"}));
    assert_eq!(create.send().await.unwrap().status(), 401);
    let metrics = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 401);
    let unknown = server
        .http
        .get(server.url("/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    let metrics = server.http.get(server.url("/metrics")).bearer_auth("tok-1");
    assert_eq!(metrics.send().await.unwrap().status(), 200);

    // Probes stay open.
    let health = server.http.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ping = server.http.get(server.url("/ping")).send().await.unwrap();
    assert_eq!(ping.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_auth_config_everything_is_open() {
    let server = Server::start(1).await;
    let (status, _) = server.request("GET", "/scheduler/jobs", None).await;
    assert_eq!(status, 200);
    wait_for("metrics to answer", Duration::from_secs(5), || async {
        matches!(server.http.get(server.url("/metrics")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
}
