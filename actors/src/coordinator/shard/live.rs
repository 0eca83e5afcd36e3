//! The live set: a shard's instances that have not ended, with the indexes kept over them.
//!
//! Invariants, kept by every method here (the fields are private to this file):
//! - `by_job[job]` holds `target` exactly when `instances` holds `instance_id(job, target)`,
//!   and holds no empty set;
//! - every id in `kill_requested` is live;
//! - `retries` holds `(at, id)` only for a live instance waiting to retry whose record says
//!   `retry_at_ms == Some(at)`, so removing an instance finds its retry by its record.
//!
//! A record's `job`, `target_ms` and `retry_at_ms` key these indexes: [`LiveSet::update`]
//! lets callers change anything else, and checks (in debug builds) that those stay put.

use std::collections::{BTreeSet, HashMap, HashSet};

use dron_model::ids::instance_id;
use dron_model::instance::{InstanceRecord, InstanceState};

use crate::views::RunState;

#[derive(Default)]
pub(super) struct LiveSet {
    /// Live instances by id.
    instances: HashMap<String, InstanceRecord>,
    /// Targets of each job's live instances, oldest first.
    by_job: HashMap<String, BTreeSet<i64>>,
    /// Instances an operator asked to kill: however their process ends, they end killed.
    kill_requested: HashSet<String>,
    /// (retry time, instance id) of instances waiting to retry.
    retries: BTreeSet<(i64, String)>,
    /// Running instances whose current attempt the broker said waits for an offer (no agent
    /// fits yet): not launching, as they sit in no queue on the way. Kept apart from the
    /// instance's `message`, which also says why an attempt was retried or relaunched.
    awaiting_offer: HashSet<String>,
    /// How many are [`launching`]: kept by every change made here.
    launching: usize,
}

/// Whether an instance is launching: its current attempt started here, and no agent has said
/// it runs yet (nor the broker that it waits for an offer). Its launch sits in a queue on the
/// way (the committer, the broker, an agent's launcher) or its report on the way back.
fn launching(awaiting_offer: &HashSet<String>, id: &str, instance: &InstanceRecord) -> bool {
    instance.state == InstanceState::Running
        && instance.agent.is_none()
        && !awaiting_offer.contains(id)
}

/// Keeps `count` of launching instances across one instance's change from `was` to `is`.
fn recount(count: &mut usize, was: bool, is: bool) {
    match (was, is) {
        (false, true) => *count += 1,
        (true, false) => *count -= 1,
        _ => {}
    }
}

impl LiveSet {
    /// Indexes an instance. One recorded as waiting to retry but with no retry time (written
    /// by an older version, say) retries at `now_ms`.
    pub(super) fn insert(&mut self, mut instance: InstanceRecord, now_ms: i64) {
        let id = instance.id();
        if instance.state == InstanceState::RetryWait {
            let at = *instance.retry_at_ms.get_or_insert(now_ms);
            self.retries.insert((at, id.clone()));
        }
        self.by_job
            .entry(instance.job.clone())
            .or_default()
            .insert(instance.target_ms);
        let is = launching(&self.awaiting_offer, &id, &instance);
        let was = self
            .instances
            .insert(id.clone(), instance)
            .is_some_and(|before| launching(&self.awaiting_offer, &id, &before));
        recount(&mut self.launching, was, is);
    }

    /// Takes an instance out of every index.
    pub(super) fn remove(&mut self, id: &str) -> Option<InstanceRecord> {
        let instance = self.instances.remove(id)?;
        recount(
            &mut self.launching,
            launching(&self.awaiting_offer, id, &instance),
            false,
        );
        self.awaiting_offer.remove(id);
        self.kill_requested.remove(id);
        if let Some(targets) = self.by_job.get_mut(&instance.job) {
            targets.remove(&instance.target_ms);
            if targets.is_empty() {
                self.by_job.remove(&instance.job);
            }
        }
        if let Some(at) = instance.retry_at_ms {
            self.retries.remove(&(at, id.to_string()));
        }
        Some(instance)
    }

    pub(super) fn get(&self, id: &str) -> Option<&InstanceRecord> {
        self.instances.get(id)
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.instances.contains_key(id)
    }

    /// Changes a live instance's record; answers what `change` answers (None: not live).
    /// `change` must leave `job`, `target_ms` and `retry_at_ms` as they were (see
    /// [`LiveSet::retry_at`] and [`LiveSet::start`] for the last).
    pub(super) fn update<R>(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut InstanceRecord) -> R,
    ) -> Option<R> {
        let instance = self.instances.get_mut(id)?;
        let was_launching = launching(&self.awaiting_offer, id, instance);
        #[cfg(debug_assertions)]
        let keys = (
            instance.job.clone(),
            instance.target_ms,
            instance.retry_at_ms,
        );
        let answer = change(instance);
        #[cfg(debug_assertions)]
        debug_assert_eq!(
            keys,
            (
                instance.job.clone(),
                instance.target_ms,
                instance.retry_at_ms
            ),
            "an update changed the keys of live instance {id}"
        );
        let is_launching = launching(&self.awaiting_offer, id, instance);
        recount(&mut self.launching, was_launching, is_launching);
        Some(answer)
    }

    /// Marks an instance's current attempt running from `now_ms`: its retry, if any, is
    /// spent, and it has no agent until one reports it (a retry's or a relaunch's agent may
    /// differ from the last attempt's, and a restart then looks for it everywhere); answers it.
    pub(super) fn start(&mut self, id: &str, now_ms: i64) -> Option<&InstanceRecord> {
        let instance = self.instances.get_mut(id)?;
        if let Some(at) = instance.retry_at_ms.take() {
            self.retries.remove(&(at, id.to_string()));
        }
        let was_launching = launching(&self.awaiting_offer, id, instance);
        self.awaiting_offer.remove(id);
        instance.state = InstanceState::Running;
        instance.started_ms = Some(now_ms);
        instance.agent = None;
        recount(&mut self.launching, was_launching, true);
        Some(instance)
    }

    /// Records that a running instance's attempt waits for an offer (`reason` is shown in
    /// views): it no longer counts as launching.
    pub(super) fn await_offer(&mut self, id: &str, reason: String) {
        let Some(instance) = self.instances.get_mut(id) else {
            return;
        };
        let was_launching = launching(&self.awaiting_offer, id, instance);
        instance.message = Some(reason);
        if instance.state == InstanceState::Running && instance.agent.is_none() {
            self.awaiting_offer.insert(id.to_string());
        }
        recount(&mut self.launching, was_launching, false);
    }

    /// Makes an instance wait to retry at `at_ms`; answers it.
    pub(super) fn retry_at(&mut self, id: &str, at_ms: i64) -> Option<&InstanceRecord> {
        let instance = self.instances.get_mut(id)?;
        if let Some(before) = instance.retry_at_ms.replace(at_ms) {
            self.retries.remove(&(before, id.to_string()));
        }
        recount(
            &mut self.launching,
            launching(&self.awaiting_offer, id, instance),
            false,
        );
        self.awaiting_offer.remove(id);
        instance.state = InstanceState::RetryWait;
        self.retries.insert((at_ms, id.to_string()));
        Some(instance)
    }

    /// The id of an instance whose retry is due by `now_ms`, taken off the retry index.
    pub(super) fn pop_due_retry(&mut self, now_ms: i64) -> Option<String> {
        if self.retries.first()?.0 > now_ms {
            return None;
        }
        self.retries.pop_first().map(|(_, id)| id)
    }

    pub(super) fn next_retry_ms(&self) -> Option<i64> {
        self.retries.first().map(|(at, _)| *at)
    }

    /// Remembers that an operator asked to kill a live instance.
    pub(super) fn request_kill(&mut self, id: &str) {
        if self.instances.contains_key(id) {
            self.kill_requested.insert(id.to_string());
        }
    }

    pub(super) fn kill_requested(&self, id: &str) -> bool {
        self.kill_requested.contains(id)
    }

    /// A job's live instance ids, oldest target first.
    pub(super) fn ids_of(&self, job: &str) -> Vec<String> {
        let targets = self.by_job.get(job).into_iter().flatten();
        targets.map(|target| instance_id(job, *target)).collect()
    }

    /// A job's live instances, oldest target first.
    pub(super) fn instances_of<'a>(
        &'a self,
        job: &'a str,
    ) -> impl Iterator<Item = &'a InstanceRecord> + 'a {
        let targets = self.by_job.get(job).into_iter().flatten();
        targets.filter_map(move |target| self.instances.get(&instance_id(job, *target)))
    }

    /// Jobs with at least one live instance.
    pub(super) fn jobs(&self) -> impl Iterator<Item = &String> {
        self.by_job.keys()
    }

    /// Running if an instance runs, queued if some wait (for their turn, a retry or their
    /// resources), idle otherwise.
    pub(super) fn run_state(&self, job: &str) -> RunState {
        if !self.by_job.contains_key(job) {
            return RunState::Idle;
        }
        let instances = self.instances_of(job);
        instances.fold(RunState::Idle, |so_far, instance| {
            match (so_far, instance.state) {
                (RunState::Running, _) | (_, InstanceState::Running) => RunState::Running,
                _ => RunState::Queued,
            }
        })
    }

    pub(super) fn len(&self) -> usize {
        self.instances.len()
    }

    /// How many instances are launching: started, and not reported running (or waiting for
    /// an offer) by any agent yet.
    pub(super) fn launching(&self) -> usize {
        self.launching
    }
}

#[cfg(test)]
mod tests {
    use dron_model::instance::RunCause;

    use super::*;

    fn instance(job: &str, target_ms: i64) -> InstanceRecord {
        InstanceRecord::new(job, target_ms, RunCause::Schedule, 0)
    }

    #[test]
    fn removing_an_instance_clears_every_index() {
        let mut live = LiveSet::default();
        live.insert(instance("a", 1), 0);
        live.insert(instance("a", 2), 0);
        let id = instance_id("a", 1);
        live.retry_at(&id, 50);
        live.request_kill(&id);
        assert_eq!(live.next_retry_ms(), Some(50));
        assert_eq!(live.ids_of("a"), [id.clone(), instance_id("a", 2)]);
        assert_eq!(live.remove(&id).unwrap().retry_at_ms, Some(50));
        assert_eq!(live.next_retry_ms(), None, "its retry went with it");
        assert!(!live.kill_requested(&id));
        assert_eq!(live.ids_of("a"), [instance_id("a", 2)]);
        live.remove(&instance_id("a", 2));
        assert_eq!(live.jobs().count(), 0, "no empty target set is kept");
    }

    #[test]
    fn a_retry_without_a_time_is_due_at_once_and_removable() {
        let mut live = LiveSet::default();
        let mut waiting = instance("a", 1);
        waiting.state = InstanceState::RetryWait;
        live.insert(waiting, 7);
        assert_eq!(live.next_retry_ms(), Some(7));
        live.remove(&instance_id("a", 1));
        assert_eq!(live.next_retry_ms(), None);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "changed the keys")]
    fn an_update_may_not_move_an_instance_out_from_under_its_indexes() {
        let mut live = LiveSet::default();
        live.insert(instance("a", 1), 0);
        live.update(&instance_id("a", 1), |instance| instance.target_ms = 2);
    }

    #[test]
    fn starting_spends_the_retry_and_only_due_retries_pop() {
        let mut live = LiveSet::default();
        live.insert(instance("a", 1), 0);
        let id = instance_id("a", 1);
        live.retry_at(&id, 100);
        live.retry_at(&id, 200);
        assert_eq!(
            live.pop_due_retry(150),
            None,
            "rescheduled: the first time is gone"
        );
        live.start(&id, 160);
        assert_eq!(live.next_retry_ms(), None);
        assert_eq!(live.get(&id).unwrap().state, InstanceState::Running);
        live.request_kill("not live");
        assert!(!live.kill_requested("not live"));
    }

    #[test]
    fn launching_counts_runs_started_until_an_agent_reports_them() {
        let mut live = LiveSet::default();
        for target in [1, 2, 3] {
            live.insert(instance("a", target), 0);
            live.start(&instance_id("a", target), 10);
        }
        live.insert(instance("b", 1), 0); // queued: not launching
        assert_eq!(live.launching(), 3);
        live.update(&instance_id("a", 1), |i| i.agent = Some("local".into()));
        live.await_offer(&instance_id("a", 2), "no offer fits".into());
        assert_eq!(live.launching(), 1, "one runs, one waits for an offer");
        live.retry_at(&instance_id("a", 3), 100);
        assert_eq!(live.launching(), 0, "waiting to retry");
        live.start(&instance_id("a", 3), 100);
        assert_eq!(live.launching(), 1, "the retry launches");
        live.remove(&instance_id("a", 3));
        // A retry of a run an agent reported, explained in its message: launching again,
        // with no agent until one reports the new attempt.
        live.update(&instance_id("a", 1), |i| {
            i.message = Some("attempt 0 exited with 1; retrying".into())
        });
        live.retry_at(&instance_id("a", 1), 200);
        let retry = live.start(&instance_id("a", 1), 200).unwrap();
        assert_eq!(
            retry.agent, None,
            "the new attempt's agent is not known yet"
        );
        assert!(retry.message.is_some(), "why it retries is still shown");
        assert_eq!(live.launching(), 1, "a retry counts against the launch cap");
        // The one waiting for an offer is relaunched (its agent lost, say): launching again.
        live.start(&instance_id("a", 2), 300);
        assert_eq!(live.launching(), 2);
        live.await_offer(&instance_id("a", 2), "no offer fits".into());
        live.remove(&instance_id("a", 2));
        live.remove(&instance_id("a", 1));
        assert_eq!(live.launching(), 0);
        // Inserted running (recovered or moved in, no agent recorded yet): counted.
        let mut running = instance("c", 1);
        running.state = InstanceState::Running;
        live.insert(running.clone(), 0);
        live.insert(running, 0);
        assert_eq!(live.launching(), 1, "inserted twice, counted once");
    }
}
