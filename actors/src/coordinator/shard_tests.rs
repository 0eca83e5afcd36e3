//! The shard's scheduling rules, without actors, storage or processes.

use super::*;
use crate::store::{MemoryResourceStore, MemoryStore, ResourceOp, ShardStore};
use dron_model::job::{JobKind, JobRequest};
use dron_model::resource::ResourceRecord;

fn no_resources() -> Arc<MemoryResourceStore> {
    Arc::new(MemoryResourceStore::default())
}

/// A shard's own indexes, shared with nobody.
fn shared(resources: Arc<MemoryResourceStore>) -> SharedIndexes {
    SharedIndexes {
        resources,
        parents: Arc::default(),
    }
}

const T0: i64 = 1_795_428_000_000; // 2026-11-23T10:00:00Z

fn spec(json: serde_json::Value, kind: JobKind) -> JobSpec {
    let request: JobRequest = serde_json::from_value(json).unwrap();
    request.validate(kind, ms_to_time(T0)).unwrap()
}

fn every_second(name: &str) -> JobSpec {
    spec(
        serde_json::json!({"name": name, "command": "true", "schedule": "R/2026-11-23T10:00:00Z/PT1S"}),
        JobKind::Scheduled,
    )
}

fn empty_shard() -> Shard {
    shard_over(Arc::new(MemoryResourceStore::default()))
}

fn shard_over(resources: Arc<MemoryResourceStore>) -> Shard {
    Shard::recover(
        0,
        ShardConfig::default(),
        shared(resources),
        ShardSnapshot::default(),
        T0,
    )
    .0
}

fn ended(task_id: &str, end: TaskEnd) -> TaskUpdate {
    TaskUpdate::new(task_id, TaskEvent::Ended { end, at_ms: 0 })
}

fn tick(shard: &mut Shard, now_ms: i64) -> Outbox {
    let mut out = Outbox::default();
    shard.tick(now_ms, &mut out);
    out
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
    assert_eq!(out.succeeded, vec!["a".to_string()]);
}

#[test]
fn targets_missed_beyond_epsilon_are_recorded_as_one_skipped_range() {
    let mut shard = empty_shard();
    shard.put_job(every_second("a"), T0, &mut Outbox::default());
    // Nothing ticked for 10 minutes (the server was down); epsilon is 60 s.
    let now = T0 + 600_000;
    let out = tick(&mut shard, now);
    let skipped: Vec<&SkippedTargets> = out
        .ops
        .iter()
        .filter_map(|op| match op {
            StoreOp::AppendHistory(HistoryEntry::Skipped(s)) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].count, 540, "targets T0 .. now-60s");
    // The 61 targets whose window is still open become instances; the oldest starts.
    assert_eq!(shard.stats().live_instances, 61);
    assert_eq!(
        out.launches[0].spec.task_id,
        format!("ct:{}:0:a:", now - 60_000)
    );
}

#[test]
fn failed_attempts_retry_with_backoff_then_fail() {
    let mut shard = empty_shard();
    let job = spec(
        serde_json::json!({"name": "f", "command": "false", "schedule": "R1/2026-11-23T10:00:00Z/PT1S", "retries": 1}),
        JobKind::Scheduled,
    );
    shard.put_job(job, T0, &mut Outbox::default());
    let first = tick(&mut shard, T0).launches.remove(0).spec.task_id;
    let mut out = Outbox::default();
    shard.task_update(ended(&first, TaskEnd::Exited(1)), T0 + 10, &mut out);
    assert!(out.launches.is_empty());
    assert_eq!(
        shard.next_deadline(),
        Some(T0 + 10 + 1000),
        "retry after the backoff"
    );
    let retry = tick(&mut shard, T0 + 1010).launches.remove(0).spec.task_id;
    assert_eq!(retry, format!("ct:{T0}:1:f:"));
    let mut out = Outbox::default();
    shard.task_update(ended(&retry, TaskEnd::Exited(1)), T0 + 1020, &mut out);
    assert_eq!(shard.stats().live_instances, 0);
    let view = shard.job_view("f").unwrap();
    assert_eq!(view.record.state.error_count, 1);
    assert_eq!(
        shard.next_deadline(),
        None,
        "R1 is exhausted and nothing is retrying"
    );
}

#[test]
fn a_stale_attempts_report_changes_nothing() {
    let mut shard = empty_shard();
    shard.put_job(every_second("a"), T0, &mut Outbox::default());
    tick(&mut shard, T0);
    let mut out = Outbox::default();
    let stale = ended(&format!("ct:{T0}:7:a:"), TaskEnd::Exited(0));
    assert_eq!(shard.task_update(stale, T0, &mut out), Applied::Stale);
    assert!(out.ops.is_empty());
    let foreign = ended("ct:1:0:other:", TaskEnd::Exited(0));
    assert_eq!(shard.task_update(foreign, T0, &mut out), Applied::Unknown);
}

#[test]
fn a_lost_agents_attempt_is_relaunched_without_spending_a_retry() {
    let mut shard = empty_shard();
    let mut job = every_second("a");
    job.retries = 1;
    shard.put_job(job, T0, &mut Outbox::default());
    let first = tick(&mut shard, T0).launches.remove(0).spec.task_id;
    let mut out = Outbox::default();
    let lost = ended(
        &first,
        TaskEnd::AgentLost("agent 'w1' stopped heartbeating".into()),
    );
    assert_eq!(shard.task_update(lost, T0 + 10, &mut out), Applied::Current);
    assert_eq!(out.launches.len(), 1, "relaunched at once");
    let second = out.launches.remove(0).spec.task_id;
    assert_eq!(
        second,
        format!("ct:{T0}:1:a:"),
        "a new task id: the old one is fenced"
    );
    // A failure now still has its one retry.
    let mut out = Outbox::default();
    shard.task_update(ended(&second, TaskEnd::Exited(1)), T0 + 20, &mut out);
    let live = shard.job_view("a").unwrap().live;
    assert_eq!(live[0].state, InstanceState::RetryWait);
}

#[test]
fn a_lost_agent_past_epsilon_fails_the_instance() {
    let mut shard = empty_shard();
    shard.put_job(every_second("a"), T0, &mut Outbox::default());
    let task = tick(&mut shard, T0).launches.remove(0).spec.task_id;
    let mut out = Outbox::default();
    let late = T0 + 61_000; // the default epsilon is a minute
    shard.task_update(
        ended(&task, TaskEnd::AgentLost("gone".into())),
        late,
        &mut out,
    );
    assert!(
        out.launches
            .iter()
            .all(|l| l.spec.task_id != format!("ct:{T0}:1:a:"))
    );
    let history = history_runs(&out);
    assert_eq!(history[0].state, InstanceState::Failed);
    assert!(history[0].message.as_deref().unwrap().contains("epsilon"));
}

#[test]
fn a_task_no_agent_could_take_is_skipped() {
    let mut shard = empty_shard();
    shard.put_job(every_second("a"), T0, &mut Outbox::default());
    let launch = tick(&mut shard, T0).launches.remove(0);
    assert_eq!(launch.start_deadline_ms, Some(T0 + 60_000));
    let mut out = Outbox::default();
    let waiting = TaskEvent::WaitingForOffer {
        reason: "waiting for resources: no agent is connected".into(),
    };
    shard.task_update(TaskUpdate::new(&launch.spec.task_id, waiting), T0, &mut out);
    let live = shard.job_view("a").unwrap().live;
    assert!(live[0].message.as_deref().unwrap().contains("no agent"));
    let not_placed = TaskEnd::NotPlaced("no agent could take it".into());
    let mut out = Outbox::default();
    shard.task_update(
        ended(&launch.spec.task_id, not_placed),
        T0 + 60_001,
        &mut out,
    );
    assert_eq!(history_runs(&out)[0].state, InstanceState::Skipped);
}

#[test]
fn a_remote_agent_is_recorded_at_once_and_the_local_one_with_the_end() {
    let mut shard = empty_shard();
    shard.put_job(every_second("a"), T0, &mut Outbox::default());
    let task = tick(&mut shard, T0).launches.remove(0).spec.task_id;
    let started = |agent: &str| {
        let agent = agent.to_string();
        TaskUpdate::new(&task, TaskEvent::Started { at_ms: T0, agent })
    };
    let mut out = Outbox::default();
    shard.task_update(started("local"), T0, &mut out);
    assert!(out.ops.is_empty(), "no write for a local start");
    let mut out = Outbox::default();
    shard.task_update(started("w1"), T0, &mut out);
    let written = out
        .ops
        .iter()
        .any(|op| matches!(op, StoreOp::PutInstance(i) if i.agent.as_deref() == Some("w1")));
    assert!(written);
}

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
    shard.parent_succeeded("p1", T0, &mut out);
    shard.parent_succeeded("p1", T0, &mut out);
    assert!(out.launches.is_empty(), "p2 has not succeeded yet");
    shard.parent_succeeded("p2", T0 + 5, &mut out);
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
fn kill_ends_queued_runs_and_signals_running_ones() {
    let mut shard = empty_shard();
    shard.put_job(every_second("a"), T0, &mut Outbox::default());
    let running = tick(&mut shard, T0).launches.remove(0).spec.task_id;
    tick(&mut shard, T0 + 1000); // queued behind the running one
    let mut out = Outbox::default();
    assert_eq!(shard.kill_tasks("a", T0 + 1100, &mut out).unwrap(), 2);
    assert_eq!(out.kills, vec![running.clone()]);
    assert!(out.launches.is_empty(), "a killed queue does not start");
    let mut out = Outbox::default();
    shard.task_update(ended(&running, TaskEnd::Signaled(9)), T0 + 1200, &mut out);
    assert_eq!(shard.stats().live_instances, 0);
    assert_eq!(shard.job_view("a").unwrap().record.state.error_count, 2);
}

#[test]
fn recovery_adopts_running_tasks_and_keeps_timers() {
    let mut shard = empty_shard();
    let mut out = Outbox::default();
    shard.put_job(every_second("a"), T0, &mut out);
    let fired = tick(&mut shard, T0);
    let store = MemoryStore::default();
    drop(store.submit(out.ops));
    drop(store.submit(fired.ops));
    let (recovered, out) = Shard::recover(
        0,
        ShardConfig::default(),
        shared(no_resources()),
        store.load().unwrap(),
        T0 + 500,
    );
    assert_eq!(
        out.adopts.len(),
        1,
        "the running task is adopted, not relaunched"
    );
    assert!(out.launches.is_empty());
    assert_eq!(recovered.next_deadline(), Some(T0 + 1000));
}

#[test]
fn release_and_adopt_move_a_job_with_its_live_instances() {
    let mut source = empty_shard();
    for i in 0..50 {
        source.put_job(
            every_second(&format!("job-{i}")),
            T0,
            &mut Outbox::default(),
        );
    }
    tick(&mut source, T0);
    let ring = Ring::new(2);
    let moved = source.release(&ring);
    assert!(!moved.is_empty() && moved.len() < 50);
    assert!(
        moved
            .iter()
            .all(|m| ring.owner(&m.record.spec.name) == 1 && m.live.len() == 1)
    );
    let mut destination = Shard::recover(
        1,
        ShardConfig::default(),
        shared(no_resources()),
        ShardSnapshot::default(),
        T0,
    )
    .0;
    let mut out = Outbox::default();
    destination.adopt(moved.clone(), T0 + 100, &mut out);
    assert!(
        out.launches.is_empty(),
        "running instances keep running where they are"
    );
    assert_eq!(destination.stats().jobs, moved.len());
    assert_eq!(source.stats().jobs + destination.stats().jobs, 50);
    // Adopting the same jobs again (an interrupted move redone) changes nothing.
    let mut again = Outbox::default();
    destination.adopt(moved, T0 + 200, &mut again);
    assert!(again.ops.is_empty());
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
    assert_eq!(
        out.succeeded,
        vec!["p".to_string()],
        "announced to every shard"
    );
    assert!(
        matches!(&out.ops[..], [StoreOp::PutJob(record)] if record.state.success_count == 1),
        "the new counters are written"
    );
    let state = shard.job_view("p").unwrap().record.state;
    assert_eq!(
        (state.success_count, state.last_success_ms),
        (1, Some(T0 + 7))
    );
    // The announcement reaches the child as a real success would, and it runs.
    shard.parent_succeeded("p", T0 + 8, &mut out);
    assert_eq!(out.launches.len(), 1);
    assert!(out.launches[0].spec.task_id.ends_with(":c:"));
    let missing = shard.mark_success("nope", T0, &mut Outbox::default());
    assert!(matches!(missing, Err(CommandError::JobNotFound(name)) if name == "nope"));
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
        "one running, one queued behind it"
    );
    let mut out = Outbox::default();
    shard.kill_tasks("a", T0 + 1001, &mut out).unwrap();
    // The running one is asked to die; the queued one ended at once.
    let task = out.kills[0].clone();
    shard.task_update(ended(&task, TaskEnd::Killed), T0 + 1002, &mut out);
    assert_eq!(state_of(&shard), RunState::Idle);
    let next = tick(&mut shard, T0 + 2000).launches.remove(0).spec.task_id;
    shard.task_update(ended(&next, TaskEnd::Exited(1)), T0 + 2001, &mut out);
    assert_eq!(state_of(&shard), RunState::Queued, "waiting to retry");
}

#[test]
fn queued_targets_past_epsilon_are_skipped_while_the_previous_run_goes_on() {
    let mut shard = empty_shard();
    let job = spec(
        serde_json::json!({"name": "a", "command": "true", "schedule": "R/2026-11-23T10:00:00Z/PT1S", "epsilon": "PT2S"}),
        JobKind::Scheduled,
    );
    shard.put_job(job, T0, &mut Outbox::default());
    tick(&mut shard, T0); // starts and keeps running
    for second in 1..=10 {
        tick(&mut shard, T0 + second * 1000);
    }
    // Only the targets still inside their 2 s window wait; the rest were skipped on the way.
    assert_eq!(shard.stats().live_instances, 1 + 3);
}

#[test]
fn killing_an_async_run_ends_it_even_after_its_process_exited() {
    let mut shard = empty_shard();
    let job = spec(
        serde_json::json!({"name": "a", "command": "true", "async": true, "schedule": "R1/2026-11-23T10:00:00Z/PT1S"}),
        JobKind::Scheduled,
    );
    shard.put_job(job, T0, &mut Outbox::default());
    let task = tick(&mut shard, T0).launches.remove(0).spec.task_id;
    let mut out = Outbox::default();
    shard.task_update(ended(&task, TaskEnd::Exited(0)), T0 + 10, &mut out);
    assert_eq!(
        shard.stats().live_instances,
        1,
        "async: waiting for its report"
    );
    shard.kill_tasks("a", T0 + 20, &mut out).unwrap();
    assert_eq!(shard.stats().live_instances, 0);
    let reference = parse_task_id(&task).unwrap();
    let late_report = shard.complete_async(&reference, 0, T0 + 30, &mut Outbox::default());
    assert!(matches!(late_report, Err(CommandError::TaskNotFound(_))));
}

#[test]
fn only_async_jobs_take_completion_reports() {
    let mut shard = empty_shard();
    shard.put_job(every_second("a"), T0, &mut Outbox::default());
    let task = tick(&mut shard, T0).launches.remove(0).spec.task_id;
    let reference = parse_task_id(&task).unwrap();
    let report = shard.complete_async(&reference, 0, T0 + 30, &mut Outbox::default());
    assert!(matches!(report, Err(CommandError::Conflict(_))));
    assert_eq!(
        shard.stats().live_instances,
        1,
        "still running until its process ends"
    );
}

// ----- resources ----------------------------------------------------------------------------

fn satisfy(store: &MemoryResourceStore, resource: &str) -> ResourceEvent {
    let record = ResourceRecord {
        resource: resource.to_string(),
        at_ms: T0,
        recorded_ms: T0,
        meta_json: String::new(),
    };
    drop(store.submit(vec![ResourceOp::Satisfy(record)]));
    ResourceEvent::ready(resource, Some(T0))
}

fn hourly_waiting_for(templates: &[&str]) -> JobSpec {
    spec(
        serde_json::json!({
            "name": "load", "command": "true", "schedule": "R/2026-11-23T10:00:00Z/PT1H",
            "dependsOn": templates, "waitTimeout": "PT30M"
        }),
        JobKind::Scheduled,
    )
}

#[test]
fn an_instance_waits_for_its_resources_and_starts_when_the_last_lands() {
    let store = no_resources();
    let mut shard = shard_over(store.clone());
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
    let mut shard = shard_over(store);
    shard.put_job(
        hourly_waiting_for(&["hive:a/{HOUR}"]),
        T0,
        &mut Outbox::default(),
    );
    assert_eq!(tick(&mut shard, T0).launches.len(), 1);
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

#[test]
fn waiting_instances_are_rebuilt_from_storage() {
    let store = MemoryStore::default();
    let resources = no_resources();
    let (mut shard, _) = Shard::recover(
        0,
        ShardConfig::default(),
        shared(resources.clone()),
        ShardSnapshot::default(),
        T0,
    );
    let mut out = Outbox::default();
    shard.put_job(hourly_waiting_for(&["a/{HOUR}", "b/{HOUR}"]), T0, &mut out);
    shard.tick(T0, &mut out);
    drop(store.submit(out.ops));
    // One resource landed while the shard was down.
    satisfy(&resources, "a/2026-11-23T10");
    let (mut shard, _) = Shard::recover(
        0,
        ShardConfig::default(),
        shared(resources.clone()),
        store.load().unwrap(),
        T0 + 1000,
    );
    let view = shard.job_view("load").unwrap();
    assert_eq!(view.waiting_for[0].1, ["b/2026-11-23T10"]);
    let event = satisfy(&resources, "b/2026-11-23T10");
    let mut out = Outbox::default();
    shard.resource_ready(&event, T0 + 2000, &mut out);
    assert_eq!(out.launches.len(), 1);
    assert_eq!(shard.lineage("b/2026-11-23T10").consumers, ["load"]);
}

#[test]
fn a_failure_is_noticed_once_retries_are_exhausted_and_the_next_success_as_a_recovery() {
    let mut shard = empty_shard();
    let job = spec(
        serde_json::json!({"name": "f", "command": "false", "schedule": "R2/2026-11-23T10:00:00Z/PT1S",
            "retries": 1, "owner": "a@x.com, b@y.com", "notifyWebhooks": ["http://hook/"]}),
        JobKind::Scheduled,
    );
    shard.put_job(job, T0, &mut Outbox::default());
    let first = tick(&mut shard, T0).launches.remove(0).spec.task_id;
    let mut out = Outbox::default();
    shard.task_update(ended(&first, TaskEnd::Exited(3)), T0 + 10, &mut out);
    assert!(
        out.notices.is_empty(),
        "a retry remains: nothing to tell yet"
    );
    let retry = tick(&mut shard, T0 + 1010).launches.remove(0).spec.task_id;
    let mut out = Outbox::default();
    shard.task_update(ended(&retry, TaskEnd::Exited(3)), T0 + 1020, &mut out);
    let [notice] = out.notices.as_slice() else {
        panic!("one notice: {:?}", out.notices);
    };
    assert_eq!(notice.kind, NoticeKind::Failed);
    assert_eq!(notice.exit_code, Some(3));
    assert_eq!(notice.attempt, 1);
    assert_eq!(notice.task_id.as_deref(), Some(retry.as_str()));
    assert_eq!(notice.recipients(), ["a@x.com", "b@y.com"]);
    assert_eq!(notice.webhooks, ["http://hook/"]);
    assert!(
        out.ops
            .iter()
            .any(|op| matches!(op, StoreOp::PutNotice(n) if n == notice)),
        "written to the notice outbox in the same batch"
    );
    // The second target succeeds: a recovery.
    let next = out.launches.remove(0).spec.task_id;
    let mut out = Outbox::default();
    shard.task_update(ended(&next, TaskEnd::Exited(0)), T0 + 1100, &mut out);
    assert_eq!(out.notices.len(), 1);
    assert_eq!(out.notices[0].kind, NoticeKind::Recovered);
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

    let store = Arc::new(MemoryResourceStore::default());
    let mut shard = shard_over(store);
    let mut job = hourly_waiting_for(&["never/{TODAY}"]);
    job.wait_timeout_ms = Some(1000);
    shard.put_job(job, T0, &mut Outbox::default());
    tick(&mut shard, T0);
    let out = tick(&mut shard, T0 + 2000);
    assert_eq!(out.notices.len(), 1);
    assert_eq!(out.notices[0].kind, NoticeKind::Expired);
}

#[test]
fn notices_left_in_the_outbox_are_handed_over_again_after_a_restart() {
    let store = MemoryStore::default();
    let notice = Notice {
        job: "a".into(),
        kind: NoticeKind::Failed,
        target_ms: T0,
        at_ms: T0,
        owner: String::new(),
        webhooks: vec![],
        attempt: 0,
        task_id: None,
        exit_code: Some(1),
        message: String::new(),
        count: 1,
        stderr_tail: String::new(),
    };
    drop(store.submit(vec![StoreOp::PutNotice(notice.clone())]));
    let (_, out) = Shard::recover(
        0,
        ShardConfig::default(),
        shared(no_resources()),
        store.load().unwrap(),
        T0,
    );
    assert_eq!(out.notices, [notice]);
}

/// The runs an outbox appends to history.
fn history_runs(out: &Outbox) -> Vec<InstanceRecord> {
    out.ops
        .iter()
        .filter_map(|op| match op {
            StoreOp::AppendHistory(HistoryEntry::Run(run)) => Some(run.clone()),
            _ => None,
        })
        .collect()
}
