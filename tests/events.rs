//! Resource events and Dron's dependency language, end to end: the real binary, real
//! RocksDB, real processes, and the real RabbitMQ on this machine.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::amqp::{Broker, Relay, next_message};
use support::{Server, lines, wait_for};

/// A daily schedule whose first target is now (the request's time).
const DAILY_FROM_NOW: &str = "R//P1D";

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

async fn dron_cli(server: &Server, args: &[&str]) -> (i32, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_dron"))
        .args(args)
        .args(["--url", &server.url("")])
        .output()
        .await
        .expect("running dron");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code().unwrap_or(-1), stdout)
}

/// A metric's value from /metrics (0 when absent).
async fn metric(server: &Server, series: &str) -> f64 {
    let response = server.http.get(server.url("/metrics")).send().await;
    let text = response.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

async fn waiting_for(server: &Server, job: &str) -> Vec<String> {
    let answer = server
        .ok("GET", &format!("/api/jobs/{job}/waiting"), None)
        .await;
    let instances = answer["instances"].as_array().cloned().unwrap_or_default();
    let waiting = instances
        .iter()
        .flat_map(|i| i["waitingFor"].as_array().cloned().unwrap_or_default());
    waiting
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn an_http_event_releases_a_waiting_instance_and_why_explains_the_wait() {
    let server = Server::start(2).await;
    let out = server.scratch().join("load.out");
    let day = today();
    server
        .create(json!({
            "name": "load", "command": format!("echo ran >> {}", out.display()),
            "schedule": DAILY_FROM_NOW,
            "dependsOn": ["hive:users/ds={TODAY}", "hdfs:/logs/{TODAY-1:TODAY}"],
        }))
        .await;
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).format("%Y-%m-%d");
    let expected = vec![
        format!("hdfs:/logs/{yesterday}"),
        format!("hdfs:/logs/{day}"),
        format!("hive:users/ds={day}"),
    ];
    wait_for("the instance to wait", Duration::from_secs(10), || async {
        waiting_for(&server, "load").await == expected
    })
    .await;
    let (code, why) = dron_cli(&server, &["why", "load"]).await;
    assert_eq!(code, 0);
    assert!(
        why.contains("waiting") && why.contains(&format!("hive:users/ds={day}")),
        "{why}"
    );
    let lineage = server
        .ok(
            "GET",
            &format!("/api/resources?id=hive:users/ds%3D{day}"),
            None,
        )
        .await;
    assert_eq!(lineage["consumers"], json!(["load"]));
    assert_eq!(lineage["satisfied"], false);
    assert_eq!(lineage["waiting"].as_array().unwrap().len(), 1);

    // Bad events are refused, with the field named, and change nothing.
    let (status, body) = server
        .request("POST", "/resources", Some(json!({"at": "x"})))
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("resource")),
        "{body}"
    );
    let (status, body) = server
        .request(
            "POST",
            "/resources",
            Some(json!({"resource": "a", "at": "soon"})),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("at")),
        "{body}"
    );

    for resource in &expected[..2] {
        let (status, _) = server
            .request("POST", "/resources", Some(json!({"resource": resource})))
            .await;
        assert_eq!(status, 202);
    }
    assert!(lines(&out).is_empty(), "one resource still missing");
    let (code, said) = dron_cli(&server, &["resource", "announce", &expected[2]]).await;
    assert_eq!(code, 0, "{said}");
    server.wait_for_run("load", "succeeded").await;
    assert_eq!(lines(&out), ["ran"]);
    // Announcing again is a duplicate: 200, nothing runs again.
    let (status, body) = server
        .request("POST", "/resources", Some(json!({"resource": expected[2]})))
        .await;
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)));
    let (code, shown) = dron_cli(&server, &["resource", "show", &expected[2]]).await;
    assert_eq!(code, 0);
    assert!(
        shown.contains("satisfied at") && shown.contains("load"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_job_run_announces_its_resource_and_releases_what_waits_for_it() {
    let server = Server::start(3).await;
    let scratch = server.scratch();
    // The downstream job exists first and waits; the upstream one runs at once.
    server
        .create(json!({
            "name": "report", "command": format!("echo report >> {}/report.out", scratch.display()),
            "schedule": DAILY_FROM_NOW, "dependsOn": ["job:export@{TODAY}"],
        }))
        .await;
    wait_for("report to wait", Duration::from_secs(10), || async {
        !waiting_for(&server, "report").await.is_empty()
    })
    .await;
    assert_eq!(
        waiting_for(&server, "report").await,
        [format!("job:export@{}", today())]
    );
    server
        .create(json!({
            "name": "export", "command": "true", "schedule": DAILY_FROM_NOW,
        }))
        .await;
    server.wait_for_run("report", "succeeded").await;
    let lineage = server
        .ok(
            "GET",
            &format!("/api/resources?id=job:export@{}", today()),
            None,
        )
        .await;
    assert_eq!(lineage["satisfied"], true);
    assert_eq!(lineage["producers"], json!(["export"]));
    assert_eq!(lineage["consumers"], json!(["report"]));

    // A cycle through job resources is refused, naming it; yesterday's run closes none.
    let export_waiting_for = |template: &str| {
        let job = json!({"name": "export", "command": "true", "schedule": DAILY_FROM_NOW,
            "dependsOn": [template]});
        server.request("PUT", "/scheduler/iso8601", Some(job))
    };
    let (status, body) = export_waiting_for("job:report@{TODAY}").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "dependsOn");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("export -> report -> export"), "{body}");
    let (status, body) = export_waiting_for("job:report@{TODAY-1}").await;
    assert_eq!(status, 204, "{body}");
}

#[tokio::test]
async fn triggered_by_runs_once_per_matching_event() {
    let server = Server::start(2).await;
    let out = server.scratch().join("rebuild.out");
    server
        .create(json!({
            "name": "rebuild", "triggeredBy": "products:*", "concurrent": true,
            "command": format!("echo \"$DRON_TARGET\" >> {}", out.display()),
        }))
        .await;
    let events = [
        json!({"resource": "products:shoes", "at": "2026-11-23T01:00:00Z"}),
        json!({"resource": "orders:1", "at": "2026-11-23T02:00:00Z"}),
        json!({"resource": "products:hats", "at": "2026-11-23T03:00:00Z"}),
        // A repeat of the first: a duplicate.
        json!({"resource": "products:shoes", "at": "2026-11-23T01:00:00Z"}),
    ];
    for event in events {
        let (status, body) = server.request("POST", "/resources", Some(event)).await;
        assert!(status == 200 || status == 202, "{status} {body}");
    }
    wait_for("two runs", Duration::from_secs(20), || async {
        lines(&out).len() >= 2
    })
    .await;
    let mut targets = lines(&out);
    targets.sort();
    assert_eq!(
        targets,
        ["2026-11-23T01:00:00.000Z", "2026-11-23T03:00:00.000Z"]
    );
    // Nothing more arrives (the duplicate and the non-match run nothing).
    wait_for("the runs to finish", Duration::from_secs(20), || async {
        server
            .runs("rebuild")
            .await
            .iter()
            .filter(|r| r["state"] == "succeeded")
            .count()
            == 2
    })
    .await;
    assert_eq!(server.runs("rebuild").await.len(), 2);
}

#[tokio::test]
async fn an_instance_that_waits_too_long_expires_visibly() {
    let server = Server::start(1).await;
    server
        .create(json!({
            "name": "stale", "command": "true", "schedule": DAILY_FROM_NOW,
            "dependsOn": ["never/{TODAY}"], "waitTimeout": "PT1S",
        }))
        .await;
    let run = server.wait_for_run("stale", "expired").await;
    assert!(run["message"].as_str().unwrap().contains("never/"), "{run}");
    let job = server.job("stale").await;
    assert_eq!(job["errorCount"], 1);
    let metrics = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("dron_instances_expired_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_event_published_to_rabbitmq_releases_an_instance_and_dron_publishes_its_run() {
    let broker = Broker::new("release");
    let channel = broker.channel().await;
    let mut observed = broker.observe(&channel, "observer").await;
    let server = Server::start_with_config(2, &broker.config()).await;
    let health = server.ok("GET", "/health", None).await;
    wait_for("the AMQP link", Duration::from_secs(20), || async {
        server.ok("GET", "/health", None).await["amqp"] == "connected"
    })
    .await;
    assert_ne!(health["amqp"], "off");
    server
        .create(json!({
            "name": "import", "command": "true", "schedule": DAILY_FROM_NOW,
            "dependsOn": ["hive:clicks/ds={TODAY}"],
        }))
        .await;
    wait_for("import to wait", Duration::from_secs(10), || async {
        !waiting_for(&server, "import").await.is_empty()
    })
    .await;
    let resource = format!("hive:clicks/ds={}", today());
    broker
        .publish(
            &channel,
            &json!({"resource": resource, "meta": {"rows": 42}}),
        )
        .await
        .unwrap();
    server.wait_for_run("import", "succeeded").await;
    let lineage = server
        .ok(
            "GET",
            &format!("/api/resources?id=hive:clicks/ds%3D{}", today()),
            None,
        )
        .await;
    assert_eq!(lineage["event"]["meta"]["rows"], 42);
    // dron announces the run on the exchange: the framework's event comes back first, then
    // dron's own.
    let announced = format!("job:import@{}", today());
    let mut seen: Vec<Value> = Vec::new();
    while !seen.iter().any(|m| m["resource"] == announced.as_str()) {
        let message = next_message(&mut observed, Duration::from_secs(20)).await;
        seen.push(message.unwrap_or_else(|| panic!("no announcement; saw {seen:?}")));
    }
    let ours = seen
        .iter()
        .find(|m| m["resource"] == announced.as_str())
        .unwrap();
    assert_eq!(ours["status"], "ready");
    // A malformed event is rejected (not requeued), and dron keeps consuming.
    let raw = json!({"resource": ""});
    broker.publish(&channel, &raw).await.unwrap();
    broker
        .publish(&channel, &json!({"resource": "after-the-bad-one"}))
        .await
        .unwrap();
    wait_for("the next event", Duration::from_secs(20), || async {
        server
            .ok("GET", "/api/resources?id=after-the-bad-one", None)
            .await["satisfied"]
            == true
    })
    .await;
    // dron's own announcement came back to its queue too: it is acked as its own echo, not
    // taken in again (only the framework's two good events count as received over AMQP).
    wait_for("dron's own echo", Duration::from_secs(20), || async {
        metric(&server, "dron_events_own_echo_total").await >= 1.0
    })
    .await;
    assert_eq!(
        metric(&server, "dron_events_received_total{origin=\"amqp\"}").await,
        2.0
    );
    broker.clean_up(&channel, &["observer"]).await;
}

#[tokio::test]
async fn events_published_while_dron_is_down_are_consumed_after_restart() {
    let broker = Broker::new("down");
    let channel = broker.channel().await;
    let mut server = Server::start_with_config(1, &broker.config()).await;
    wait_for("the AMQP link", Duration::from_secs(20), || async {
        server.ok("GET", "/health", None).await["amqp"] == "connected"
    })
    .await;
    let out = server.scratch().join("late.out");
    server
        .create(json!({
            "name": "late", "triggeredBy": "feed:*",
            "command": format!("echo \"$DRON_TARGET\" >> {}", out.display()),
        }))
        .await;
    server.kill9();
    broker
        .publish(
            &channel,
            &json!({"resource": "feed:1", "at": "2026-11-23T04:00:00Z"}),
        )
        .await
        .unwrap();
    server.restart().await;
    wait_for(
        "the run of the waiting event",
        Duration::from_secs(30),
        || async { lines(&out).len() == 1 },
    )
    .await;
    assert_eq!(lines(&out), ["2026-11-23T04:00:00.000Z"]);
    broker.clean_up(&channel, &[]).await;
}

/// RabbitMQ away while 120 events are announced over HTTP, with room for 10 in the publish
/// queue: the server takes every event (recorded and applied), keeps at most 10 in memory and
/// the rest on disk, and once RabbitMQ is back publishes every one of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_publish_queue_waits_on_disk_and_loses_nothing() {
    let broker = Broker::new("spill");
    let channel = broker.channel().await;
    let mut observed = broker.observe(&channel, "observer").await;
    let relay = Relay::start().await;
    let config = format!(
        "[events]\namqp_url = \"{}\"\nexchange = \"{}\"\nqueue = \"{}\"\npublish_queue = 10\n",
        relay.url(),
        broker.exchange,
        broker.dron_queue
    );
    let server = Server::start_with_config(2, &config).await;
    let amqp = || async { server.ok("GET", "/health", None).await["amqp"].clone() };
    wait_for("the AMQP link", Duration::from_secs(20), || async {
        amqp().await == "connected"
    })
    .await;
    relay.cut();
    wait_for("the link to fall", Duration::from_secs(20), || async {
        amqp().await == "disconnected"
    })
    .await;
    let resources: Vec<String> = (0..120).map(|i| format!("spill:{i:03}")).collect();
    for resource in &resources {
        let (status, body) = server
            .request("POST", "/resources", Some(json!({"resource": resource})))
            .await;
        assert_eq!(status, 202, "{resource}: {body}");
    }
    assert!(metric(&server, "dron_events_publish_queue").await <= 10.0);
    assert!(
        metric(&server, "dron_events_publish_spilled_total").await >= 110.0,
        "{}",
        server.metrics().await
    );

    relay.mend();
    let mut published = std::collections::BTreeSet::new();
    while published.len() < resources.len() {
        let message = next_message(&mut observed, Duration::from_secs(60)).await;
        let message = message.unwrap_or_else(|| {
            let missing: Vec<_> = resources
                .iter()
                .filter(|r| !published.contains(*r))
                .collect();
            panic!("not published: {missing:?}")
        });
        if let Some(resource) = message["resource"].as_str() {
            published.insert(resource.to_string());
        }
    }
    assert_eq!(published.into_iter().collect::<Vec<_>>(), resources);
    assert!(metric(&server, "dron_events_publish_read_back_total").await >= 100.0);
    wait_for("the queue to empty", Duration::from_secs(20), || async {
        metric(&server, "dron_events_publish_queue").await == 0.0
    })
    .await;
    broker.clean_up(&channel, &["observer"]).await;
}
