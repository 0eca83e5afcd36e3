//! The coordinator actor under paused tokio time, with a store whose writes become durable
//! only when the test says so: a change's effects (the API's reply, launches, the
//! announcement of a success to other shards and to the bus) are released once its write is
//! durable, and in commit order, never before.

use std::sync::Mutex;
use std::time::Duration;

use chrono::DateTime;
use dron_model::job::{JobKind, JobRequest, JobSpec};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::oneshot;

use super::*;
use crate::clock::{Clock, SharedClock, SteppedClock, TokioClock};
use crate::error::CommandError;
use crate::store::{Durable, MemoryResourceStore, MemoryStore, ShardSnapshot, StoreError};
use dron_model::resource::ResourceEvent;
use dron_task::{TaskEnd, TaskEvent, TaskUpdate};

const T0: i64 = 1_795_428_000_000; // 2026-11-23T10:00:00Z

mod parents;

/// A shard store that applies writes to memory at once but holds each batch's durability
/// until [`GatedStore::make_durable`].
#[derive(Default)]
struct GatedStore {
    memory: MemoryStore,
    held: Mutex<Vec<oneshot::Sender<Result<(), StoreError>>>>,
    /// When set, the next history read blocks its thread until the test sends.
    history_gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl GatedStore {
    /// Batches submitted and not durable yet.
    fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// Makes every batch submitted so far durable.
    fn make_durable(&self) {
        for durable in self.held.lock().unwrap().drain(..) {
            let _ = durable.send(Ok(()));
        }
    }
}

impl ShardStore for GatedStore {
    fn submit(&self, ops: Vec<StoreOp>) -> Durable {
        drop(self.memory.submit(ops));
        let (done, durable) = oneshot::channel();
        self.held.lock().unwrap().push(done);
        durable
    }

    fn load(&self) -> Result<ShardSnapshot, StoreError> {
        self.memory.load()
    }

    fn history(
        &self,
        job: &str,
        limit: usize,
    ) -> Result<Vec<dron_model::instance::HistoryEntry>, StoreError> {
        let gate = self.history_gate.lock().unwrap().take();
        if let Some(gate) = gate {
            let _ = gate.recv();
        }
        self.memory.history(job, limit)
    }
}

/// Stands in for the broker, router, bus or notifier: notes what it is sent, as text, and
/// drops the rest (a dropped reply port answers the caller at once), or with `hold` keeps
/// it (its caller waits: a receiver that has fallen behind).
struct Recorder<M> {
    describe: fn(&M) -> Option<String>,
    hold: bool,
}

type Seen = Arc<Mutex<Vec<String>>>;

impl<M: ractor::Message> Actor for Recorder<M> {
    type Msg = M;
    type State = (Seen, Vec<M>);
    type Arguments = Seen;

    async fn pre_start(
        &self,
        _myself: ActorRef<M>,
        seen: Seen,
    ) -> Result<(Seen, Vec<M>), ActorProcessingErr> {
        Ok((seen, Vec::new()))
    }

    async fn handle(
        &self,
        _myself: ActorRef<M>,
        message: M,
        (seen, held): &mut (Seen, Vec<M>),
    ) -> Result<(), ActorProcessingErr> {
        seen.lock().unwrap().extend((self.describe)(&message));
        if self.hold {
            held.push(message);
        }
        Ok(())
    }
}

async fn recorder<M: ractor::Message>(describe: fn(&M) -> Option<String>) -> (ActorRef<M>, Seen) {
    spawn_recorder(describe, false).await
}

async fn spawn_recorder<M: ractor::Message>(
    describe: fn(&M) -> Option<String>,
    hold: bool,
) -> (ActorRef<M>, Seen) {
    let seen = Seen::default();
    let (actor, _) = Actor::spawn(None, Recorder { describe, hold }, seen.clone())
        .await
        .unwrap();
    (actor, seen)
}

/// A coordinator over a gated store, and what its neighbours were sent.
struct Harness {
    coordinator: ActorRef<CoordinatorMsg>,
    store: Arc<GatedStore>,
    /// Task ids the broker was asked to launch.
    launches: Seen,
    /// Resources announced to the bus.
    announced: Seen,
}

async fn start() -> Harness {
    start_over(Arc::new(MemoryResourceStore::default())).await
}

/// A harness whose coordinator looks resources up in `resources`.
async fn start_over(resources: Arc<MemoryResourceStore>) -> Harness {
    start_with(resources, ShardConfig::default()).await
}

async fn start_with(resources: Arc<MemoryResourceStore>, config: ShardConfig) -> Harness {
    start_full(resources, config, false).await
}

/// With `bus_behind`, the bus takes announcements and never answers.
async fn start_full(
    resources: Arc<MemoryResourceStore>,
    config: ShardConfig,
    bus_behind: bool,
) -> Harness {
    let wall = DateTime::from_timestamp_millis(T0).unwrap();
    let clock = Arc::new(TokioClock::starting_at(wall));
    start_on(resources, config, bus_behind, clock).await
}

async fn start_on(
    resources: Arc<MemoryResourceStore>,
    config: ShardConfig,
    bus_behind: bool,
    clock: SharedClock,
) -> Harness {
    let store = Arc::new(GatedStore::default());
    let (broker, launches) = recorder(|m: &BrokerMsg| match m {
        BrokerMsg::Launch(request) => Some(request.spec.task_id.clone()),
        _ => None,
    })
    .await;
    let (router, _) = recorder(|_: &RouterMsg| None).await;
    let describe_bus = |m: &BusMsg| match m {
        BusMsg::Announce { events, .. } => Some(events[0].resource.clone()),
        _ => None,
    };
    let (bus, announced) = spawn_recorder(describe_bus, bus_behind).await;
    let (notifier, _) = recorder(|_: &NotifierMsg| None).await;
    let args = CoordinatorArgs {
        index: 0,
        store: store.clone(),
        clock,
        broker,
        router,
        bus,
        notifier,
        resources,
        config,
    };
    let (coordinator, _) = Actor::spawn(None, Coordinator, args).await.unwrap();
    Harness {
        coordinator,
        store,
        launches,
        announced,
    }
}

/// Lets every task run until all wait (paused time moves on only when they do).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

fn seen(list: &Seen) -> Vec<String> {
    list.lock().unwrap().clone()
}

fn job(json: serde_json::Value) -> JobSpec {
    let request: JobRequest = serde_json::from_value(json).unwrap();
    let now = DateTime::from_timestamp_millis(T0).unwrap();
    request.validate(JobKind::Scheduled, now).unwrap()
}

/// Sends a request and hands back where its reply will land.
fn ask<T>(
    coordinator: &ActorRef<CoordinatorMsg>,
    message: impl FnOnce(RpcReplyPort<T>) -> CoordinatorMsg,
) -> oneshot::Receiver<T> {
    let (reply, answer) = oneshot::channel();
    coordinator.send_message(message(reply.into())).unwrap();
    answer
}

/// Puts a job, its write made durable.
async fn put_durable(harness: &Harness, spec: JobSpec) {
    let reply = ask(&harness.coordinator, |reply| CoordinatorMsg::PutJob {
        spec,
        received_ms: T0,
        reply,
    });
    settle().await;
    harness.store.make_durable();
    assert!(matches!(reply.await, Ok(Ok(PutOutcome::Created))));
}

/// Puts a job whose first target is at T0 + 1 s, its write made durable, and lets that
/// target fall due.
async fn put_then_fire(harness: &Harness, spec: JobSpec) {
    put_durable(harness, spec).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await; // the target falls due
    settle().await;
}

/// Runs `name` now (its start made durable) and reports the run's success: the end is
/// submitted, not yet durable.
async fn run_now_and_succeed(harness: &Harness, name: &str) {
    let started = ask(&harness.coordinator, |reply| CoordinatorMsg::RunNow {
        name: name.into(),
        reply,
    });
    settle().await;
    harness.store.make_durable();
    let Ok(Ok(task_id)) = started.await else {
        panic!("run now failed");
    };
    let end = TaskEvent::Ended {
        end: TaskEnd::Exited(0),
        at_ms: T0,
    };
    let update = TaskUpdate::new(task_id, end);
    let message = CoordinatorMsg::TaskUpdate {
        update,
        forwarded: false,
    };
    harness.coordinator.send_message(message).unwrap();
    settle().await;
}

/// Puts a job whose first target is far off, its write made durable.
async fn put_idle_job(harness: &Harness, name: &str) {
    let spec = job(serde_json::json!({
        "name": name, "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"
    }));
    put_durable(harness, spec).await;
}

#[tokio::test(start_paused = true)]
async fn a_reply_waits_until_its_write_is_durable() {
    let harness = start().await;
    let spec = job(serde_json::json!({
        "name": "a", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"
    }));
    let mut reply = ask(&harness.coordinator, |reply| CoordinatorMsg::PutJob {
        spec,
        received_ms: T0,
        reply,
    });
    settle().await;
    assert_eq!(harness.store.held(), 1, "the job was submitted");
    assert!(
        reply.try_recv().is_err(),
        "no answer before the write is durable"
    );
    harness.store.make_durable();
    settle().await;
    assert!(matches!(reply.try_recv(), Ok(Ok(PutOutcome::Created))));
}

#[tokio::test(start_paused = true)]
async fn a_run_is_launched_and_answered_only_once_durable() {
    let harness = start().await;
    put_idle_job(&harness, "a").await;
    let mut reply = ask(&harness.coordinator, |reply| CoordinatorMsg::RunNow {
        name: "a".into(),
        reply,
    });
    settle().await;
    assert_eq!(
        harness.store.held(),
        1,
        "the running instance was submitted"
    );
    assert!(
        seen(&harness.launches).is_empty(),
        "no launch before it is durable"
    );
    assert!(reply.try_recv().is_err());
    harness.store.make_durable();
    settle().await;
    let task_id = match reply.try_recv() {
        Ok(Ok(task_id)) => task_id,
        other => panic!("run now answered {other:?}"),
    };
    assert!(task_id.ends_with(":a:"), "{task_id}");
    assert_eq!(seen(&harness.launches), [task_id]);
}

#[tokio::test(start_paused = true)]
async fn a_fired_target_is_launched_only_once_durable() {
    let harness = start().await;
    let spec = job(serde_json::json!({
        "name": "a", "command": "true", "schedule": "R/2026-11-23T10:00:01Z/PT1H"
    }));
    put_then_fire(&harness, spec).await;
    assert_eq!(harness.store.held(), 1, "the fired target was submitted");
    assert!(
        seen(&harness.launches).is_empty(),
        "no launch before it is durable"
    );
    harness.store.make_durable();
    settle().await;
    assert_eq!(seen(&harness.launches), [format!("ct:{}:0:a:", T0 + 1000)]);
}

/// A harness whose wall clock the test steps.
async fn start_stepped() -> (Harness, Arc<SteppedClock>) {
    let clock = Arc::new(SteppedClock::starting_at(
        DateTime::from_timestamp_millis(T0).unwrap(),
    ));
    let resources = Arc::new(MemoryResourceStore::default());
    let harness = start_on(resources, ShardConfig::default(), false, clock.clone()).await;
    (harness, clock)
}

/// A stepped harness with job `a` due at 10:01:00 (epsilon 10 s), 5 s after its creation.
async fn stepped_with_a_target_at_10_01() -> (Harness, Arc<SteppedClock>) {
    let (harness, clock) = start_stepped().await;
    let spec = job(serde_json::json!({
        "name": "a", "command": "true", "schedule": "R/2026-11-23T10:01:00Z/PT1H",
        "epsilon": "PT10S"
    }));
    put_durable(&harness, spec).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    (harness, clock)
}

/// The launches so far, each made durable at once (as a store would).
async fn durable_launches(harness: &Harness) -> Vec<String> {
    settle().await;
    harness.store.make_durable();
    settle().await;
    seen(&harness.launches)
}

/// The nemesis's clock-step fault: the wall clock steps forward while the ticker sleeps
/// toward the next target. The target must fire when the wall clock reaches it (within the
/// ticker's recheck), not when the sleep armed before the step ends: then it would be late
/// by the step, past its epsilon, and skipped.
#[tokio::test(start_paused = true)]
async fn a_target_fires_on_time_after_the_wall_clock_steps_forward() {
    let (harness, clock) = stepped_with_a_target_at_10_01().await;
    clock.step(30_000); // the wall clock reads 10:00:35; the target is 25 s away
    tokio::time::sleep(Duration::from_secs(25) + ticker::RECHECK).await;
    assert_eq!(
        durable_launches(&harness).await,
        [format!("ct:{}:0:a:", T0 + 60_000)],
        "fired when the wall clock reached 10:01:00"
    );
}

/// The other way: after a step back, a sleep armed before it ends early. The ticker must sleep
/// again for the time still left by the wall clock, neither firing early nor twice.
#[tokio::test(start_paused = true)]
async fn a_target_fires_once_and_not_early_after_the_wall_clock_steps_back() {
    let (harness, clock) = stepped_with_a_target_at_10_01().await;
    clock.step(-30_000); // the wall clock reads 09:59:35; the target is 85 s away
    tokio::time::sleep(Duration::from_secs(84)).await;
    assert!(durable_launches(&harness).await.is_empty(), "not early");
    tokio::time::sleep(Duration::from_secs(1) + ticker::RECHECK).await;
    let once = [format!("ct:{}:0:a:", T0 + 60_000)];
    assert_eq!(durable_launches(&harness).await, once);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(durable_launches(&harness).await, once, "and only once");
}

/// Job `a` as the 30-minute nemesis run's `j025-s` (every 26 s from 10:01:00, epsilon 11 s):
/// its first run starts, the wall clock steps forward 30 s, and the run ends after
/// `ends_after` of real time. Answers the launches then.
async fn a_run_across_a_step_forward(ends_after: Duration) -> Vec<String> {
    let (harness, clock) = start_stepped().await;
    let spec = job(serde_json::json!({
        "name": "a", "command": "true", "schedule": "R/2026-11-23T10:01:00Z/PT26S",
        "epsilon": "PT11S"
    }));
    put_durable(&harness, spec).await;
    tokio::time::sleep(Duration::from_secs(60) + ticker::RECHECK).await;
    let first = format!("ct:{}:0:a:", T0 + 60_000);
    assert_eq!(
        durable_launches(&harness).await,
        std::slice::from_ref(&first)
    );
    clock.step(30_000); // 10:01:01 reads 10:01:31: the 10:01:26 target is due, its slot taken
    tokio::time::sleep(ends_after).await;
    let end = TaskEvent::Ended {
        end: TaskEnd::Exited(0),
        at_ms: clock.now_ms(),
    };
    let update = TaskUpdate::new(first, end);
    let forwarded = false;
    let message = CoordinatorMsg::TaskUpdate { update, forwarded };
    harness.coordinator.send_message(message).unwrap();
    durable_launches(&harness).await
}

/// Bug 9 of the nemesis run (docs/reliability.md): a step forward lengthens, in the server's
/// time, a run in flight across it by the step. The job runs one instance at a time, so a
/// next target whose window closes before that run ends is skipped, rightly (its window
/// passed, by the clock the server schedules by, while the slot was taken); one whose window
/// is still open when it ends starts at once.
#[tokio::test(start_paused = true)]
async fn after_a_step_forward_a_run_that_outlasts_the_next_window_skips_that_target() {
    let first = format!("ct:{}:0:a:", T0 + 60_000);
    let next = format!("ct:{}:0:a:", T0 + 86_000);
    // Ends at real 10:01:09, read 10:01:39: past 10:01:26 + 11 s.
    let late = a_run_across_a_step_forward(Duration::from_secs(8)).await;
    assert_eq!(late, std::slice::from_ref(&first), "10:01:26 skipped");
    // Ends at real 10:01:05, read 10:01:35: the window is open; it starts then.
    let in_time = a_run_across_a_step_forward(Duration::from_secs(4)).await;
    assert_eq!(in_time, [first, next]);
}

/// The shard reads nothing: an instance whose resource was recorded before it was created
/// waits until the coordinator's lookup (on a blocking thread) finds it, then runs.
#[tokio::test(start_paused = true)]
async fn an_instance_runs_once_the_lookup_finds_its_resource_recorded() {
    let resources = Arc::new(MemoryResourceStore::default());
    let record = dron_model::resource::ResourceRecord {
        resource: "data/2026-11-23T10".into(),
        at_ms: T0,
        recorded_ms: T0,
        meta_json: String::new(),
    };
    drop(resources.submit(vec![crate::store::ResourceOp::Satisfy(record)]));
    let harness = start_over(resources).await;
    let spec = job(serde_json::json!({
        "name": "a", "command": "true", "schedule": "R/2026-11-23T10:00:01Z/PT1H",
        "dependsOn": ["data/{HOUR}", "other/{HOUR}"], "waitTimeout": "PT1H"
    }));
    put_then_fire(&harness, spec).await;
    harness.store.make_durable();
    settle().await;
    assert!(
        seen(&harness.launches).is_empty(),
        "other/ is still missing"
    );
    let other = ResourceEvent::ready("other/2026-11-23T10", Some(T0));
    let applied = ask(&harness.coordinator, |reply| {
        CoordinatorMsg::ResourceReady {
            events: vec![other],
            reply,
        }
    });
    settle().await;
    harness.store.make_durable();
    assert!(matches!(applied.await, Ok(Ok(()))));
    settle().await;
    harness.store.make_durable();
    settle().await;
    assert_eq!(seen(&harness.launches), [format!("ct:{}:0:a:", T0 + 1000)]);
}

#[tokio::test(start_paused = true)]
async fn a_success_is_announced_only_once_its_end_is_durable() {
    let harness = start().await;
    put_idle_job(&harness, "a").await;
    run_now_and_succeed(&harness, "a").await;
    assert_eq!(harness.store.held(), 1, "the end was submitted");
    assert!(seen(&harness.announced).is_empty(), "the bus not told yet");
    harness.store.make_durable();
    settle().await;
    assert_eq!(seen(&harness.announced).len(), 1);
    assert!(seen(&harness.announced)[0].starts_with("job:a@"));
}

#[tokio::test(start_paused = true)]
async fn effects_with_nothing_to_write_wait_behind_an_earlier_write() {
    let harness = start().await;
    put_idle_job(&harness, "a").await;
    let mut first = ask(&harness.coordinator, |reply| CoordinatorMsg::RunNow {
        name: "a".into(),
        reply,
    });
    settle().await;
    // No write of its own, but it must not overtake the run now still being written.
    let mut second = ask(&harness.coordinator, |reply| {
        CoordinatorMsg::ResourceReady {
            events: Vec::new(),
            reply,
        }
    });
    settle().await;
    assert_eq!(harness.store.held(), 1, "the second change wrote nothing");
    assert!(first.try_recv().is_err());
    assert!(second.try_recv().is_err(), "released in commit order");
    harness.store.make_durable();
    settle().await;
    assert!(matches!(first.try_recv(), Ok(Ok(_))));
    assert!(matches!(second.try_recv(), Ok(Ok(()))));
}

#[tokio::test(start_paused = true)]
async fn an_unknown_job_is_answered_after_the_writes_before_it() {
    let harness = start().await;
    put_idle_job(&harness, "a").await;
    let mut first = ask(&harness.coordinator, |reply| CoordinatorMsg::RunNow {
        name: "a".into(),
        reply,
    });
    settle().await;
    let mut missing = ask(&harness.coordinator, |reply| CoordinatorMsg::RunNow {
        name: "nope".into(),
        reply,
    });
    settle().await;
    assert!(first.try_recv().is_err());
    assert!(missing.try_recv().is_err(), "even an error waits its turn");
    harness.store.make_durable();
    settle().await;
    assert!(matches!(first.try_recv(), Ok(Ok(_))));
    assert!(matches!(
        missing.try_recv(),
        Ok(Err(CommandError::JobNotFound(name))) if name == "nope"
    ));
}

#[tokio::test(start_paused = true)]
async fn a_slow_history_read_holds_up_no_other_message() {
    let harness = start().await;
    put_idle_job(&harness, "a").await;
    let (release, gate) = std::sync::mpsc::channel();
    *harness.store.history_gate.lock().unwrap() = Some(gate);
    let mut history = ask(&harness.coordinator, |reply| CoordinatorMsg::History {
        name: "a".into(),
        limit: 10,
        reply,
    });
    // Awaited, not slept on: paused time does not move while a blocking read runs.
    let stats = ask(&harness.coordinator, |reply| CoordinatorMsg::Stats {
        reply,
    });
    assert_eq!(stats.await.unwrap().jobs, 1, "answered during the read");
    assert!(history.try_recv().is_err(), "the read is still blocked");
    release.send(()).unwrap();
    assert!(matches!(history.await, Ok(Ok(_))));
}

/// While more batches than `max_writes_in_flight` wait to be durable, the shard pushes back:
/// a new run is refused at once (the API answers 503) and a tick waits; once the store
/// catches up, the deferred tick comes and new runs are taken again.
#[tokio::test(start_paused = true)]
async fn a_shard_behind_its_store_refuses_new_runs_and_defers_its_ticks() {
    let config = ShardConfig {
        max_writes_in_flight: 2,
        ..ShardConfig::default()
    };
    let harness = start_with(Arc::new(MemoryResourceStore::default()), config).await;
    put_idle_job(&harness, "idle").await;
    let spec = job(serde_json::json!({
        "name": "a", "command": "true", "schedule": "R/2026-11-23T10:00:01Z/PT1S",
        "concurrent": true
    }));
    put_then_fire(&harness, spec).await; // fired at T0 + 1 s: held, not durable
    let run_now = || {
        ask(&harness.coordinator, |reply| CoordinatorMsg::RunNow {
            name: "idle".into(),
            reply,
        })
    };
    let _first = run_now();
    settle().await;
    let _second = run_now();
    settle().await;
    assert_eq!(harness.store.held(), 3, "three batches wait for the disk");
    let mut refused = run_now();
    settle().await;
    assert!(
        matches!(refused.try_recv(), Ok(Err(CommandError::Unavailable(_)))),
        "a new run is pushed back at once"
    );
    tokio::time::sleep(Duration::from_millis(2_000)).await; // two targets fall due
    settle().await;
    assert_eq!(harness.store.held(), 3, "the tick waits");
    harness.store.make_durable();
    settle().await;
    assert_eq!(
        harness.store.held(),
        1,
        "the deferred tick fired the due targets"
    );
    let accepted = run_now();
    settle().await;
    harness.store.make_durable();
    assert!(matches!(accepted.await, Ok(Ok(_))));
}

/// What a shard behind its store still takes (a deletion here) is applied in memory and waits
/// there: no batch is added to the backlog until it drains, and then one deferred flush writes
/// it and answers. So the batches in flight stay bounded however many changes come.
#[tokio::test(start_paused = true)]
async fn a_shard_behind_its_store_holds_its_next_batch_until_the_backlog_drains() {
    let config = ShardConfig {
        max_writes_in_flight: 2,
        ..ShardConfig::default()
    };
    let harness = start_with(Arc::new(MemoryResourceStore::default()), config).await;
    put_idle_job(&harness, "a").await;
    put_idle_job(&harness, "b").await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(ask(&harness.coordinator, |reply| CoordinatorMsg::RunNow {
            name: "a".into(),
            reply,
        }));
        settle().await;
    }
    assert_eq!(harness.store.held(), 3, "three batches wait for the disk");
    let mut deleted = ask(&harness.coordinator, |reply| CoordinatorMsg::DeleteJob {
        name: "b".into(),
        reply,
    });
    settle().await;
    assert_eq!(harness.store.held(), 3, "the deletion waits in memory");
    assert!(
        deleted.try_recv().is_err(),
        "not acknowledged before durable"
    );
    harness.store.make_durable();
    settle().await;
    assert_eq!(harness.store.held(), 1, "the deferred flush wrote it");
    harness.store.make_durable();
    assert!(matches!(deleted.await, Ok(Ok(()))));
    for run in runs {
        assert!(matches!(run.await, Ok(Ok(_))));
    }
}

/// Announcements the bus has not applied count in the backlog: past the limit the ticks wait,
/// and past four times the limit new runs are refused too. But the shard still flushes: the
/// bus applies announcements by asking every shard (`ResourceReady`), and a shard holding its
/// flush until the bus caught up would never answer it (a deadlock the overload benchmark
/// found: every shard stopped, 64 batches waiting on each).
#[tokio::test(start_paused = true)]
async fn a_shard_waiting_for_the_bus_refuses_new_runs_but_still_answers_the_bus() {
    let config = ShardConfig {
        max_writes_in_flight: 2,
        ..ShardConfig::default()
    };
    let harness = start_full(Arc::new(MemoryResourceStore::default()), config, true).await;
    put_idle_job(&harness, "a").await;
    // Three batches behind (over the limit of 2): an API write still goes through, up to
    // nine (over four times the limit).
    for _ in 0..9 {
        run_now_and_succeed(&harness, "a").await;
        harness.store.make_durable();
        settle().await;
    }
    // One call at a time: the bus (which never answers here) has the first; the rest queue.
    assert_eq!(
        seen(&harness.announced).len(),
        1,
        "one call to the bus at a time"
    );
    let mut refused = ask(&harness.coordinator, |reply| CoordinatorMsg::RunNow {
        name: "a".into(),
        reply,
    });
    settle().await;
    assert!(
        matches!(refused.try_recv(), Ok(Err(CommandError::Unavailable(_)))),
        "new work waits for the bus"
    );
    let mut answered = ask(&harness.coordinator, |reply| {
        CoordinatorMsg::ResourceReady {
            events: Vec::new(),
            reply,
        }
    });
    settle().await;
    assert!(
        matches!(answered.try_recv(), Ok(Ok(()))),
        "the bus is answered"
    );
}
