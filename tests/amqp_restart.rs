//! RabbitMQ restarted (stop_app / start_app) while events flow both ways: dron reconnects,
//! keeps scheduling, and no event is lost or applied twice. Its own test binary: stopping the
//! broker must not disturb other tests.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::amqp::{Broker, next_message};
use support::{Server, lines, wait_for};

const EVENTS: usize = 120;

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .args(args)
        .status()
        .expect("rabbitmqctl is installed with RabbitMQ");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

/// Publishes `events`, retrying each until RabbitMQ confirms it (reconnecting after
/// the broker comes back), as a careful framework would.
async fn publish_all(broker: &Broker, events: &[Value]) {
    let mut channel = broker.channel().await;
    for event in events {
        loop {
            match broker.publish(&channel, event).await {
                Ok(()) => break,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if let Ok(fresh) = broker.try_channel().await {
                        channel = fresh;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_rabbitmq_restart_loses_no_event_and_applies_none_twice() {
    let broker = Broker::new("restart");
    let channel = broker.channel().await;
    broker.declare_observer(&channel, "observer").await;
    let server = Server::start_with_config(2, &broker.config()).await;
    wait_for("the AMQP link", Duration::from_secs(20), || async {
        server.ok("GET", "/health", None).await["amqp"] == "connected"
    })
    .await;
    let out = server.scratch().join("flow.out");
    server
        .create(json!({
            "name": "flow", "triggeredBy": "flow:*", "concurrent": true,
            "command": format!("echo \"$DRON_TARGET\" >> {}", out.display()),
        }))
        .await;
    let base = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let events: Vec<Value> = (0..EVENTS)
        // A second apart: dron announces runs of an unscheduled job to the second.
        .map(|i| json!({"resource": format!("flow:{i}"), "at": base + 1000 * i as i64}))
        .collect();
    let publishing = {
        let (broker, events) = (broker.clone(), events.clone());
        tokio::spawn(async move { publish_all(&broker, &events).await })
    };
    wait_for("some events applied", Duration::from_secs(30), || async {
        lines(&out).len() >= EVENTS / 4
    })
    .await;
    rabbitmqctl(&["stop_app"]);
    wait_for(
        "dron to see the broker gone",
        Duration::from_secs(30),
        || async { server.ok("GET", "/health", None).await["amqp"] == "disconnected" },
    )
    .await;
    // Scheduling goes on without the broker: an event over HTTP still runs the job.
    server
        .ok(
            "POST",
            "/resources",
            Some(json!({"resource": "flow:http", "at": base - 1000})),
        )
        .await;
    rabbitmqctl(&["start_app"]);
    wait_for("dron to reconnect", Duration::from_secs(60), || async {
        server.ok("GET", "/health", None).await["amqp"] == "connected"
    })
    .await;
    publishing.await.unwrap();
    wait_for("every event applied", Duration::from_secs(90), || async {
        lines(&out).len() > EVENTS
    })
    .await;
    // Exactly one run per event.
    let runs = lines(&out);
    let distinct: BTreeSet<&String> = runs.iter().collect();
    assert_eq!(runs.len(), EVENTS + 1, "a run twice: {runs:?}");
    assert_eq!(distinct.len(), EVENTS + 1);
    // Every run dron announced reached the exchange (at least once; duplicates are allowed
    // by AMQP's redelivery and carry the same resource and time).
    let channel = broker.channel().await;
    let mut observed = broker.observe(&channel, "observer").await;
    let mut announced = BTreeSet::new();
    while announced.len() < EVENTS + 1 {
        let Some(message) = next_message(&mut observed, Duration::from_secs(30)).await else {
            panic!("{} of {} runs announced", announced.len(), EVENTS + 1);
        };
        if let Some(resource) = message["resource"]
            .as_str()
            .filter(|r| r.starts_with("job:flow@"))
        {
            announced.insert(resource.to_string());
        }
    }
    broker.clean_up(&channel, &["observer"]).await;
}
