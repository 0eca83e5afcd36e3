//! The router with real coordinators over memory stores, under paused time: routing, and
//! resource events and jobs kept whole across resharding (supervision: `shards/tests.rs`).

use std::collections::BTreeSet;
use std::time::Duration;

use dron_model::resource::ResourceEvent;
use dron_model::ring::Ring;
use ractor::call;

use super::*;
use crate::bus::Origin;
use crate::testkit::{
    RUN_TIME, System, T0, every_second, first_target, names, ran_every_second, triggered,
    wait_until,
};

const HOUR_MS: i64 = 3_600_000;

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

#[tokio::test(start_paused = true)]
async fn each_job_lands_on_the_shard_the_ring_names() {
    let system = System::start(3).await;
    let jobs = names("job", 30);
    for job in &jobs {
        system.put(triggered(job)).await;
    }
    for count in [3, 5, 2] {
        if system.client.shard_count().await.unwrap() != count {
            system.client.reshard(count).await.unwrap();
        }
        let ring = Ring::new(count);
        let shards = system.shards().await;
        assert_eq!(shards.len(), count as usize);
        for (index, shard) in shards.iter().enumerate() {
            let records = call!(shard, |reply| CoordinatorMsg::ListJobs { reply }).unwrap();
            let held: BTreeSet<String> = records.into_iter().map(|r| r.spec.name).collect();
            let owned = jobs.iter().filter(|j| ring.owner(j) == index as u32);
            let owned: BTreeSet<String> = owned.cloned().collect();
            assert!(!owned.is_empty(), "shard {index} of {count} owns jobs");
            assert_eq!(held, owned, "shard {index} of {count}");
        }
    }
}

/// Jobs fire every second, new ones are created and events arrive while the shard count
/// changes five times: every job runs every second, once, and each event triggers once.
#[tokio::test(start_paused = true)]
async fn resharding_under_load_loses_and_repeats_nothing() {
    let system = System::start(2).await;
    let mut scheduled: Vec<(String, i64)> = Vec::new();
    for job in names("tick", 24) {
        scheduled.push((job.clone(), system.put(every_second(&job)).await));
    }
    let rebuilds = names("rebuild", 4);
    for job in &rebuilds {
        system.put(triggered(job)).await;
    }
    let client = system.client.clone();
    let resharding = tokio::spawn(async move {
        for count in [5, 1, 3, 4, 2] {
            tokio::time::sleep(Duration::from_millis(1_700)).await;
            assert_eq!(client.reshard(count).await.unwrap(), count);
        }
    });
    let mut event_times = Vec::new();
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(450)).await;
        let job = format!("late-{i}");
        scheduled.push((job.clone(), system.put(every_second(&job)).await));
        let at_ms = T0 - (i + 1) * HOUR_MS;
        let event = ResourceEvent::ready(format!("products:{i}"), Some(at_ms));
        let ingested = system.client.ingest(event, Origin::Api).await.unwrap();
        assert!(ingested.applied && !ingested.duplicate);
        event_times.push(at_ms);
    }
    resharding.await.unwrap();
    assert_eq!(system.client.shard_count().await.unwrap(), 2);
    let until = system.clock.now_ms();
    tokio::time::sleep(RUN_TIME * 2).await;

    let launches = system.runs.launches_per_target();
    for (job, created_ms) in &scheduled {
        ran_every_second(&launches, job, first_target(*created_ms), until);
    }
    for job in &rebuilds {
        for at_ms in &event_times {
            let launched = launches.get(&(job.clone(), *at_ms));
            assert_eq!(launched, Some(&1), "{job} for event time {at_ms}");
        }
    }
    let stats = system.client.shard_stats().await.unwrap();
    let held: usize = stats.iter().map(|s| s.jobs).sum();
    assert_eq!(
        held,
        scheduled.len() + rebuilds.len(),
        "each job on one shard"
    );
}
