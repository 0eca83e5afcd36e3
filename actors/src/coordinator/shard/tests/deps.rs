//! Dependencies: parents, resources, `triggeredBy` events and waits.

use super::*;

#[test]
fn a_child_runs_once_all_parents_succeeded_since_its_last_run() {
    let mut shard = empty_shard();
    let mut out = Outbox::default();
    shard.put_job(every_second("p1"), T0, &mut out);
    shard.put_job(every_second("p2"), T0, &mut out);
    let child = spec(
        serde_json::json!({"name": "c", "command": "true", "parents": ["p1", "p2"]}),
        JobKind::Dependent,
    );
    shard.put_job(child, T0, &mut out);
    let mut out = Outbox::default();
    parent_succeeded(&mut shard, "p1", T0, &mut out);
    parent_succeeded(&mut shard, "p1", T0, &mut out);
    assert!(out.launches.is_empty(), "p2 has not succeeded yet");
    parent_succeeded(&mut shard, "p2", T0 + 5, &mut out);
    assert_eq!(out.launches.len(), 1);
    assert!(out.launches[0].spec.task_id.ends_with(":c:"));
    assert!(
        shard
            .job_view("c")
            .unwrap()
            .record
            .state
            .parents_succeeded
            .is_empty()
    );
}

#[test]
fn marking_a_job_successful_counts_a_success_and_announces_it_without_a_run() {
    let mut shard = empty_shard();
    let mut out = Outbox::default();
    shard.put_job(every_second("p"), T0, &mut out);
    let child = spec(
        serde_json::json!({"name": "c", "command": "true", "parents": ["p"]}),
        JobKind::Dependent,
    );
    shard.put_job(child, T0, &mut out);
    let mut out = Outbox::default();
    shard.mark_success("p", T0 + 7, &mut out).unwrap();
    assert!(out.launches.is_empty(), "marking runs nothing itself");
    assert!(
        matches!(&out.announcements[..], [event] if event.resource.starts_with("job:p@")
            && event.at_ms == Some(T0 + 7) && event.status == EventStatus::Ready),
        "announced to every shard"
    );
    assert!(
        matches!(&out.ops[..], [StoreOp::PutJob(record), StoreOp::PutAnnouncement(event)]
            if record.state.success_count == 1 && *event == out.announcements[0]),
        "the new counters are written, with the announcement in the shard's outbox"
    );
    let state = shard.job_view("p").unwrap().record.state;
    assert_eq!(
        (state.success_count, state.last_success_ms),
        (1, Some(T0 + 7))
    );
    // The announcement reaches the child as a real success would, and it runs.
    let announced = out.announcements[0].clone();
    shard.resource_ready(&announced, T0 + 8, &mut out);
    assert_eq!(out.launches.len(), 1);
    assert!(out.launches[0].spec.task_id.ends_with(":c:"));
    let missing = shard.mark_success("nope", T0, &mut Outbox::default());
    assert!(matches!(missing, Err(CommandError::JobNotFound(name)) if name == "nope"));
}

#[test]
fn an_instance_waits_for_its_resources_and_starts_when_the_last_lands() {
    let store = no_resources();
    let mut shard = empty_shard();
    let job = hourly_waiting_for(&["hive:a/{HOUR}", "hive:b/{TODAY}"]);
    shard.put_job(job, T0, &mut Outbox::default());
    let out = tick(&mut shard, T0);
    assert!(out.launches.is_empty(), "resources are missing");
    let view = shard.job_view("load").unwrap();
    assert_eq!(view.live[0].state, InstanceState::Waiting);
    assert_eq!(
        view.waiting_for[0].1,
        ["hive:a/2026-11-23T10", "hive:b/2026-11-23"]
    );
    let mut out = Outbox::default();
    let event = satisfy(&store, "hive:a/2026-11-23T10");
    shard.resource_ready(&event, T0 + 10, &mut out);
    assert!(out.launches.is_empty(), "one resource still missing");
    let event = satisfy(&store, "hive:b/2026-11-23");
    // Hours after the target: epsilon counts from when the data landed.
    let later = T0 + 20 * 60_000;
    let mut out = Outbox::default();
    shard.resource_ready(&event, later, &mut out);
    assert_eq!(out.launches.len(), 1);
    // Applying the same event again changes nothing.
    let mut again = Outbox::default();
    shard.resource_ready(&event, later, &mut again);
    assert!(again.launches.is_empty() && again.ops.is_empty());
}

#[test]
fn an_instance_created_after_its_resource_landed_runs_at_once() {
    let store = no_resources();
    satisfy(&store, "hive:a/2026-11-23T10");
    let mut shard = empty_shard();
    shard.put_job(
        hourly_waiting_for(&["hive:a/{HOUR}", "hive:b/{HOUR}"]),
        T0,
        &mut Outbox::default(),
    );
    let mut out = tick(&mut shard, T0);
    assert_eq!(
        out.lookups,
        ["hive:a/2026-11-23T10", "hive:b/2026-11-23T10"]
    );
    assert!(out.launches.is_empty(), "not before the store has answered");
    // The other resource lands while the lookup is on its way: its event is not lost.
    let event = satisfy(&store, "hive:b/2026-11-23T10");
    shard.resource_ready(&event, T0 + 1, &mut out);
    assert!(out.launches.is_empty());
    look_up(&mut shard, &store, T0 + 2, &mut out);
    assert_eq!(out.launches.len(), 1);
    // An answer that comes again changes nothing.
    let mut again = Outbox::default();
    shard.resources_found(&["hive:a/2026-11-23T10".into()], T0 + 3, &mut again);
    assert!(again.is_empty());
}

#[test]
fn a_waiting_instance_expires_and_its_failure_is_announced() {
    let mut shard = empty_shard();
    shard.put_job(
        hourly_waiting_for(&["never/{HOUR}"]),
        T0,
        &mut Outbox::default(),
    );
    tick(&mut shard, T0);
    assert_eq!(
        shard.next_deadline(),
        Some(T0 + 30 * 60_000),
        "the wait timeout"
    );
    let out = tick(&mut shard, T0 + 30 * 60_000);
    let ended = out.ops.iter().find_map(|op| match op {
        StoreOp::AppendHistory(HistoryEntry::Run(run)) => Some(run.clone()),
        _ => None,
    });
    let ended = ended.expect("the instance ended");
    assert_eq!(ended.state, InstanceState::Expired);
    assert!(ended.message.unwrap().contains("never/2026-11-23T10"));
    assert_eq!(out.announcements.len(), 1);
    assert_eq!(out.announcements[0].resource, "job:load@2026-11-23T10");
    assert_eq!(out.announcements[0].status, EventStatus::Failed);
}

#[test]
fn a_success_announces_the_job_resource_at_its_granularity() {
    let mut shard = empty_shard();
    let daily = spec(
        serde_json::json!({"name": "daily", "command": "true",
            "schedule": "R/2026-11-23T19:00:00/P1D", "scheduleTimeZone": "Asia/Tokyo"}),
        JobKind::Scheduled,
    );
    shard.put_job(daily, T0, &mut Outbox::default());
    let task = tick(&mut shard, T0).launches.remove(0).spec.task_id;
    let mut out = Outbox::default();
    shard.task_update(ended(&task, TaskEnd::Exited(0)), T0 + 5, &mut out);
    // 19:00 in Tokyo is 10:00Z (T0): the run is for the 23rd there.
    assert_eq!(out.announcements[0].resource, "job:daily@2026-11-23");
    assert_eq!(out.announcements[0].status, EventStatus::Ready);
    assert!(
        out.ops
            .iter()
            .any(|op| matches!(op, StoreOp::PutAnnouncement(_))),
        "announcements go to the outbox in the same batch"
    );
}

#[test]
fn triggered_by_runs_once_per_matching_event() {
    let mut shard = empty_shard();
    let rebuild = spec(
        serde_json::json!({"name": "rebuild", "command": "true", "triggeredBy": "products:*"}),
        JobKind::Dependent,
    );
    shard.put_job(rebuild, T0, &mut Outbox::default());
    let mut out = Outbox::default();
    shard.resource_ready(
        &ResourceEvent::ready("products:1", Some(T0 - 3_600_000)),
        T0,
        &mut out,
    );
    assert_eq!(out.launches.len(), 1, "an old event time still runs now");
    let mut out = Outbox::default();
    shard.resource_ready(&ResourceEvent::ready("orders:1", Some(T0)), T0, &mut out);
    assert!(out.launches.is_empty(), "no match");
    // The same event replayed (after a crash) triggers nothing more.
    let mut out = Outbox::default();
    shard.resource_ready(
        &ResourceEvent::ready("products:1", Some(T0 - 3_600_000)),
        T0,
        &mut out,
    );
    assert!(out.ops.is_empty() && out.launches.is_empty());
    let view = shard.job_view("rebuild").unwrap();
    assert_eq!(view.live.len(), 1);
    assert_eq!(view.live[0].cause, RunCause::Event);
}

fn child_of(name: &str, parents: &[&str]) -> JobSpec {
    spec(
        serde_json::json!({"name": name, "command": "true", "parents": parents}),
        JobKind::Dependent,
    )
}

/// Ids of the instances `out` launches, of job `job`.
fn launched(out: &Outbox, job: &str) -> usize {
    let task_ids = out.launches.iter().map(|l| &l.spec.task_id);
    task_ids
        .filter(|id| parse_task_id(id).is_some_and(|task| task.job == job))
        .count()
}

#[test]
fn a_child_on_another_shard_runs_from_its_parents_announcement_alone() {
    let mut parents = empty_shard();
    let mut children = empty_shard();
    parents.put_job(every_second("p"), T0, &mut Outbox::default());
    children.put_job(child_of("c", &["p"]), T0, &mut Outbox::default());
    let started = tick(&mut parents, T0);
    let task_id = started.launches[0].spec.task_id.clone();
    let mut ended_out = Outbox::default();
    parents.task_update(ended(&task_id, TaskEnd::Exited(0)), T0 + 50, &mut ended_out);
    let [announcement] = &ended_out.announcements[..] else {
        panic!("one announcement: {:?}", ended_out.announcements);
    };
    assert!(
        ended_out
            .ops
            .iter()
            .any(|op| matches!(op, StoreOp::PutAnnouncement(e) if e == announcement)),
        "in the parent shard's outbox, in the batch of the run's end"
    );
    let mut out = Outbox::default();
    children.resource_ready(announcement, T0 + 60, &mut out);
    assert_eq!(launched(&out, "c"), 1);
    let state = children.job_view("c").unwrap().record.state;
    assert_eq!(state.parent_success_times["p"], [T0].into());
}

#[test]
fn an_announcement_applied_again_runs_the_child_no_second_time() {
    let store = MemoryStore::default();
    let mut shard = empty_shard();
    let mut out = Outbox::default();
    shard.put_job(child_of("c", &["p"]), T0, &mut out);
    let first = success_of("p", T0);
    shard.resource_ready(&first, T0 + 10, &mut out);
    assert_eq!(launched(&out, "c"), 1);
    drop(store.submit(out.ops));
    // The bus applies it again (another shard failed to, or a restart), also after the
    // child's shard itself was rebuilt from storage.
    let mut again = Outbox::default();
    shard.resource_ready(&first, T0 + 20, &mut again);
    assert_eq!(launched(&again, "c"), 0);
    assert!(again.ops.is_empty(), "nothing to write for a repeat");
    let snapshot = store.load().unwrap();
    let (mut rebuilt, _) = Shard::recover(0, ShardConfig::default(), snapshot, T0 + 30);
    let mut again = Outbox::default();
    rebuilt.resource_ready(&first, T0 + 40, &mut again);
    assert_eq!(launched(&again, "c"), 0, "the counted time is durable");
    // A new success of the parent runs it again.
    let mut out = Outbox::default();
    rebuilt.resource_ready(&success_of("p", T0 + 1000), T0 + 1000, &mut out);
    assert_eq!(rebuilt.job_view("c").unwrap().live.len(), 2);
}

#[test]
fn successes_announced_out_of_order_count_and_old_repeats_do_not() {
    let mut shard = empty_shard();
    shard.put_job(child_of("c", &["p"]), T0, &mut Outbox::default());
    let mut out = Outbox::default();
    // A concurrent parent's later target ends first.
    parent_succeeded(&mut shard, "p", T0 + 2000, &mut out);
    parent_succeeded(&mut shard, "p", T0 + 1000, &mut out);
    assert_eq!(shard.job_view("c").unwrap().live.len(), 2, "both count");
    // Many successes later, the first ones are applied again.
    for i in 3..30 {
        parent_succeeded(&mut shard, "p", T0 + i * 1000, &mut out);
    }
    let runs = shard.job_view("c").unwrap().live.len();
    assert_eq!(runs, 29);
    for i in 1..30 {
        parent_succeeded(&mut shard, "p", T0 + i * 1000, &mut out);
    }
    assert_eq!(
        shard.job_view("c").unwrap().live.len(),
        runs,
        "no repeat counts"
    );
    let times = &shard
        .job_view("c")
        .unwrap()
        .record
        .state
        .parent_success_times["p"];
    assert_eq!(times.len(), 8, "a few kept per parent");
}

#[test]
fn a_job_with_no_child_here_or_a_failed_run_writes_nothing() {
    let mut shard = empty_shard();
    shard.put_job(child_of("c", &["p"]), T0, &mut Outbox::default());
    let mut out = Outbox::default();
    parent_succeeded(&mut shard, "other", T0, &mut out);
    let failed = ResourceEvent {
        status: EventStatus::Failed,
        ..success_of("p", T0)
    };
    shard.resource_ready(&failed, T0, &mut out);
    assert!(out.ops.is_empty() && out.launches.is_empty());
}

#[test]
fn a_parent_taken_out_of_a_childs_parents_is_forgotten_with_its_times() {
    let mut shard = empty_shard();
    shard.put_job(child_of("c", &["p", "q"]), T0, &mut Outbox::default());
    parent_succeeded(&mut shard, "p", T0, &mut Outbox::default());
    parent_succeeded(&mut shard, "q", T0, &mut Outbox::default());
    shard.put_job(child_of("c", &["q"]), T0, &mut Outbox::default());
    let state = shard.job_view("c").unwrap().record.state;
    let kept: Vec<&String> = state.parent_success_times.keys().collect();
    assert_eq!(kept, ["q"]);
}
