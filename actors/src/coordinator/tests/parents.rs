//! Parents across shards through the real router and event bus: a parent's success reaches
//! its children on other shards from the parent shard's outbox, through the bus, once each,
//! even when a child's shard fails before it has recorded the success.

use dron_model::ids::parse_task_id;
use dron_model::ring::Ring;

use super::*;
use crate::bus::{EventBus, EventBusArgs};
use crate::shards::ShardsArgs;
use crate::store::Durable;
use crate::testkit::MemoryFactory;

const SHARDS: u32 = 3;

/// A shard store that fails, once, the first batch creating an instance of job `fail_run_of`,
/// without applying it (the shard fails before it has recorded what that batch held); and
/// that holds its batches' durability while told to (a slow disk).
#[derive(Default)]
struct FaultyStore {
    memory: MemoryStore,
    fail_run_of: Mutex<Option<String>>,
    /// Some while batches are held: their durability, to send.
    held: Mutex<Option<Vec<Done>>>,
}

/// Makes one batch durable (or failed).
type Done = oneshot::Sender<Result<(), StoreError>>;

fn injected_disk_error() -> StoreError {
    StoreError::backend("writing a batch")(std::io::Error::other("disk error (injected)"))
}

impl FaultyStore {
    fn fails(&self, ops: &[StoreOp]) -> bool {
        let mut fail = self.fail_run_of.lock().unwrap();
        let creates_run = |job: &str| {
            ops.iter()
                .any(|op| matches!(op, StoreOp::PutInstance(i) if i.job == job))
        };
        let hit = fail.as_deref().is_some_and(creates_run);
        if hit {
            *fail = None;
        }
        hit
    }

    /// Holds the durability of the batches from now on.
    fn hold(&self) {
        *self.held.lock().unwrap() = Some(Vec::new());
    }

    /// Makes the held batches durable, and holds no more.
    fn release(&self) {
        for durable in self.held.lock().unwrap().take().into_iter().flatten() {
            let _ = durable.send(Ok(()));
        }
    }
}

impl ShardStore for FaultyStore {
    fn submit(&self, ops: Vec<StoreOp>) -> Durable {
        if self.fails(&ops) {
            let (done, durable) = oneshot::channel();
            let _ = done.send(Err(injected_disk_error()));
            return durable;
        }
        let durable = self.memory.submit(ops);
        match self.held.lock().unwrap().as_mut() {
            Some(held) => {
                let (done, durable) = oneshot::channel();
                held.push(done);
                durable
            }
            None => durable,
        }
    }

    fn load(&self) -> Result<ShardSnapshot, StoreError> {
        self.memory.load()
    }

    fn history(
        &self,
        job: &str,
        limit: usize,
    ) -> Result<Vec<dron_model::instance::HistoryEntry>, StoreError> {
        self.memory.history(job, limit)
    }
}

/// Shards in memory that survive their coordinators' restarts.
type Shards = MemoryFactory<FaultyStore>;

/// A server's actors over memory, with a stand-in broker.
struct Server {
    router: ActorRef<RouterMsg>,
    shards: Arc<Shards>,
    /// Task ids the broker was asked to launch.
    launches: Seen,
}

async fn serve() -> Server {
    serve_shards(SHARDS).await
}

async fn serve_shards(count: u32) -> Server {
    let shards = Arc::new(Shards::default());
    let (broker, launches) = recorder(|m: &BrokerMsg| match m {
        BrokerMsg::Launch(request) => Some(request.spec.task_id.clone()),
        _ => None,
    })
    .await;
    let (notifier, _) = recorder(|_: &NotifierMsg| None).await;
    let wall = DateTime::from_timestamp_millis(T0).unwrap();
    let clock: crate::clock::SharedClock = Arc::new(TokioClock::starting_at(wall));
    let resources = Arc::new(MemoryResourceStore::default());
    let (to_shards, from_bus) = tokio::sync::mpsc::unbounded_channel();
    let bus_args = EventBusArgs {
        store: resources.clone(),
        clock: clock.clone(),
        publishing: false,
        shards: to_shards,
    };
    let (bus, _) = Actor::spawn(None, EventBus, bus_args).await.unwrap();
    let shards_args = ShardsArgs {
        factory: shards.clone(),
        default_shard_count: count,
        clock,
        broker,
        bus: bus.clone(),
        notifier,
        resources,
        config: ShardConfig::default(),
    };
    let (router, _, started) = crate::shards::Shards::start(shards_args, from_bus).unwrap();
    started.await.unwrap().unwrap();
    Server {
        router,
        shards,
        launches,
    }
}

impl Server {
    async fn ask<T: Send + 'static>(
        &self,
        job: &str,
        message: impl FnOnce(Reply<T>) -> CoordinatorMsg,
    ) -> T {
        let job = job.to_string();
        let asked = self.router.call(
            |reply| RouterMsg::Route {
                job: job.clone(),
                message: message(reply),
            },
            None,
        );
        match asked.await {
            Ok(ractor::rpc::CallResult::Success(Ok(answer))) => answer,
            _ => panic!("{job}: no answer"),
        }
    }

    async fn put(&self, json: serde_json::Value, kind: JobKind) {
        let request: JobRequest = serde_json::from_value(json).unwrap();
        let spec = request
            .validate(kind, DateTime::from_timestamp_millis(T0).unwrap())
            .unwrap();
        let name = spec.name.clone();
        self.ask(&name, |reply| CoordinatorMsg::PutJob {
            spec,
            received_ms: T0,
            reply,
        })
        .await;
    }

    /// Runs `job` now and reports its task's success, as its agent would.
    async fn run_to_success(&self, job: &str) {
        let task_id = self.run_now(job).await;
        self.succeed(task_id);
    }

    /// Runs `job` now; answers its task id.
    async fn run_now(&self, job: &str) -> String {
        self.ask(job, |reply| CoordinatorMsg::RunNow {
            name: job.to_string(),
            reply,
        })
        .await
    }

    /// Reports the success of a task, as its agent would.
    fn succeed(&self, task_id: String) {
        let end = TaskEvent::Ended {
            end: TaskEnd::Exited(0),
            at_ms: T0,
        };
        let update = TaskUpdate::new(task_id, end);
        self.router
            .send_message(RouterMsg::TaskUpdate(update))
            .unwrap();
    }

    fn store(&self, shard: u32) -> Arc<FaultyStore> {
        self.shards.store(shard)
    }

    /// How many instances `job` has (its runs here never end).
    async fn instances(&self, job: &str) -> usize {
        let view = self
            .ask(job, |reply| CoordinatorMsg::GetJob {
                name: job.to_string(),
                reply,
            })
            .await;
        view.live.len()
    }

    /// How many runs of `job` the broker was asked to launch.
    fn launched(&self, job: &str) -> usize {
        let launches = seen(&self.launches);
        let jobs = launches.iter().filter_map(|id| parse_task_id(id));
        jobs.filter(|task| task.job == job).count()
    }
}

/// A job name the ring places on `shard`.
fn name_on(shard: u32, prefix: &str) -> String {
    let ring = Ring::new(SHARDS);
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|name| ring.owner(name) == shard)
        .unwrap()
}

/// A parent on shard 0 with a child on each of shards 1 and 2.
async fn family(server: &Server) -> (String, String, String) {
    let (parent, near, far) = (name_on(0, "p"), name_on(1, "c"), name_on(2, "c"));
    let idle = serde_json::json!({
        "name": parent, "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"
    });
    server.put(idle, JobKind::Scheduled).await;
    for child in [&near, &far] {
        let json = serde_json::json!({"name": child, "command": "true", "parents": [parent]});
        server.put(json, JobKind::Dependent).await;
    }
    (parent, near, far)
}

/// Lets the bus's retries (100 ms, doubling) and the shards' restarts play out.
async fn settle_long() {
    tokio::time::sleep(Duration::from_secs(10)).await;
}

#[tokio::test(start_paused = true)]
async fn a_parents_success_runs_its_children_on_other_shards_once_each() {
    let server = serve().await;
    let (parent, near, far) = family(&server).await;
    server.run_to_success(&parent).await;
    settle_long().await;
    assert_eq!(server.launched(&parent), 1);
    assert_eq!((server.launched(&near), server.launched(&far)), (1, 1));
    assert_eq!(server.instances(&near).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_child_shard_failing_before_it_recorded_the_success_still_runs_the_child_once() {
    let server = serve().await;
    let (parent, near, far) = family(&server).await;
    // Shard 2 fails writing its child's run: it is rebuilt from storage, where the parent's
    // success is not recorded. The bus applies the announcement again, to every shard.
    let store = server.store(2);
    *store.fail_run_of.lock().unwrap() = Some(far.clone());
    server.run_to_success(&parent).await;
    settle_long().await;
    assert!(
        store.fail_run_of.lock().unwrap().is_none(),
        "the failure happened"
    );
    assert_eq!(server.launched(&far), 1, "learnt again after the failure");
    assert_eq!(server.instances(&far).await, 1);
    assert_eq!(
        server.instances(&near).await,
        1,
        "the repeat counted no second time"
    );
}

#[tokio::test(start_paused = true)]
async fn a_success_marked_by_hand_runs_children_on_other_shards() {
    let server = serve().await;
    let (parent, near, far) = family(&server).await;
    server
        .ask(&parent, |reply| CoordinatorMsg::MarkSuccess {
            name: parent.clone(),
            reply,
        })
        .await;
    settle_long().await;
    assert_eq!(server.launched(&parent), 0, "marking runs nothing itself");
    assert_eq!((server.launched(&near), server.launched(&far)), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn two_successes_announced_as_the_same_resource_count_twice() {
    let server = serve().await;
    let (parent, near) = (name_on(0, "p"), name_on(1, "c"));
    // A daily job's runs by hand today all announce `job:NAME@<today>`.
    let daily = serde_json::json!({
        "name": parent, "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D",
        "concurrent": true
    });
    server.put(daily, JobKind::Scheduled).await;
    let child = serde_json::json!({"name": near, "command": "true", "parents": [parent]});
    server.put(child, JobKind::Dependent).await;
    let first = server.run_now(&parent).await;
    let second = server.run_now(&parent).await;
    // Ended together: one commit, one announcement of both to the bus.
    server.succeed(first);
    server.succeed(second);
    settle_long().await;
    assert_eq!(server.instances(&near).await, 2, "one run per success");
}

#[tokio::test(start_paused = true)]
async fn a_success_announced_while_another_of_the_same_resource_is_applied_counts_too() {
    let server = serve().await;
    let (parent, near, far) = family(&server).await;
    let first = server.run_now(&parent).await;
    let second = server.run_now(&parent).await;
    // Shard 2 is slow: the first success is still being applied when the second comes.
    let slow = server.store(2);
    slow.hold();
    server.succeed(first);
    settle().await;
    assert_eq!(server.instances(&near).await, 1);
    server.succeed(second);
    tokio::time::sleep(Duration::from_secs(1)).await;
    slow.release();
    settle_long().await;
    assert_eq!(server.instances(&near).await, 2, "one run per success");
    assert_eq!(server.instances(&far).await, 2);
}

/// A job name the ring of `before` shards places on `from`, and the ring of `after` on `to`.
fn name_moving(prefix: &str, before: (u32, u32), after: (u32, u32)) -> String {
    let (old, new) = (Ring::new(before.0), Ring::new(after.0));
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|name| old.owner(name) == before.1 && new.owner(name) == after.1)
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_child_moving_shard_while_its_parents_success_is_applied_still_learns_of_it() {
    let server = serve_shards(2).await;
    let parent = name_moving("p", (2, 1), (3, 1));
    let stays = name_moving("c", (2, 0), (3, 0));
    let moves = name_moving("c", (2, 1), (3, 2));
    let idle = serde_json::json!({
        "name": parent, "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"
    });
    server.put(idle, JobKind::Scheduled).await;
    for child in [&stays, &moves] {
        let json = serde_json::json!({"name": child, "command": "true", "parents": [parent]});
        server.put(json, JobKind::Dependent).await;
    }
    // Shard 0 is slow: the success is applied there first, and the round waits for it...
    let slow = server.store(0);
    slow.hold();
    server.run_to_success(&parent).await;
    settle().await;
    assert_eq!(server.instances(&stays).await, 1);
    // ... while a third shard is added and the child moves from shard 1 to it: the round
    // reaches shard 1 after the child left, and never the new shard.
    let resharded = server
        .router
        .call(|reply| RouterMsg::Reshard { count: 3, reply }, None)
        .await;
    assert!(matches!(
        resharded,
        Ok(ractor::rpc::CallResult::Success(Ok(3)))
    ));
    slow.release();
    settle_long().await;
    assert_eq!(
        server.instances(&moves).await,
        1,
        "applied again after the move"
    );
    assert_eq!(server.instances(&stays).await, 1, "and counted once");
}
