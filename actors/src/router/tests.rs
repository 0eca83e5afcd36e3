//! The router with real coordinators over memory stores, under paused time: routing,
//! supervision, and resource events and jobs kept whole across resharding.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dron_model::resource::ResourceEvent;
use dron_model::ring::Ring;
use ractor::call;
use serde_json::json;

use super::*;
use crate::testkit::{RUN_TIME, System, T0, wait_until};

const HOUR_MS: i64 = 3_600_000;

fn triggered(name: &str) -> serde_json::Value {
    json!({"name": name, "command": "true", "triggeredBy": "products:*"})
}

fn every_second(name: &str) -> serde_json::Value {
    json!({"name": name, "command": "true", "schedule": "R/2026-11-23T10:00:00Z/PT1S"})
}

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// Sends `events` to the router as the bus does, and a reshard to `count` right behind them
/// (both in its mailbox before it handles either); answers whether every shard applied them.
async fn events_then_reshard(system: &System, events: Vec<ResourceEvent>, count: u32) -> bool {
    let (applied, answer) = ractor::concurrency::oneshot();
    let ready = RouterMsg::ResourceReady {
        events,
        reply: applied.into(),
    };
    system.router.send_message(ready).unwrap();
    let (resharded, reshard_answer) = ractor::concurrency::oneshot();
    let reshard = RouterMsg::Reshard {
        count,
        reply: resharded.into(),
    };
    system.router.send_message(reshard).unwrap();
    assert_eq!(reshard_answer.await.unwrap().unwrap(), count);
    answer.await.unwrap()
}

/// Waits until each of `jobs` has succeeded once for logical time `at_ms`, then checks that
/// none ran twice for it.
async fn each_ran_once_for(system: &System, jobs: &[String], at_ms: i64) {
    for job in jobs {
        wait_until(
            &format!("{job} to run for {at_ms}"),
            Duration::from_secs(10),
            || async { system.succeeded(job).await.contains(&at_ms) },
        )
        .await;
    }
    let launches = system.runs.launches_per_target();
    for job in jobs {
        assert_eq!(
            launches.get(&(job.clone(), at_ms)),
            Some(&1),
            "{job} at {at_ms}"
        );
    }
}

/// The bug of issue 16: the router copied the shard list and handed the event to the shards
/// from a task, after its handler returned, so a reshard handled meanwhile released jobs
/// before the event reached them (and the new shards were not in the copy): their
/// `triggeredBy` trigger was lost, while the router answered that every shard applied it.
#[tokio::test(start_paused = true)]
async fn an_event_accepted_before_a_reshard_triggers_the_jobs_that_move() {
    let system = System::start(2).await;
    let jobs = names("rebuild", 16);
    for job in &jobs {
        system.put(triggered(job)).await;
    }
    let moves = |from: u32, to: u32| {
        let (from, to) = (Ring::new(from), Ring::new(to));
        jobs.iter().filter(|j| from.owner(j) != to.owner(j)).count()
    };
    assert!(moves(2, 4) >= 4 && moves(4, 3) >= 2, "the test moves jobs");

    // Growing: jobs move from every old shard to the new ones.
    let first = T0 - 2 * HOUR_MS;
    let event = ResourceEvent::ready("products:1", Some(first));
    assert!(events_then_reshard(&system, vec![event], 4).await);
    each_ran_once_for(&system, &jobs, first).await;

    // Shrinking: the dropped shard applies it before it hands its jobs over.
    let second = T0 - HOUR_MS;
    let event = ResourceEvent::ready("products:2", Some(second));
    assert!(events_then_reshard(&system, vec![event], 3).await);
    each_ran_once_for(&system, &jobs, second).await;

    // After the move, events reach the jobs on their new shards.
    let third = T0 - HOUR_MS / 2;
    let event = ResourceEvent::ready("products:3", Some(third));
    let applied = call!(system.router, |reply| RouterMsg::ResourceReady {
        events: vec![event],
        reply
    });
    assert!(applied.unwrap());
    each_ran_once_for(&system, &jobs, third).await;
}
