//! The shard supervisor with the real router and coordinators over memory stores, under
//! paused time: restarts (one for one, then giving up), the router pointed to each new
//! coordinator, reshards opening and removing shards off the router's path, shutdown.

use std::collections::HashSet;
use std::time::Duration;

use dron_model::ring::Ring;
use ractor::{ActorId, ActorStatus};

use super::*;
use crate::testkit::{
    System, every_second, first_target, names, ran_every_second, triggered, wait_until,
};

/// The coordinators the supervisor runs now (its children, the router aside).
fn supervised(system: &System) -> HashSet<ActorId> {
    let router = system.router.get_id();
    let children = system.supervisor.get_children().into_iter();
    children
        .map(|child| child.get_id())
        .filter(|id| *id != router)
        .collect()
}

/// The coordinators the router routes to now.
async fn routed(system: &System) -> Vec<ActorId> {
    system.shards().await.iter().map(|c| c.get_id()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_coordinator_that_panics_is_rebuilt_from_its_storage() {
    let system = System::start(2).await;
    let jobs = names("tick", 8);
    let mut created = Vec::new();
    for job in &jobs {
        created.push(system.put(every_second(job)).await);
    }
    let on_one = jobs.iter().filter(|j| Ring::new(2).owner(j) == 1).count();
    assert!(on_one > 0, "shard 1 holds jobs");
    // Panics while the runs of T0 + 2 s are running: the rebuilt shard adopts them.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let before = system.shards().await;
    system.client.inject_panic(1).await.unwrap();
    wait_until("shard 1 to restart", Duration::from_secs(5), || async {
        system.shards().await[1].get_id() != before[1].get_id()
    })
    .await;
    assert_eq!(
        system.shards().await[0].get_id(),
        before[0].get_id(),
        "one for one: shard 0 keeps running"
    );
    // The rebuilt shard has its jobs back, adopts the runs it had launched, and runs them
    // on: every second, none twice.
    let stats = system.client.shard_stats().await.unwrap();
    assert_eq!(stats[1].jobs, on_one);
    wait_until(
        "the running tasks adopted",
        Duration::from_secs(1),
        || async { system.runs.adopted().len() == on_one },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let until = system.clock.now_ms() - 1000;
    let launches = system.runs.launches_per_target();
    for (job, created_ms) in jobs.iter().zip(created) {
        ran_every_second(&launches, job, first_target(created_ms), until);
    }
}

#[tokio::test(start_paused = true)]
async fn a_shard_that_keeps_failing_stops_the_supervisor_and_the_router() {
    let system = System::start(1).await;
    for _ in 0..MAX_RESTARTS {
        let before = system.shards().await[0].get_id();
        system.client.inject_panic(0).await.unwrap();
        wait_until("shard 0 to restart", Duration::from_secs(5), || async {
            system.shards().await[0].get_id() != before
        })
        .await;
    }
    system.client.inject_panic(0).await.unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(5), system.shards_handle).await;
    assert!(
        stopped.is_ok(),
        "the supervisor gives up rather than crash-loop"
    );
    wait_until("the router to stop", Duration::from_secs(1), || async {
        system.router.get_status() == ActorStatus::Stopped
    })
    .await;
}

/// A full disk: changes are refused (507) instead of the shard failing until the supervisor
/// gives up; reads answer; once space returns, changes are taken and scheduling resumes.
#[tokio::test(start_paused = true)]
async fn a_full_disk_refuses_changes_and_scheduling_resumes_when_space_returns() {
    use crate::error::CommandError;
    use crate::testkit::spec;
    use dron_model::job::JobKind;

    let system = System::start(1).await;
    system.put(every_second("tick")).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    system.factory.store(0).fill(true);
    let put = |name: &str| {
        let now_ms = system.clock.now_ms();
        let job = spec(every_second(name), JobKind::Scheduled, now_ms);
        system.client.put_job(job, now_ms)
    };
    // The first refusal answers the failed write itself, later ones the rebuilt shard (while
    // it is rebuilt, a moment of "restarting").
    let full = |answer: &Result<_, CommandError>| {
        matches!(answer, Err(CommandError::InsufficientStorage(_)))
    };
    let refused = put("new").await;
    assert!(full(&refused), "{refused:?}");
    wait_until(
        "the rebuilt shard to refuse",
        Duration::from_secs(5),
        || async { full(&put("new").await) },
    )
    .await;
    // Far more ticks than MAX_RESTARTS failures: the shard refuses, and stays up.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        !system.shards_handle.is_finished(),
        "the supervisor goes on"
    );
    assert_eq!(
        system.client.shard_stats().await.unwrap()[0].jobs,
        1,
        "reads answer"
    );
    let launched = |runs: &crate::testkit::Runs| runs.launches_per_target().len();
    let before = launched(&system.runs);

    system.factory.store(0).fill(false);
    wait_until("a change to be taken", Duration::from_secs(5), || async {
        put("new").await.is_ok()
    })
    .await;
    wait_until("scheduling to resume", Duration::from_secs(5), || async {
        launched(&system.runs) > before
    })
    .await;
}

/// A restarted coordinator reaches the router (`SetCoordinator`): it routes to the new one,
/// and to no coordinator the supervisor does not run.
#[tokio::test(start_paused = true)]
async fn the_router_routes_to_a_restarted_coordinator() {
    let system = System::start(3).await;
    let jobs = names("job", 12);
    for job in &jobs {
        system.put(triggered(job)).await;
    }
    let on_two: Vec<&String> = jobs.iter().filter(|j| Ring::new(3).owner(j) == 2).collect();
    assert!(!on_two.is_empty(), "shard 2 holds jobs");
    let before = routed(&system).await;
    assert_eq!(
        before.iter().copied().collect::<HashSet<_>>(),
        supervised(&system)
    );

    system.client.inject_panic(2).await.unwrap();
    wait_until(
        "the router to learn of the new coordinator",
        Duration::from_secs(5),
        || async { routed(&system).await[2] != before[2] },
    )
    .await;
    let after = routed(&system).await;
    assert_eq!(after[..2], before[..2], "one for one");
    assert_eq!(
        after.iter().copied().collect::<HashSet<_>>(),
        supervised(&system)
    );
    // Requests for shard 2's jobs reach the rebuilt coordinator, which has them back.
    for job in on_two {
        assert_eq!(&system.client.job(job).await.unwrap().record.spec.name, job);
    }
}

/// A reshard under the supervisor: the new shards are opened while the router goes on
/// routing (the open is held here, as a slow disk would), the count is saved, the router
/// moves the jobs, and the drained shards' coordinators stop and their storage goes.
#[tokio::test(start_paused = true)]
async fn a_reshard_opens_new_shards_off_the_routers_path_and_removes_drained_ones() {
    let system = System::start(2).await;
    let jobs = names("job", 24);
    for job in &jobs {
        system.put(triggered(job)).await;
    }
    assert_eq!(system.factory.saved_count(), Some(2));

    let held = system.factory.hold_opens();
    let client = system.client.clone();
    let resharding = tokio::spawn(async move { client.reshard(4).await });
    // The supervisor waits for the new shards' storage; the router still answers. (No
    // sleeping here: tokio's paused clock does not move while a blocking call is out.)
    let client = system.client.clone();
    let job = jobs[0].clone();
    let answered = tokio::spawn(async move { client.job(&job).await.is_ok() });
    for _ in 0..10_000 {
        if answered.is_finished() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        answered.is_finished(),
        "a routed request waits for a shard to open"
    );
    assert!(answered.await.unwrap());
    assert!(!resharding.is_finished());
    assert_eq!(system.client.shard_count().await.unwrap(), 2);
    drop(held);
    assert_eq!(resharding.await.unwrap().unwrap(), 4);

    assert_eq!(system.factory.saved_count(), Some(4));
    assert_eq!(system.factory.existing_shards(), [0, 1, 2, 3]);
    let routed_now = routed(&system).await;
    assert_eq!(routed_now.len(), 4);
    assert_eq!(
        routed_now.iter().copied().collect::<HashSet<_>>(),
        supervised(&system)
    );
    let ring = Ring::new(4);
    let stats = system.client.shard_stats().await.unwrap();
    for (shard, stats) in stats.iter().enumerate() {
        let owned = jobs
            .iter()
            .filter(|j| ring.owner(j) == shard as u32)
            .count();
        assert_eq!(stats.jobs, owned, "shard {shard}");
    }

    // Shrinking: the router moves the jobs off shards 1 to 3, then they stop and go.
    let dropped = system.shards().await;
    assert_eq!(system.client.reshard(1).await.unwrap(), 1);
    assert_eq!(system.factory.saved_count(), Some(1));
    assert_eq!(system.factory.existing_shards(), [0]);
    let routed_now = routed(&system).await;
    assert_eq!(routed_now, [dropped[0].get_id()]);
    assert_eq!(supervised(&system), HashSet::from([routed_now[0]]));
    for coordinator in &dropped[1..] {
        assert_eq!(coordinator.get_status(), ActorStatus::Stopped);
    }
    let stats = system.client.shard_stats().await.unwrap();
    assert_eq!(stats[0].jobs, jobs.len());

    // A count out of range changes nothing.
    assert!(system.client.reshard(0).await.is_err());
    assert_eq!(system.client.shard_count().await.unwrap(), 1);
}

/// The server's shutdown stops the router: the supervisor and every coordinator stop too.
#[tokio::test(start_paused = true)]
async fn stopping_the_router_stops_the_shards() {
    let system = System::start(2).await;
    let coordinators = system.shards().await;
    system.router.stop(Some("shutdown".into()));
    let stopped = tokio::time::timeout(Duration::from_secs(5), system.shards_handle).await;
    assert!(stopped.is_ok(), "the supervisor stops with the router");
    for coordinator in coordinators {
        wait_until(
            "the coordinators to stop",
            Duration::from_secs(1),
            || async { coordinator.get_status() == ActorStatus::Stopped },
        )
        .await;
    }
}
