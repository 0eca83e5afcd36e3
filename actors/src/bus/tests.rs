//! The event bus with the real router and coordinators over memory stores, under paused time:
//! an event delivered more than once (redelivered, concurrently, or replayed after a restart)
//! is applied once.

use std::time::Duration;

use dron_model::resource::{PendingEvent, ResourceEvent};
use serde_json::json;

use super::*;
use crate::testkit::{System, T0, wait_until};

const HOUR_MS: i64 = 3_600_000;

async fn ingest(system: &System, event: &ResourceEvent) -> Ingested {
    system
        .client
        .ingest(event.clone(), Origin::Amqp)
        .await
        .unwrap()
}

/// Jobs spread over both shards, each triggered by every `products:*` event.
async fn triggered_jobs(system: &System) -> Vec<String> {
    let jobs: Vec<String> = (0..6).map(|i| format!("rebuild-{i}")).collect();
    for job in &jobs {
        system
            .put(json!({"name": job, "command": "true", "triggeredBy": "products:*"}))
            .await;
    }
    jobs
}

/// Waits until each of `jobs` has run for every one of `times`, then checks none ran twice
/// for any time, nor for any other time.
async fn each_ran_once_for(system: &System, jobs: &[String], times: &[i64]) {
    wait_until("the triggered runs", Duration::from_secs(10), || async {
        let launches = system.runs.launches_per_target();
        jobs.iter().all(|job| {
            times
                .iter()
                .all(|at| launches.contains_key(&(job.clone(), *at)))
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await; // time for a second run, were there one
    let launches = system.runs.launches_per_target();
    assert_eq!(launches.len(), jobs.len() * times.len(), "{launches:?}");
    assert!(launches.values().all(|&n| n == 1), "{launches:?}");
}

#[tokio::test(start_paused = true)]
async fn an_event_delivered_twice_is_applied_once() {
    let system = System::start(2).await;
    let jobs = triggered_jobs(&system).await;

    // Redelivered after it was applied (an AMQP redelivery, an HTTP retry).
    let first = ResourceEvent::ready("products:1", Some(T0 - 2 * HOUR_MS));
    let ingested = ingest(&system, &first).await;
    assert!(ingested.applied && !ingested.duplicate);
    let again = ingest(&system, &first).await;
    assert!(again.applied && again.duplicate);

    // Delivered twice at once: the second waits for the first, then is its duplicate.
    let second = ResourceEvent::ready("products:2", Some(T0 - HOUR_MS));
    let (a, b) = tokio::join!(ingest(&system, &second), ingest(&system, &second));
    assert!(a.applied && b.applied);
    assert_eq!((a.duplicate, b.duplicate), (false, true));

    // Without a time: any earlier event for the resource satisfied it; the first one's time
    // (when it was recorded) is the run's logical time.
    let untimed = ResourceEvent::ready("products:3", None);
    let third = ingest(&system, &untimed).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = ingest(&system, &untimed).await;
    assert!(again.duplicate);
    assert_eq!(again.at_ms, third.at_ms);

    let times = [first.at_ms.unwrap(), second.at_ms.unwrap(), third.at_ms];
    each_ran_once_for(&system, &jobs, &times).await;
}

/// A crash after an event was applied everywhere but before its pending record was dropped:
/// the next start applies it again, which triggers nothing twice.
#[tokio::test(start_paused = true)]
async fn an_event_replayed_after_a_restart_is_applied_once() {
    let system = System::start(2).await;
    let jobs = triggered_jobs(&system).await;
    let event = ResourceEvent::ready("products:1", Some(T0 - HOUR_MS));
    ingest(&system, &event).await;
    let pending = PendingEvent {
        event: event.clone(),
        apply: true,
        publish: false,
    };
    let written = system
        .resources
        .submit(vec![ResourceOp::PutPending(pending)]);
    written.await.unwrap().unwrap();

    // A new bus over the same store applies what is pending as it starts.
    let args = EventBusArgs {
        store: system.resources.clone(),
        clock: system.clock.clone(),
        publishing: false,
        shards: system.to_shards.clone(),
    };
    Actor::spawn(None, EventBus, args).await.unwrap();
    wait_until(
        "the pending event applied",
        Duration::from_secs(5),
        || async { system.resources.pending().unwrap().is_empty() },
    )
    .await;
    each_ran_once_for(&system, &jobs, &[event.at_ms.unwrap()]).await;
}
