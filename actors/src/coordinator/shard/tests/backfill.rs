//! Backfills: a root walking its past targets within `parallel`, downstream jobs following
//! their upstream's backfill successes, and neither touching scheduled runs.

use dron_model::backfill::{BackfillPlan, TargetState, announced_backfill};

use super::*;

const DAY: i64 = 86_400_000;
/// 2026-11-10T00:00:00Z: the first of ten past days backfilled.
const NOV_10: i64 = 1_794_268_800_000;

fn daily(name: &str) -> JobSpec {
    spec(
        serde_json::json!({"name": name, "command": "true", "retries": 0,
                           "schedule": "R/2026-11-01T00:00:00Z/P1D"}),
        JobKind::Scheduled,
    )
}

fn child_of(name: &str, parent: &str) -> JobSpec {
    spec(
        serde_json::json!({"name": name, "command": "true", "retries": 0, "parents": [parent]}),
        JobKind::Dependent,
    )
}

fn plan(job: &str, upstream: &[&str], parallel: u32) -> BackfillPlan {
    let root = upstream.is_empty();
    BackfillPlan {
        id: "bf-1".into(),
        job: job.into(),
        root: if root { job.into() } else { "daily".into() },
        upstream: upstream.iter().map(|u| u.to_string()).collect(),
        from_ms: NOV_10,
        to_ms: NOV_10 + 9 * DAY,
        parallel,
        rerun_succeeded: true,
        downstream: true,
        next_ms: root.then_some(NOV_10),
        total: 10,
        created_ms: T0,
        cancelled: false,
        first_attempt: 5_000,
    }
}

/// The logical times of the tasks an outbox launches, of `job`.
fn launched(out: &Outbox, job: &str) -> Vec<i64> {
    let tasks = out.launches.iter().map(|l| parse_task_id(&l.spec.task_id));
    let tasks = tasks.map(|t| t.expect("a task id"));
    tasks
        .filter(|t| t.job == job)
        .map(|t| t.target_ms)
        .collect()
}

/// Ends the task of `job` for `target_ms` (its first backfill attempt) with `code`.
fn end(shard: &mut Shard, job: &str, target_ms: i64, code: i32, out: &mut Outbox) {
    let task = dron_model::ids::task_id(job, target_ms, 5_000);
    shard.task_update(ended(&task, TaskEnd::Exited(code)), T0 + 1, out);
}

/// Ends `job`'s run of `target_ms` with success; answers its announcement, as the bus
/// applies it.
fn succeed(shard: &mut Shard, job: &str, target_ms: i64) -> ResourceEvent {
    let mut out = Outbox::default();
    end(shard, job, target_ms, 0, &mut out);
    out.announcements.remove(0)
}

fn backfill_shard(jobs: Vec<JobSpec>) -> Shard {
    let mut shard = empty_shard();
    for job in jobs {
        shard.put_job(job, T0, &mut Outbox::default());
    }
    shard
}

/// A shard holding `jobs`, with `plans` created on it in turn; answers it and what the
/// creations changed.
fn with_backfill(jobs: Vec<JobSpec>, plans: Vec<BackfillPlan>) -> (Shard, Outbox) {
    let mut shard = backfill_shard(jobs);
    let mut out = Outbox::default();
    for plan in plans {
        shard
            .create_backfill(plan, Vec::new(), T0, &mut out)
            .unwrap();
    }
    (shard, out)
}

#[test]
fn a_backfill_runs_its_targets_oldest_first_never_more_than_parallel() {
    let (mut shard, out) = with_backfill(vec![daily("daily")], vec![plan("daily", &[], 2)]);
    assert_eq!(launched(&out, "daily"), [NOV_10, NOV_10 + DAY]);
    let task = &out.launches[0].spec.task_id;
    assert_eq!(parse_task_id(task).unwrap().attempt, 5_000, "{task}");
    let mut all = Vec::new();
    for day in 0..10 {
        let mut out = Outbox::default();
        end(&mut shard, "daily", NOV_10 + day * DAY, 0, &mut out);
        all.extend(launched(&out, "daily"));
        let runs = history_runs(&out);
        assert_eq!(runs[0].cause, RunCause::Backfill);
        assert_eq!(runs[0].target_ms, NOV_10 + day * DAY);
        let event = &out.announcements[0];
        assert_eq!(event.at_ms, Some(NOV_10 + day * DAY));
        assert_eq!(
            announced_backfill(&event.meta_json).as_deref(),
            Some("bf-1")
        );
        let part = &shard.backfill_parts(Some("bf-1"))[0];
        let running = part.targets.values();
        let running = running.filter(|s| **s == TargetState::Running).count();
        assert!(running <= 2, "{running} live at once");
    }
    let expected: Vec<i64> = (2..10).map(|d| NOV_10 + d * DAY).collect();
    assert_eq!(all, expected, "each day once, in order");
    let part = &shard.backfill_parts(None)[0];
    assert!(part.targets.values().all(|s| *s == TargetState::Succeeded));
    assert_eq!(part.plan.next_ms, None);
}

#[test]
fn targets_left_alone_are_passed_and_a_cancelled_backfill_starts_nothing_new() {
    let mut shard = backfill_shard(vec![daily("daily")]);
    let mut out = Outbox::default();
    let left_alone = vec![NOV_10, NOV_10 + 2 * DAY];
    shard
        .create_backfill(plan("daily", &[], 1), left_alone, T0, &mut out)
        .unwrap();
    assert_eq!(launched(&out, "daily"), [NOV_10 + DAY]);
    let mut out = Outbox::default();
    end(&mut shard, "daily", NOV_10 + DAY, 0, &mut out);
    assert_eq!(launched(&out, "daily"), [NOV_10 + 3 * DAY], "day 3 passed");
    assert_eq!(shard.cancel_backfill("bf-1", false, T0, &mut out), 1);
    let mut out = Outbox::default();
    end(&mut shard, "daily", NOV_10 + 3 * DAY, 0, &mut out);
    assert!(out.launches.is_empty(), "cancelled: nothing new starts");
    assert_eq!(shard.cancel_backfill("bf-2", false, T0, &mut out), 0);
}

#[test]
fn a_backfill_cancelled_with_kill_kills_its_live_runs() {
    let (mut shard, _) = with_backfill(vec![daily("daily")], vec![plan("daily", &[], 2)]);
    let mut out = Outbox::default();
    assert_eq!(shard.cancel_backfill("bf-1", true, T0, &mut out), 1);
    assert_eq!(out.kills.len(), 2, "both running days");
    let mut out = Outbox::default();
    let task = dron_model::ids::task_id("daily", NOV_10, 5_000);
    shard.task_update(ended(&task, TaskEnd::Killed), T0 + 1, &mut out);
    assert_eq!(history_runs(&out)[0].state, InstanceState::Killed);
    assert!(out.launches.is_empty(), "nothing new starts");
    let part = &shard.backfill_parts(None)[0];
    assert_eq!(part.targets[&NOV_10], TargetState::Failed);
}

#[test]
fn a_downstream_job_runs_each_time_its_upstream_succeeded_and_not_as_a_parent() {
    let (mut shard, _) = with_backfill(
        vec![daily("daily"), child_of("child", "daily")],
        vec![plan("child", &["daily"], 1), plan("daily", &[], 1)],
    );
    // Day 0 succeeds: the bus applies its announcement here, and the child runs day 0.
    let announced = succeed(&mut shard, "daily", NOV_10);
    let mut out = Outbox::default();
    shard.resource_ready(&announced, T0 + 2, &mut out);
    shard.resource_ready(&announced, T0 + 3, &mut out);
    assert_eq!(
        launched(&out, "child"),
        [NOV_10],
        "once, for the day's time"
    );
    let child = shard.job_view("child").unwrap().record.state;
    assert!(child.parents_succeeded.is_empty() && child.parent_success_times.is_empty());
    // Day 1 fails: no announcement of a success, and the child never runs it.
    let mut out = Outbox::default();
    end(&mut shard, "daily", NOV_10 + DAY, 1, &mut out);
    assert!(
        out.announcements
            .iter()
            .all(|e| e.status == EventStatus::Failed)
    );
    assert_eq!(launched(&out, "daily"), [NOV_10 + 2 * DAY]);
    let mut out = Outbox::default();
    end(&mut shard, "child", NOV_10, 0, &mut out);
    assert!(out.launches.is_empty(), "nothing ready for the child");
}

#[test]
fn a_backfill_success_triggers_no_child_outside_the_backfill() {
    let (mut shard, _) = with_backfill(
        vec![daily("daily"), child_of("child", "daily")],
        vec![plan("daily", &[], 1)],
    );
    let announced = succeed(&mut shard, "daily", NOV_10);
    let mut out = Outbox::default();
    shard.resource_ready(&announced, T0 + 2, &mut out);
    assert!(launched(&out, "child").is_empty());
    let child = shard.job_view("child").unwrap().record.state;
    assert!(child.parents_succeeded.is_empty());
}

#[test]
fn scheduled_runs_never_wait_behind_a_backfill() {
    let hourly = spec(
        serde_json::json!({"name": "daily", "command": "true", "schedule": "R/2026-11-01T00:00:00Z/PT1H"}),
        JobKind::Scheduled,
    );
    let mut shard = backfill_shard(vec![hourly]);
    tick(&mut shard, T0 - 1);
    let mut out = Outbox::default();
    let mut backfill = plan("daily", &[], 4);
    backfill.next_ms = Some(T0 - 10 * 3_600_000);
    backfill.from_ms = T0 - 10 * 3_600_000;
    backfill.to_ms = T0 - 3_600_000;
    shard
        .create_backfill(backfill, Vec::new(), T0 - 1, &mut out)
        .unwrap();
    assert_eq!(launched(&out, "daily").len(), 4);
    let out = tick(&mut shard, T0);
    assert_eq!(
        launched(&out, "daily"),
        [T0],
        "the scheduled target starts on time"
    );
}

#[test]
fn a_restarted_shard_resumes_its_backfills_without_running_a_target_twice() {
    let store = MemoryStore::default();
    let mut shard = backfill_shard(vec![daily("daily")]);
    let mut out = Outbox::default();
    shard.put_job(daily("daily"), T0, &mut out);
    shard
        .create_backfill(plan("daily", &[], 2), Vec::new(), T0, &mut out)
        .unwrap();
    end(&mut shard, "daily", NOV_10, 0, &mut out);
    drop(store.submit(crate::store::coalesce(out.ops)));
    let snapshot = store.load().unwrap();
    let (mut shard, out) = Shard::recover(0, ShardConfig::default(), snapshot, T0 + 5);
    assert!(out.launches.is_empty(), "nothing new: two run already");
    assert_eq!(out.adopts.len(), 2, "days 1 and 2 are adopted");
    let mut out = Outbox::default();
    end(&mut shard, "daily", NOV_10 + DAY, 0, &mut out);
    assert_eq!(launched(&out, "daily"), [NOV_10 + 3 * DAY]);
}

#[test]
fn a_deleted_job_takes_its_plans_with_it() {
    let (mut shard, _) = with_backfill(vec![daily("daily")], vec![plan("daily", &[], 1)]);
    let mut out = Outbox::default();
    shard.delete_job("daily", &mut out).unwrap();
    assert!(shard.backfill_parts(None).is_empty());
    assert!(
        out.ops
            .iter()
            .any(|op| matches!(op, StoreOp::DeleteBackfills { job, id: None } if job == "daily"))
    );
    let missing = shard.create_backfill(plan("daily", &[], 1), Vec::new(), T0, &mut out);
    assert!(matches!(missing, Err(CommandError::JobNotFound(_))));
}

#[test]
fn a_job_moving_shard_takes_its_plans_and_goes_on_there() {
    let ring = Ring::new(2);
    let name = (0..)
        .map(|i| format!("daily-{i}"))
        .find(|n| ring.owner(n) == 1);
    let name = name.expect("a job the ring places on shard 1");
    let (mut source, _) = with_backfill(vec![daily(&name)], vec![plan(&name, &[], 1)]);
    let moved = source.release(&ring);
    assert_eq!(moved[0].backfills.len(), 1);
    assert!(source.backfill_parts(None).is_empty());
    let mut forgotten = Outbox::default();
    source.forget(std::slice::from_ref(&name), &mut forgotten);
    let deleted = forgotten.ops.iter();
    assert!(
        deleted
            .into_iter()
            .any(|op| matches!(op, StoreOp::DeleteBackfills { .. }))
    );

    let mut destination = Shard::recover(1, ShardConfig::default(), ShardSnapshot::default(), T0).0;
    let mut out = Outbox::default();
    destination.adopt(moved, T0 + 1, &mut out);
    assert!(out.launches.is_empty(), "day 0 runs where it was launched");
    assert!(
        out.ops
            .iter()
            .any(|op| matches!(op, StoreOp::PutBackfill(_)))
    );
    let mut out = Outbox::default();
    end(&mut destination, &name, NOV_10, 0, &mut out);
    assert_eq!(launched(&out, &name), [NOV_10 + DAY], "the plan goes on");
}
