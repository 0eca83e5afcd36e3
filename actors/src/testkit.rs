//! A whole scheduler in memory, for actor tests under paused tokio time: the real router,
//! shard supervisor, coordinators and event bus over memory stores, and in place of the broker and its agents
//! one that "runs" every task for a fixed time and reports it succeeded. It keeps every
//! launch, so tests can tell what ran, and how often.

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dron_model::ids::{TaskRef, parse_task_id};
use dron_model::instance::{HistoryEntry, InstanceState};
use dron_model::job::{JobKind, JobRequest, JobSpec};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use crate::broker::BrokerMsg;
use crate::bus::{EventBus, EventBusArgs, ToShards};
use crate::client::SchedulerClient;
use crate::clock::{SharedClock, TokioClock};
use crate::coordinator::ShardConfig;
use crate::router::RouterMsg;
use crate::shards::{Shards, ShardsArgs, StoreFactory, SupervisorMsg};
use crate::store::{
    Durable, MemoryResourceStore, MemoryStore, ShardSnapshot, ShardStore, StoreError, StoreOp,
};
use dron_task::{TaskEnd, TaskEvent, TaskUpdate};

/// When the tests' clock starts: 2026-11-23T10:00:00Z.
pub const T0: i64 = 1_795_428_000_000;

/// How long a synced write takes (RocksDB's is about this); makes the actors interleave as
/// they do in production, where a coordinator answers only once its write is durable.
const WRITE_LATENCY: Duration = Duration::from_millis(1);
/// How long every task "runs".
pub const RUN_TIME: Duration = Duration::from_millis(300);

pub struct System {
    pub router: ActorRef<RouterMsg>,
    pub supervisor: ActorRef<SupervisorMsg>,
    /// The shard stores.
    pub factory: Arc<MemoryFactory>,
    /// The bus's link to the router, for a second bus (a restarted one).
    pub to_shards: ToShards,
    pub client: SchedulerClient,
    pub resources: Arc<MemoryResourceStore>,
    pub runs: Arc<Runs>,
    pub clock: SharedClock,
    /// Ends when the shards stop (the supervisor gave up, or the router stopped).
    pub shards_handle: JoinHandle<()>,
}

impl System {
    pub async fn start(shards: u32) -> System {
        System::start_over(shards, Arc::default()).await
    }

    /// Starts with the shard stores of `factory`.
    pub async fn start_over(shards: u32, factory: Arc<MemoryFactory>) -> System {
        System::build(shards, factory, None).await
    }

    /// Starts with the real offer broker and its local agent (run directories under
    /// `runs_root`), in place of the fake one: for jobs with `builtinSleepMs`, which run no
    /// process. Nothing is recorded in `runs`.
    pub async fn start_with_local_agent(shards: u32, runs_root: &std::path::Path) -> System {
        System::build(shards, Arc::default(), Some(runs_root.to_path_buf())).await
    }

    async fn build(
        shards: u32,
        factory: Arc<MemoryFactory>,
        local_agent: Option<std::path::PathBuf>,
    ) -> System {
        let clock: SharedClock = Arc::new(TokioClock::starting_at(ms_to_time(T0)));
        let resources = Arc::new(MemoryResourceStore::default());
        let runs = Arc::new(Runs::default());
        let router_cell: Arc<OnceLock<ActorRef<RouterMsg>>> = Arc::new(OnceLock::new());
        let broker = match local_agent {
            None => {
                let broker_args = (runs.clone(), router_cell.clone());
                Actor::spawn(None, FakeBroker, broker_args).await.unwrap().0
            }
            Some(runs_root) => {
                let router = router_cell.clone();
                let status: dron_task::StatusSink = Arc::new(move |update| {
                    let _ = router.wait().send_message(RouterMsg::TaskUpdate(update));
                });
                let local = crate::broker::LocalAgentConfig {
                    shim_program: "/nonexistent/dron-shim".into(),
                    runs_root,
                    resources: dron_model::demand::Resources {
                        cpus: 64.0,
                        mem: 65_536.0,
                        disk: 65_536.0,
                    },
                    containers: None,
                };
                let broker_args = crate::broker::OfferBrokerArgs {
                    local: Some(local),
                    epoch: 1,
                    heartbeat_ms: 1000,
                    agent_timeout_ms: 5000,
                    weights: HashMap::new(),
                    max_offer: dron_model::demand::Resources::new(1e6, 1e9, 1e9),
                    known_agents: crate::broker::KnownAgentsRecord::Memory,
                    status,
                    clock: clock.clone(),
                };
                let broker = crate::broker::OfferBroker;
                Actor::spawn(None, broker, broker_args).await.unwrap().0
            }
        };
        let (to_shards, from_bus) = tokio::sync::mpsc::unbounded_channel();
        let bus_args = EventBusArgs {
            store: resources.clone(),
            clock: clock.clone(),
            publishing: false,
            shards: to_shards.clone(),
        };
        let (bus, _) = Actor::spawn(None, EventBus, bus_args).await.unwrap();
        let (notifier, _) = Actor::spawn(None, Null(PhantomData), ()).await.unwrap();
        let shards_args = ShardsArgs {
            factory: factory.clone(),
            default_shard_count: shards,
            clock: clock.clone(),
            broker,
            bus: bus.clone(),
            notifier,
            resources: resources.clone(),
            config: ShardConfig::default(),
        };
        let (router, supervisor, started) = Shards::start(shards_args, from_bus).unwrap();
        router_cell.set(router.clone()).unwrap();
        let shards_handle = started.await.unwrap().unwrap();
        let client = SchedulerClient::new(router.clone(), bus.clone());
        System {
            router,
            supervisor,
            factory,
            to_shards,
            client,
            resources,
            runs,
            clock,
            shards_handle,
        }
    }

    /// Creates (or replaces) a job from its JSON, as the API would; answers the request's
    /// time.
    pub async fn put(&self, json: serde_json::Value) -> i64 {
        let kind = match json.get("schedule") {
            Some(_) => JobKind::Scheduled,
            None => JobKind::Dependent,
        };
        let now_ms = self.clock.now_ms();
        self.client
            .put_job(spec(json, kind, now_ms), now_ms)
            .await
            .unwrap();
        now_ms
    }

    /// The logical times of a job's runs that succeeded, oldest first.
    pub async fn succeeded(&self, job: &str) -> Vec<i64> {
        let history = self.client.history(job, usize::MAX).await.unwrap();
        let mut targets: Vec<i64> = history
            .iter()
            .filter_map(|entry| match entry {
                HistoryEntry::Run(run) if run.state == InstanceState::Succeeded => {
                    Some(run.target_ms)
                }
                _ => None,
            })
            .collect();
        targets.sort_unstable();
        targets
    }

    /// The coordinators, one per shard, as the router holds them now.
    pub async fn shards(&self) -> Vec<ActorRef<crate::coordinator::CoordinatorMsg>> {
        ractor::call!(self.router, |reply| RouterMsg::Shards { reply }).unwrap()
    }
}

pub fn spec(json: serde_json::Value, kind: JobKind, now_ms: i64) -> JobSpec {
    let request: JobRequest = serde_json::from_value(json).unwrap();
    request.validate(kind, ms_to_time(now_ms)).unwrap()
}

pub fn ms_to_time(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap()
}

/// A job that runs for each `products:*` event.
pub fn triggered(name: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "command": "true", "triggeredBy": "products:*"})
}

/// A job that runs every second from [`T0`].
pub fn every_second(name: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "command": "true", "schedule": "R/2026-11-23T10:00:00Z/PT1S"})
}

/// `prefix-0`, `prefix-1`, ...
pub fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// The first target of a job every second created at `created_ms`.
pub fn first_target(created_ms: i64) -> i64 {
    (created_ms + 999) / 1000 * 1000
}

/// Checks that `job` was launched once for each second from `from` to `until` (inclusive),
/// and never twice for any time.
pub fn ran_every_second(
    launches: &BTreeMap<(String, i64), usize>,
    job: &str,
    from: i64,
    until: i64,
) {
    let mine: BTreeMap<i64, usize> = launches
        .iter()
        .filter(|((name, _), _)| name == job)
        .map(|((_, at), count)| (*at, *count))
        .collect();
    assert!(mine.values().all(|&n| n == 1), "{job} ran twice: {mine:?}");
    let missed: Vec<i64> = (from..=until)
        .step_by(1000)
        .filter(|at| !mine.contains_key(at))
        .collect();
    assert!(missed.is_empty(), "{job} missed {missed:?}");
}

/// Waits, in tokio's (paused) time, until `done` holds; fails the test after `within`.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every launch the fake broker was asked for, in order, and every adoption.
#[derive(Default)]
pub struct Runs {
    launched: Mutex<Vec<TaskRef>>,
    adopted: Mutex<Vec<TaskRef>>,
}

impl Runs {
    pub fn adopted(&self) -> Vec<TaskRef> {
        self.adopted.lock().unwrap().clone()
    }

    pub fn launched(&self) -> Vec<TaskRef> {
        self.launched.lock().unwrap().clone()
    }

    /// How many times each (job, logical time) was launched (retries aside: attempt 0).
    pub fn launches_per_target(&self) -> BTreeMap<(String, i64), usize> {
        let mut counts = BTreeMap::new();
        for task in self.launched().into_iter().filter(|t| t.attempt == 0) {
            *counts.entry((task.job, task.target_ms)).or_default() += 1;
        }
        counts
    }
}

/// Runs every task it is asked to launch for [`RUN_TIME`], then reports it succeeded.
struct FakeBroker;

type FakeBrokerArgs = (Arc<Runs>, Arc<OnceLock<ActorRef<RouterMsg>>>);

impl Actor for FakeBroker {
    type Msg = BrokerMsg;
    type State = FakeBrokerArgs;
    type Arguments = FakeBrokerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<BrokerMsg>,
        args: FakeBrokerArgs,
    ) -> Result<FakeBrokerArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<BrokerMsg>,
        message: BrokerMsg,
        (runs, router): &mut FakeBrokerArgs,
    ) -> Result<(), ActorProcessingErr> {
        let router = router.get().expect("the router runs").clone();
        match message {
            BrokerMsg::Launch(request) => {
                let task_id = request.spec.task_id;
                let task = parse_task_id(&task_id).expect("a task id");
                runs.launched.lock().unwrap().push(task);
                tokio::spawn(async move {
                    tokio::time::sleep(RUN_TIME).await;
                    report(&router, task_id, succeeded());
                });
            }
            // After a coordinator's restart: a task launched before has ended (or will, and
            // then says so again); one never launched is launched now.
            BrokerMsg::Adopt { request, .. } => {
                let task_id = request.spec.task_id;
                let task = parse_task_id(&task_id).expect("a task id");
                runs.adopted.lock().unwrap().push(task.clone());
                let event = match runs.launched.lock().unwrap().contains(&task) {
                    true => succeeded(),
                    false => TaskEvent::NeverLaunched,
                };
                report(&router, task_id, event);
            }
            _ => {}
        }
        Ok(())
    }
}

fn succeeded() -> TaskEvent {
    TaskEvent::Ended {
        end: TaskEnd::Exited(0),
        at_ms: 0,
    }
}

fn report(router: &ActorRef<RouterMsg>, task_id: String, event: TaskEvent) {
    let _ = router.send_message(RouterMsg::TaskUpdate(TaskUpdate::new(task_id, event)));
}

/// Takes any message and does nothing (the notifier: these tests make no notices).
pub struct Null<M>(pub PhantomData<fn() -> M>);

impl<M: ractor::Message> Actor for Null<M> {
    type Msg = M;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<M>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// Shard stores in memory that survive their coordinators' restarts (by default each durable
/// [`WRITE_LATENCY`] after a write); tests with stores of their own name the type.
pub struct MemoryFactory<S = SlowStore> {
    stores: Mutex<HashMap<u32, Arc<S>>>,
    count: Mutex<Option<u32>>,
    /// While true, opening a shard that was never opened waits (as a slow disk would).
    opens_held: (Mutex<bool>, std::sync::Condvar),
}

impl<S> Default for MemoryFactory<S> {
    fn default() -> Self {
        MemoryFactory {
            stores: Mutex::default(),
            count: Mutex::default(),
            opens_held: Default::default(),
        }
    }
}

impl<S> MemoryFactory<S> {
    /// The store of shard `index` (it must have been opened).
    pub fn store(&self, index: u32) -> Arc<S> {
        self.stores.lock().unwrap()[&index].clone()
    }

    /// The shards whose storage exists, in order.
    pub fn existing_shards(&self) -> Vec<u32> {
        let mut shards: Vec<u32> = self.stores.lock().unwrap().keys().copied().collect();
        shards.sort_unstable();
        shards
    }

    /// The shard count saved last.
    pub fn saved_count(&self) -> Option<u32> {
        *self.count.lock().unwrap()
    }

    /// Until the answer is dropped, opening a new shard blocks its (blocking) thread. (A
    /// test that fails meanwhile drops it while unwinding: its runtime, which waits for its
    /// blocking threads when it shuts down, does not hang.)
    pub fn hold_opens(self: &Arc<Self>) -> OpensHeld<S> {
        *self.opens_held.0.lock().unwrap() = true;
        OpensHeld(self.clone())
    }
}

/// Opening new shards is held while this lives.
pub struct OpensHeld<S>(Arc<MemoryFactory<S>>);

impl<S> Drop for OpensHeld<S> {
    fn drop(&mut self) {
        *self.0.opens_held.0.lock().unwrap() = false;
        self.0.opens_held.1.notify_all();
    }
}

impl<S: ShardStore + Default> StoreFactory for MemoryFactory<S> {
    fn open(&self, index: u32) -> Result<Arc<dyn ShardStore>, StoreError> {
        if !self.stores.lock().unwrap().contains_key(&index) {
            let (held, released) = &self.opens_held;
            let _released = released.wait_while(held.lock().unwrap(), |held| *held);
        }
        let mut stores = self.stores.lock().unwrap();
        Ok(stores.entry(index).or_default().clone())
    }

    fn existing(&self) -> Result<Vec<u32>, StoreError> {
        Ok(self.stores.lock().unwrap().keys().copied().collect())
    }

    fn remove(&self, index: u32) -> Result<(), StoreError> {
        self.stores.lock().unwrap().remove(&index);
        Ok(())
    }

    fn load_shard_count(&self) -> Result<Option<u32>, StoreError> {
        Ok(*self.count.lock().unwrap())
    }

    fn save_shard_count(&self, count: u32) -> Result<(), StoreError> {
        *self.count.lock().unwrap() = Some(count);
        Ok(())
    }
}

/// A [`MemoryStore`] whose writes become durable [`WRITE_LATENCY`] later; or fail at once,
/// unapplied, as on a full disk, while [`SlowStore::fill`] holds.
#[derive(Default)]
pub struct SlowStore(MemoryStore, std::sync::atomic::AtomicBool);

impl SlowStore {
    /// A full disk (`true`) or space back (`false`).
    pub fn fill(&self, full: bool) {
        self.1.store(full, std::sync::atomic::Ordering::SeqCst);
    }

    fn full(&self) -> Result<(), StoreError> {
        match self.1.load(std::sync::atomic::Ordering::SeqCst) {
            true => Err(StoreError::backend("writing a batch")(
                std::io::Error::from(std::io::ErrorKind::StorageFull),
            )),
            false => Ok(()),
        }
    }
}

impl ShardStore for SlowStore {
    fn submit(&self, ops: Vec<StoreOp>) -> Durable {
        if let Err(full) = self.full() {
            let (done, durable) = tokio::sync::oneshot::channel();
            let _ = done.send(Err(full));
            return durable;
        }
        let written = self.0.submit(ops);
        let (done, durable) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::time::sleep(WRITE_LATENCY).await;
            let _ = done.send(written.await.unwrap_or(Ok(())));
        });
        durable
    }

    fn load(&self) -> Result<ShardSnapshot, StoreError> {
        self.0.load()
    }

    fn out_of_space(&self) -> bool {
        self.full().is_err()
    }

    fn probe_space(&self) -> Result<(), StoreError> {
        self.full()
    }

    fn history(
        &self,
        job: &str,
        limit: usize,
    ) -> Result<Vec<dron_model::instance::HistoryEntry>, StoreError> {
        self.0.history(job, limit)
    }
}
