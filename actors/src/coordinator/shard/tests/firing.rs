//! Firing: targets, epsilon, queues and what a job's runs look like meanwhile.

use super::*;

/// The skipped ranges an outbox appends to history.
fn skipped_ranges(out: &Outbox) -> Vec<&SkippedTargets> {
    out.ops
        .iter()
        .filter_map(|op| match op {
            StoreOp::AppendHistory(HistoryEntry::Skipped(s)) => Some(s),
            _ => None,
        })
        .collect()
}

/// A job every second whose targets may start up to 2 s late.
fn every_second_within_2s(name: &str) -> JobSpec {
    spec(
        serde_json::json!({"name": name, "command": "true", "schedule": "R/2026-11-23T10:00:00Z/PT1S", "epsilon": "PT2S"}),
        JobKind::Scheduled,
    )
}

#[test]
fn a_job_fires_each_target_once_at_its_time() {
    let mut shard = empty_shard();
    shard.put_job(every_second("a"), T0, &mut Outbox::default());
    assert_eq!(shard.next_deadline(), Some(T0));
    let out = tick(&mut shard, T0);
    assert_eq!(out.launches.len(), 1);
    assert_eq!(out.launches[0].spec.task_id, format!("ct:{T0}:0:a:"));
    assert_eq!(shard.next_deadline(), Some(T0 + 1000));
    // Ticking again at the same time fires nothing new.
    assert!(tick(&mut shard, T0).launches.is_empty());
}

#[test]
fn a_non_concurrent_job_waits_for_its_previous_run() {
    let mut shard = empty_shard();
    shard.put_job(every_second("a"), T0, &mut Outbox::default());
    let first = tick(&mut shard, T0).launches.remove(0).spec.task_id;
    assert!(
        tick(&mut shard, T0 + 1000).launches.is_empty(),
        "previous run still running"
    );
    let mut out = Outbox::default();
    shard.task_update(ended(&first, TaskEnd::Exited(0)), T0 + 1500, &mut out);
    assert_eq!(
        out.launches.len(),
        1,
        "the queued target starts when the previous ends"
    );
    assert_eq!(
        out.launches[0].spec.task_id,
        format!("ct:{}:0:a:", T0 + 1000)
    );
    assert!(matches!(&out.announcements[..], [event]
        if event.resource.starts_with("job:a@") && event.status == EventStatus::Ready));
}

#[test]
fn targets_missed_beyond_epsilon_are_recorded_as_one_skipped_range() {
    let mut shard = empty_shard();
    shard.put_job(every_second("a"), T0, &mut Outbox::default());
    // Nothing ticked for 10 minutes (the server was down); epsilon is 60 s.
    let now = T0 + 600_000;
    let out = tick(&mut shard, now);
    let skipped = skipped_ranges(&out);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].count, 540, "targets T0 .. now-60s");
    // Of the 61 targets whose window is still open, the oldest starts; the job runs one at
    // a time, so the others stay implicit in its next target (no instance, no write).
    assert_eq!(shard.stats(0).live_instances, 1);
    assert_eq!(
        out.launches[0].spec.task_id,
        format!("ct:{}:0:a:", now - 60_000)
    );
    let next = shard.job_view("a").unwrap().record.state.next_target_ms;
    assert_eq!(next, Some(now - 59_000));
}

#[test]
fn queued_targets_past_epsilon_are_skipped_while_the_previous_run_goes_on() {
    let mut shard = empty_shard();
    shard.put_job(every_second_within_2s("a"), T0, &mut Outbox::default());
    let first = tick(&mut shard, T0).launches.remove(0).spec.task_id; // keeps running
    for second in 1..=10 {
        let out = tick(&mut shard, T0 + second * 1000);
        assert!(out.ops.is_empty(), "a parked job writes nothing per target");
    }
    // Its targets wait implicitly, with no instance and no timer.
    assert_eq!(shard.stats(0).live_instances, 1);
    assert_eq!(shard.next_deadline(), None);
    // When the run ends, the targets past their 2 s window are skipped as one range and the
    // oldest still inside it starts at once.
    let mut out = Outbox::default();
    let now = T0 + 10_500;
    shard.task_update(ended(&first, TaskEnd::Exited(0)), now, &mut out);
    let skipped = skipped_ranges(&out);
    assert_eq!(
        (skipped.len(), skipped[0].first_target_ms, skipped[0].count),
        (1, T0 + 1000, 8),
        "targets 1 s .. 8 s"
    );
    assert_eq!(out.launches.len(), 1);
    assert_eq!(
        out.launches[0].spec.task_id,
        format!("ct:{}:0:a:", T0 + 9000)
    );
    assert_eq!(shard.stats(0).live_instances, 1, "T0 + 10 s stays implicit");
}

#[test]
fn a_run_ending_while_starts_are_held_leaves_its_next_target_to_the_next_tick() {
    let mut shard = empty_shard();
    shard.put_job(every_second_within_2s("a"), T0, &mut Outbox::default());
    let first = tick(&mut shard, T0).launches.remove(0).spec.task_id;
    assert!(tick(&mut shard, T0 + 1000).launches.is_empty(), "parked");
    // The coordinator's backlog is over its limit: the end is recorded, nothing starts.
    shard.hold_starts(true);
    let mut out = Outbox::default();
    shard.task_update(ended(&first, TaskEnd::Exited(0)), T0 + 1500, &mut out);
    assert!(out.launches.is_empty(), "no start while held");
    assert_eq!(shard.stats(0).live_instances, 0);
    assert_eq!(
        shard.next_deadline(),
        Some(T0 + 1000),
        "its due target waits for a tick"
    );
    // The backlog drained: the next tick starts it (still inside its epsilon).
    shard.hold_starts(false);
    let out = tick(&mut shard, T0 + 1600);
    assert_eq!(out.launches.len(), 1);
    assert_eq!(
        out.launches[0].spec.task_id,
        format!("ct:{}:0:a:", T0 + 1000)
    );
}

#[test]
fn due_targets_wait_while_launches_on_their_way_are_at_the_cap() {
    let config = ShardConfig {
        max_launching: 2,
        ..ShardConfig::default()
    };
    let mut shard = Shard::recover(0, config, ShardSnapshot::default(), T0).0;
    for name in ["a", "b", "c"] {
        shard.put_job(every_second(name), T0, &mut Outbox::default());
    }
    let out = tick(&mut shard, T0);
    assert_eq!(out.launches.len(), 2, "two launches on their way: the cap");
    assert_eq!(shard.stats(0).live_instances, 2, "the third stays implicit");
    let c = shard
        .summaries()
        .into_iter()
        .find(|s| s.record.spec.name == "c");
    assert_eq!(
        c.map(|s| s.run_state),
        Some(RunState::Idle),
        "shown idle though due (docs/api.md)"
    );
    assert_eq!(
        shard.next_deadline(),
        None,
        "no tick until a launch is taken up"
    );
    assert!(tick(&mut shard, T0 + 10).launches.is_empty());
    assert_eq!(
        shard.stats(T0 + 10).behind_ms,
        10,
        "c's target is 10 ms overdue"
    );
    // An agent reports the first running: the third's target is due again, and starts.
    let first = &out.launches[0].spec.task_id;
    let started = TaskEvent::Started {
        at_ms: T0 + 20,
        agent: "local".into(),
    };
    let mut reported = Outbox::default();
    shard.task_update(TaskUpdate::new(first, started), T0 + 20, &mut reported);
    assert_eq!(shard.next_deadline(), Some(T0));
    let out = tick(&mut shard, T0 + 30);
    assert_eq!(out.launches.len(), 1);
    assert!(out.launches[0].spec.task_id.ends_with(":c:"));
    assert_eq!(shard.stats(T0 + 30).behind_ms, 0, "nothing overdue now");
}

#[test]
fn summaries_say_whether_a_job_is_idle_queued_or_running() {
    let mut shard = empty_shard();
    shard.put_job(every_second("a"), T0, &mut Outbox::default());
    let state_of = |shard: &Shard| shard.summaries()[0].run_state;
    assert_eq!(state_of(&shard), RunState::Idle);
    tick(&mut shard, T0);
    assert_eq!(state_of(&shard), RunState::Running);
    tick(&mut shard, T0 + 1000);
    assert_eq!(
        state_of(&shard),
        RunState::Running,
        "one running, the next target waiting behind it"
    );
    let mut out = Outbox::default();
    shard.kill_tasks("a", T0 + 1001, &mut out).unwrap();
    // The running one is asked to die; the waiting target is dropped at once.
    let task = out.kills[0].clone();
    shard.task_update(ended(&task, TaskEnd::Killed), T0 + 1002, &mut out);
    assert_eq!(state_of(&shard), RunState::Idle);
    let next = tick(&mut shard, T0 + 2000).launches.remove(0).spec.task_id;
    shard.task_update(ended(&next, TaskEnd::Exited(1)), T0 + 2001, &mut out);
    assert_eq!(state_of(&shard), RunState::Queued, "waiting to retry");
}

#[test]
fn skipped_targets_and_expiries_are_noticed() {
    let mut shard = empty_shard();
    shard.put_job(every_second("a"), T0, &mut Outbox::default());
    let out = tick(&mut shard, T0 + 600_000);
    let [notice] = out.notices.as_slice() else {
        panic!("one notice for the skipped range: {:?}", out.notices);
    };
    assert_eq!((notice.kind, notice.count), (NoticeKind::Skipped, 540));
    assert_eq!(notice.task_id, None);

    let mut shard = empty_shard();
    let mut job = hourly_waiting_for(&["never/{TODAY}"]);
    job.wait_timeout_ms = Some(1000);
    shard.put_job(job, T0, &mut Outbox::default());
    tick(&mut shard, T0);
    let out = tick(&mut shard, T0 + 2000);
    assert_eq!(out.notices.len(), 1);
    assert_eq!(out.notices[0].kind, NoticeKind::Expired);
}

/// An overloaded job skips a few targets each time its late run ends: every range goes to
/// the history, but a notice at most once a minute, counting what was skipped in between.
#[test]
fn a_job_skipping_on_every_run_is_noticed_at_most_once_a_minute() {
    let mut shard = empty_shard();
    shard.put_job(every_second("a"), T0, &mut Outbox::default());
    let mut running = tick(&mut shard, T0).launches.remove(0).spec.task_id;
    tick(&mut shard, T0 + 1000); // parked: its slot is taken
    let mut end_late = |at_ms: i64| {
        let mut out = Outbox::default();
        shard.task_update(ended(&running, TaskEnd::Exited(0)), at_ms, &mut out);
        running = out.launches[0].spec.task_id.clone();
        let skipped: u64 = skipped_ranges(&out).iter().map(|s| s.count).sum();
        (skipped, out.notices)
    };
    let (skipped, notices) = end_late(T0 + 120_000);
    assert_eq!(skipped, 59, "T0 + 1 s .. T0 + 59 s; T0 + 60 s starts");
    assert_eq!(notices.len(), 1, "the first skip is told at once");
    assert_eq!(notices[0].count, 59);
    let (skipped, notices) = end_late(T0 + 125_000);
    assert_eq!(skipped, 4, "every range still goes to the history");
    assert!(notices.is_empty(), "no second notice within the minute");
    let (skipped, notices) = end_late(T0 + 125_000 + notices::SKIP_NOTICE_EVERY_MS);
    assert_eq!(skipped, 59);
    let [notice] = notices.as_slice() else {
        panic!("a notice once the minute is over: {notices:?}");
    };
    assert_eq!(notice.count, 63, "with the 4 skipped in between");
}

#[test]
fn a_tick_makes_at_most_the_cap_of_instances_and_the_next_tick_the_rest() {
    let config = ShardConfig {
        max_instances_per_tick: 10,
        ..ShardConfig::default()
    };
    let snapshot = ShardSnapshot::default();
    let mut shard = Shard::recover(0, config, snapshot, T0).0;
    let concurrent = spec(
        serde_json::json!({"name": "a", "command": "true", "schedule": "R/2026-11-23T10:00:00Z/PT1S",
                           "concurrent": true}),
        JobKind::Scheduled,
    );
    shard.put_job(concurrent, T0, &mut Outbox::default());
    // 50 s without a tick (within epsilon): 51 targets are due.
    let now = T0 + 50_000;
    let out = tick(&mut shard, now);
    assert_eq!(out.launches.len(), 10, "one tick makes at most the cap");
    assert!(out.more_due, "the rest are due at once");
    assert_eq!(shard.job_view("a").unwrap().live.len(), 10);
    let out = tick(&mut shard, now);
    assert_eq!(out.launches.len(), 10, "the next tick makes the next ten");
    assert_eq!(
        out.launches[0].spec.task_id,
        format!("ct:{}:0:a:", T0 + 10_000),
        "in target order"
    );
    while tick(&mut shard, now).more_due {}
    let live = shard.job_view("a").unwrap().live;
    assert_eq!(live.len(), 51, "every due target runs, none twice");
    assert_eq!(
        shard.job_view("a").unwrap().record.state.next_target_ms,
        Some(now + 1000)
    );
}
