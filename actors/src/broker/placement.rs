//! Where tasks go: agents' offers, the tasks waiting for one, and Dominant Resource Fairness
//! between owners. Plain data and logic, no actor: the broker calls it and acts on the answer.
//!
//! An agent offers everything it has; what its placed tasks use is subtracted, and the rest
//! is its standing offer. A task goes to an active agent whose attributes satisfy its
//! constraints and whose free resources cover it, choosing the agent it loads least (to spread
//! work). When tasks of several owners wait, the owner with the smallest weighted dominant
//! share (its largest fraction of any one resource of the cluster) goes first (Ghodsi et al.,
//! "Dominant Resource Fairness", NSDI 2011, as Mesos's allocator does).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use std::sync::Arc;

use dron_model::demand::{Resources, TaskDemand};

use super::messages::LaunchRequest;

/// How many of an owner's oldest waiting tasks are tried when the oldest does not fit, so one
/// large task does not hold back small ones behind it.
const LOOKAHEAD: usize = 32;

#[derive(Debug, Clone)]
pub struct AgentSlot {
    pub name: String,
    pub attributes: BTreeMap<String, String>,
    pub offered: Resources,
    pub used: Resources,
    /// Connected and heartbeating; only active agents get new tasks.
    pub active: bool,
    pub tasks: HashSet<String>,
}

impl AgentSlot {
    pub fn free(&self) -> Resources {
        self.offered.minus(&self.used)
    }
}

/// A task placed on an agent, and what it counts against.
#[derive(Debug, Clone)]
pub struct Placed {
    pub agent: String,
    pub owner: String,
    pub resources: Resources,
}

#[derive(Default)]
pub struct Placement {
    agents: BTreeMap<String, AgentSlot>,
    /// Tasks waiting for an offer that fits, per owner, oldest first.
    queues: BTreeMap<String, VecDeque<LaunchRequest>>,
    /// The ids of the waiting tasks: a launch's duplicate check stays O(1) however many wait.
    waiting: HashSet<String>,
    /// Tasks queued since the coordinators were last told why tasks wait.
    unreported: Vec<(String, Arc<TaskDemand>)>,
    allocated: HashMap<String, Resources>,
    weights: HashMap<String, f64>,
    placed: HashMap<String, Placed>,
}

impl Placement {
    /// `weights`: an owner's share counts as its dominant share divided by its weight
    /// (default 1), so an owner of weight 2 gets twice the dominant share of one of weight 1.
    pub fn new(weights: HashMap<String, f64>) -> Self {
        Placement {
            weights,
            ..Default::default()
        }
    }

    // ----- agents -----------------------------------------------------------------------

    /// Adds an agent, or updates a returning one's offer and attributes (keeping its tasks).
    pub fn upsert_agent(
        &mut self,
        name: &str,
        attributes: BTreeMap<String, String>,
        offered: Resources,
    ) {
        let slot = self
            .agents
            .entry(name.to_string())
            .or_insert_with(|| AgentSlot {
                name: name.to_string(),
                attributes: BTreeMap::new(),
                offered,
                used: Resources::default(),
                active: true,
                tasks: HashSet::new(),
            });
        slot.attributes = attributes;
        slot.offered = offered;
        slot.active = true;
    }

    pub fn set_active(&mut self, name: &str, active: bool) {
        if let Some(slot) = self.agents.get_mut(name) {
            slot.active = active;
        }
    }

    pub fn agent(&self, name: &str) -> Option<&AgentSlot> {
        self.agents.get(name)
    }

    pub fn agents(&self) -> impl Iterator<Item = &AgentSlot> {
        self.agents.values()
    }

    /// Takes every task off a lost agent, releasing what they used; answers their ids.
    pub fn lose_agent(&mut self, name: &str) -> Vec<String> {
        let Some(slot) = self.agents.get_mut(name) else {
            return Vec::new();
        };
        slot.active = false;
        let tasks: Vec<String> = slot.tasks.drain().collect();
        for task_id in &tasks {
            self.release(task_id);
        }
        tasks
    }

    /// The cluster: what active agents offer in all.
    pub fn total(&self) -> Resources {
        let mut total = Resources::default();
        for slot in self.agents.values().filter(|s| s.active) {
            total.add(&slot.offered);
        }
        total
    }

    // ----- tasks ------------------------------------------------------------------------

    pub fn enqueue(&mut self, request: LaunchRequest) {
        self.waiting.insert(request.spec.task_id.clone());
        let demand = request.demand.clone();
        self.unreported.push((request.spec.task_id.clone(), demand));
        let queue = self.queues.entry(request.owner.clone()).or_default();
        // Ahead of the owner's backfill runs (found from the back: usually none, or a
        // backfill's `parallel` few), behind its other tasks.
        let behind = match request.backfill {
            true => queue.len(),
            false => queue
                .iter()
                .rposition(|r| !r.backfill)
                .map_or(0, |at| at + 1),
        };
        queue.insert(behind, request);
    }

    /// Records a task as running on `agent` (a placement, or a task adopted after a restart).
    pub fn assign(&mut self, task_id: &str, agent: &str, owner: &str, resources: Resources) {
        if self.placed.contains_key(task_id) {
            return;
        }
        if let Some(slot) = self.agents.get_mut(agent) {
            slot.used.add(&resources);
            slot.tasks.insert(task_id.to_string());
        }
        self.allocated
            .entry(owner.to_string())
            .or_default()
            .add(&resources);
        let placed = Placed {
            agent: agent.to_string(),
            owner: owner.to_string(),
            resources,
        };
        self.placed.insert(task_id.to_string(), placed);
    }

    /// A task ended (or was lost): what it used is free again.
    pub fn release(&mut self, task_id: &str) -> Option<Placed> {
        let placed = self.placed.remove(task_id)?;
        if let Some(slot) = self.agents.get_mut(&placed.agent) {
            slot.used.sub(&placed.resources);
            slot.tasks.remove(task_id);
        }
        if let Some(owner) = self.allocated.get_mut(&placed.owner) {
            owner.sub(&placed.resources);
        }
        Some(placed)
    }

    pub fn placed(&self, task_id: &str) -> Option<&Placed> {
        self.placed.get(task_id)
    }

    pub fn is_pending(&self, task_id: &str) -> bool {
        self.waiting.contains(task_id)
    }

    /// Takes a waiting task out of its queue (it was killed).
    pub fn withdraw(&mut self, task_id: &str) -> Option<LaunchRequest> {
        if !self.waiting.remove(task_id) {
            return None;
        }
        for queue in self.queues.values_mut() {
            if let Some(at) = queue.iter().position(|r| r.spec.task_id == task_id) {
                return queue.remove(at);
            }
        }
        None
    }

    /// Takes out the waiting tasks whose start deadline has passed.
    pub fn expire(&mut self, now_ms: i64) -> Vec<LaunchRequest> {
        let mut expired = Vec::new();
        for queue in self.queues.values_mut() {
            queue.retain(|request| {
                let late = request.start_deadline_ms.is_some_and(|d| d < now_ms);
                if late {
                    expired.push(request.clone());
                }
                !late
            });
        }
        for request in &expired {
            self.waiting.remove(&request.spec.task_id);
        }
        expired
    }

    pub fn waiting_count(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }

    /// Tasks queued since the last call that still wait, with the reason each waits (each is
    /// told once; those placed at once are not told at all).
    pub fn unreported_waits(&mut self) -> Vec<(String, String)> {
        let unreported = std::mem::take(&mut self.unreported);
        unreported
            .into_iter()
            .filter(|(task_id, _)| self.waiting.contains(task_id))
            .map(|(task_id, demand)| {
                let reason = why_waiting(&self.agents, &demand);
                (task_id, reason)
            })
            .collect()
    }

    /// Places what can be placed, fairest owner first; answers (task, agent) for each.
    pub fn place(&mut self) -> Vec<(LaunchRequest, String)> {
        let mut launched = Vec::new();
        let mut blocked: HashSet<String> = HashSet::new();
        while let Some(owner) = self.neediest_owner(&blocked) {
            match self.take_fitting(&owner) {
                Some((request, agent)) => {
                    let resources = request.demand.resources;
                    self.assign(&request.spec.task_id, &agent, &owner, resources);
                    launched.push((request, agent));
                }
                None => {
                    blocked.insert(owner);
                }
            }
        }
        self.queues.retain(|_, queue| !queue.is_empty());
        launched
    }

    /// The owner with waiting tasks and the smallest weighted dominant share.
    fn neediest_owner(&self, blocked: &HashSet<String>) -> Option<String> {
        let total = self.total();
        let share = |owner: &str| {
            let used = self.allocated.get(owner).copied().unwrap_or_default();
            used.dominant_share(&total) / self.weights.get(owner).copied().unwrap_or(1.0)
        };
        self.queues
            .iter()
            .filter(|(owner, queue)| !queue.is_empty() && !blocked.contains(*owner))
            .map(|(owner, _)| (share(owner), owner))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, owner)| owner.clone())
    }

    /// Takes the owner's oldest waiting task that fits an agent, and that agent.
    fn take_fitting(&mut self, owner: &str) -> Option<(LaunchRequest, String)> {
        let queue = self.queues.get(owner)?;
        let (at, agent) = queue
            .iter()
            .take(LOOKAHEAD)
            .enumerate()
            .find_map(|(at, request)| self.best_agent(request).map(|agent| (at, agent)))?;
        let request = self.queues.get_mut(owner)?.remove(at)?;
        self.waiting.remove(&request.spec.task_id);
        Some((request, agent))
    }

    /// The active agent that admits the task and that it would load least.
    fn best_agent(&self, request: &LaunchRequest) -> Option<String> {
        let need = request.demand.resources;
        self.agents
            .values()
            .filter(|slot| slot.active && need.fits_in(&slot.free()))
            .filter(|slot| request.demand.admits(&slot.name, &slot.attributes))
            .map(|slot| {
                let mut after = slot.used;
                after.add(&need);
                (after.dominant_share(&slot.offered), &slot.name)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, name)| name.clone())
    }
}

/// Why no agent takes a task now, in words for the operator.
fn why_waiting(agents: &BTreeMap<String, AgentSlot>, demand: &TaskDemand) -> String {
    let need = demand.resources;
    let active: Vec<&AgentSlot> = agents.values().filter(|s| s.active).collect();
    if active.is_empty() {
        return "waiting for resources: no agent is connected".into();
    }
    if !active.iter().any(|s| demand.runs_on(&s.attributes)) {
        return "waiting for resources: no connected agent can run containers \
                (an agent needs podman or docker and [containers] in its configuration)"
            .into();
    }
    let admitted: Vec<&&AgentSlot> = active
        .iter()
        .filter(|s| demand.admits(&s.name, &s.attributes))
        .collect();
    if admitted.is_empty() {
        return "waiting for resources: no connected agent satisfies the job's constraints".into();
    }
    if !admitted.iter().any(|s| need.fits_in(&s.offered)) {
        return format!("waiting for resources: no connected agent offers {need} in all");
    }
    format!("waiting for resources: {need} is not free on any agent yet")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::process::{TaskCommand, TaskSpec};
    use dron_model::demand::TaskDemand;
    use serde_json::json;
    use std::sync::Arc;

    fn request(id: &str, owner: &str, fields: serde_json::Value) -> LaunchRequest {
        LaunchRequest {
            spec: TaskSpec {
                task_id: id.into(),
                command: TaskCommand::Shell("true".into()),
                env: vec![],
                secret_env: Default::default(),
                work_dir: None,
                timeout_ms: None,
                output_cap_bytes: 1,
                container: None,
            },
            demand: Arc::new(TaskDemand::from_fields(fields.as_object().unwrap()).unwrap()),
            owner: owner.into(),
            start_deadline_ms: None,
            backfill: false,
        }
    }

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The paper's example: 9 cpus and 18 GB; A's tasks need <1 cpu, 4 GB>, B's <3 cpus, 1 GB>.
    /// DRF gives A three tasks and B two, equalising their dominant shares at 2/3.
    #[test]
    fn drf_equalises_dominant_shares() {
        let mut placement = Placement::new(HashMap::new());
        placement.upsert_agent("a1", attrs(&[]), Resources::new(9.0, 18_432.0, 1e6));
        for i in 0..10 {
            let a = json!({"cpus": 1, "mem": 4096, "disk": 0});
            let b = json!({"cpus": 3, "mem": 1024, "disk": 0});
            placement.enqueue(request(&format!("a{i}"), "alice", a));
            placement.enqueue(request(&format!("b{i}"), "bob", b));
        }
        let placed = placement.place();
        let count = |owner: &str| placed.iter().filter(|(r, _)| r.owner == owner).count();
        assert_eq!((count("alice"), count("bob")), (3, 2));
        assert_eq!(placement.waiting_count(), 15);
    }

    #[test]
    fn weights_scale_shares() {
        let weights = HashMap::from([("alice".to_string(), 3.0)]);
        let mut placement = Placement::new(weights);
        placement.upsert_agent("a1", attrs(&[]), Resources::new(8.0, 1e6, 1e6));
        for i in 0..8 {
            let one_cpu = json!({"cpus": 1, "mem": 0, "disk": 0});
            placement.enqueue(request(&format!("a{i}"), "alice", one_cpu.clone()));
            placement.enqueue(request(&format!("b{i}"), "bob", one_cpu));
        }
        let placed = placement.place();
        let alice = placed.iter().filter(|(r, _)| r.owner == "alice").count();
        assert_eq!(alice, 6, "weight 3 against 1 shares 8 cpus 6:2");
    }

    #[test]
    fn never_places_more_than_offered_and_frees_on_release() {
        let mut placement = Placement::new(HashMap::new());
        placement.upsert_agent("a1", attrs(&[]), Resources::new(1.0, 1e6, 1e6));
        for i in 0..3 {
            placement.enqueue(request(&format!("t{i}"), "o", json!({"cpus": 0.5})));
        }
        assert_eq!(placement.place().len(), 2);
        assert!(placement.place().is_empty());
        placement.release("t0");
        let next = placement.place();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].0.spec.task_id, "t2");
    }

    #[test]
    fn an_owners_scheduled_tasks_go_ahead_of_its_backfill_runs() {
        let mut placement = Placement::new(HashMap::new());
        placement.upsert_agent("a1", attrs(&[]), Resources::new(1.0, 1e6, 1e6));
        placement.enqueue(request("first", "o", json!({"cpus": 1})));
        for i in 0..3 {
            let mut backfill = request(&format!("backfill{i}"), "o", json!({"cpus": 1}));
            backfill.backfill = true;
            placement.enqueue(backfill);
        }
        placement.enqueue(request("scheduled", "o", json!({"cpus": 1})));
        let mut order = Vec::new();
        for task in ["first", "scheduled", "backfill0", "backfill1"] {
            let placed = placement.place();
            assert_eq!(placed.len(), 1, "one at a time: the agent has one cpu");
            order.push(placed[0].0.spec.task_id.clone());
            placement.release(task);
        }
        assert_eq!(order, ["first", "scheduled", "backfill0", "backfill1"]);
    }

    #[test]
    fn constraints_choose_the_agent_and_spread_the_rest() {
        let mut placement = Placement::new(HashMap::new());
        placement.upsert_agent(
            "a1",
            attrs(&[("rack", "r1")]),
            Resources::new(4.0, 1e6, 1e6),
        );
        placement.upsert_agent(
            "a2",
            attrs(&[("rack", "r2")]),
            Resources::new(4.0, 1e6, 1e6),
        );
        let on_r2 = json!({"cpus": 1, "constraints": [["rack", "EQUALS", "r2"]]});
        placement.enqueue(request("pinned", "o", on_r2));
        for i in 0..4 {
            placement.enqueue(request(&format!("t{i}"), "o", json!({"cpus": 1})));
        }
        let placed = placement.place();
        let on = |agent: &str| placed.iter().filter(|(_, a)| a == agent).count();
        assert_eq!(
            (placed[0].0.spec.task_id.as_str(), placed[0].1.as_str()),
            ("pinned", "a2")
        );
        assert_eq!((on("a1"), on("a2")), (3, 2), "spread by load");
    }

    #[test]
    fn container_jobs_go_only_to_agents_that_run_containers() {
        let mut placement = Placement::new(HashMap::new());
        placement.upsert_agent("plain", attrs(&[]), Resources::new(8.0, 1e6, 1e6));
        let boxed = json!({"cpus": 1, "container": {"type": "DOCKER", "image": "busybox"}});
        placement.enqueue(request("boxed", "o", boxed.clone()));
        placement.enqueue(request("plain-job", "o", json!({"cpus": 1})));
        let placed = placement.place();
        assert_eq!(placed.len(), 1);
        assert_eq!(placed[0].0.spec.task_id, "plain-job");
        let reason = why_waiting(&placement.agents, &request("b", "o", boxed).demand);
        assert!(
            reason.contains("no connected agent can run containers"),
            "{reason}"
        );
        let engine = attrs(&[(dron_model::demand::CONTAINERS_ATTRIBUTE, "podman")]);
        placement.upsert_agent("boxes", engine, Resources::new(1.0, 1e6, 1e6));
        let placed = placement.place();
        assert_eq!(
            (placed[0].0.spec.task_id.as_str(), placed[0].1.as_str()),
            ("boxed", "boxes")
        );
    }

    #[test]
    fn says_why_a_task_waits() {
        let mut placement = Placement::new(HashMap::new());
        placement.enqueue(request("t", "o", json!({"cpus": 16})));
        assert!(placement.place().is_empty());
        let waits = placement.unreported_waits();
        assert!(waits[0].1.contains("no agent is connected"), "{waits:?}");
        assert!(placement.unreported_waits().is_empty(), "told once");
        placement.upsert_agent("a1", attrs(&[]), Resources::new(4.0, 1e6, 1e6));
        assert!(placement.place().is_empty());
        let reason = why_waiting(
            &placement.agents,
            &request("t", "o", json!({"cpus": 16})).demand,
        );
        assert!(
            reason.contains("no connected agent offers 16 cpus"),
            "{reason}"
        );
    }

    #[test]
    fn lost_agents_give_back_their_tasks() {
        let mut placement = Placement::new(HashMap::new());
        placement.upsert_agent("a1", attrs(&[]), Resources::new(1.0, 1e6, 1e6));
        placement.enqueue(request("t", "o", json!({"cpus": 1})));
        assert_eq!(placement.place().len(), 1);
        assert_eq!(placement.lose_agent("a1"), vec!["t".to_string()]);
        assert!(placement.placed("t").is_none());
        assert_eq!(placement.total(), Resources::default());
    }

    #[test]
    fn expires_waiting_tasks_past_their_deadline() {
        let mut placement = Placement::new(HashMap::new());
        let mut late = request("late", "o", json!({}));
        late.start_deadline_ms = Some(100);
        placement.enqueue(late);
        placement.enqueue(request("patient", "o", json!({})));
        let expired = placement.expire(101);
        assert_eq!(expired.len(), 1);
        assert_eq!(placement.waiting_count(), 1);
    }
}
