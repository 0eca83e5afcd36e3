//! Task status: reports from agents, retries, kills and how runs end.

use super::*;

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
    assert_eq!(shard.stats(0).live_instances, 0);
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
fn a_retry_launches_afresh_and_records_its_own_agent() {
    let mut shard = empty_shard();
    let mut job = every_second("a");
    job.retries = 1;
    shard.put_job(job, T0, &mut Outbox::default());
    let first = tick(&mut shard, T0).launches.remove(0).spec.task_id;
    let started = |task: &str, agent: &str| {
        let agent = agent.to_string();
        TaskUpdate::new(task, TaskEvent::Started { at_ms: T0, agent })
    };
    shard.task_update(started(&first, "w1"), T0, &mut Outbox::default());
    assert_eq!(shard.stats(0).launching, 0, "w1 runs it");
    shard.task_update(
        ended(&first, TaskEnd::Exited(1)),
        T0 + 10,
        &mut Outbox::default(),
    );
    let mut out = tick(&mut shard, T0 + 1010);
    let retry = out.launches.remove(0).spec.task_id;
    assert_eq!(
        shard.stats(0).launching,
        1,
        "the retry is on its way: it counts against the launch cap"
    );
    let unplaced = out
        .ops
        .iter()
        .any(|op| matches!(op, StoreOp::PutInstance(i) if i.attempt == 1 && i.agent.is_none()));
    assert!(
        unplaced,
        "the retry is not recorded on the last attempt's agent"
    );
    // The same agent takes the retry: recorded again, for a restart to look for it there.
    let mut out = Outbox::default();
    shard.task_update(started(&retry, "w1"), T0 + 1020, &mut out);
    let written = out
        .ops
        .iter()
        .any(|op| matches!(op, StoreOp::PutInstance(i) if i.agent.as_deref() == Some("w1")));
    assert!(written);
    assert_eq!(shard.stats(0).launching, 0);
}

#[test]
fn kill_ends_queued_runs_and_signals_running_ones() {
    let mut shard = empty_shard();
    shard.put_job(every_second("a"), T0, &mut Outbox::default());
    let running = tick(&mut shard, T0).launches.remove(0).spec.task_id;
    tick(&mut shard, T0 + 1000); // waiting behind the running one
    let mut out = Outbox::default();
    assert_eq!(shard.kill_tasks("a", T0 + 1100, &mut out).unwrap(), 2);
    assert_eq!(out.kills, vec![running.clone()]);
    assert!(out.launches.is_empty(), "a killed queue does not start");
    let mut out = Outbox::default();
    shard.task_update(ended(&running, TaskEnd::Signaled(9)), T0 + 1200, &mut out);
    assert!(
        out.launches.is_empty(),
        "the dropped target does not start either"
    );
    assert_eq!(shard.stats(0).live_instances, 0);
    assert_eq!(shard.job_view("a").unwrap().record.state.error_count, 1);
    assert_eq!(
        shard.next_deadline(),
        Some(T0 + 2000),
        "the schedule goes on"
    );
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
        shard.stats(0).live_instances,
        1,
        "async: waiting for its report"
    );
    shard.kill_tasks("a", T0 + 20, &mut out).unwrap();
    assert_eq!(shard.stats(0).live_instances, 0);
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
        shard.stats(0).live_instances,
        1,
        "still running until its process ends"
    );
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
