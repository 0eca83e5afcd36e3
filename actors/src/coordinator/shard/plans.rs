//! `Plans`: the backfill plans of a shard's jobs, with where each of their targets stands.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use dron_model::backfill::{BackfillEntry, BackfillPlan, BackfillTarget, TargetState};

/// One job's part in one backfill.
#[derive(Debug, Clone)]
pub struct PlanEntry {
    pub plan: BackfillPlan,
    /// The times this job has reached in the backfill (the root's targets not started yet
    /// are implicit in its `next_ms`). Changed only through [`PlanEntry::set`], which keeps
    /// the two indexes below.
    targets: BTreeMap<i64, TargetState>,
    /// How many targets are `Running`.
    running: usize,
    /// The `Ready` targets.
    ready: BTreeSet<i64>,
}

impl PlanEntry {
    pub fn new(plan: BackfillPlan) -> Self {
        PlanEntry {
            plan,
            targets: BTreeMap::new(),
            running: 0,
            ready: BTreeSet::new(),
        }
    }

    pub fn targets(&self) -> &BTreeMap<i64, TargetState> {
        &self.targets
    }

    pub fn state(&self, target_ms: i64) -> Option<&TargetState> {
        self.targets.get(&target_ms)
    }

    /// Sets where `target_ms` stands; answers the target as stored.
    pub fn set(&mut self, target_ms: i64, state: TargetState) -> BackfillEntry {
        match self.targets.insert(target_ms, state.clone()) {
            Some(TargetState::Running) => self.running -= 1,
            Some(TargetState::Ready) => drop(self.ready.remove(&target_ms)),
            _ => {}
        }
        match state {
            TargetState::Running => self.running += 1,
            TargetState::Ready => drop(self.ready.insert(target_ms)),
            _ => {}
        }
        BackfillEntry::Target(BackfillTarget {
            id: self.plan.id.clone(),
            job: self.plan.job.clone(),
            target_ms,
            state,
        })
    }

    /// Its targets with a live instance.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Its targets whose upstream all succeeded and that have not started, oldest first.
    pub fn ready(&self) -> impl Iterator<Item = i64> + '_ {
        self.ready.iter().copied()
    }

    /// The plan and its targets as stored.
    pub fn entries(&self) -> impl Iterator<Item = BackfillEntry> + '_ {
        let plan = std::iter::once(BackfillEntry::Plan(self.plan.clone()));
        plan.chain(self.targets.iter().map(|(t, state)| {
            BackfillEntry::Target(BackfillTarget {
                id: self.plan.id.clone(),
                job: self.plan.job.clone(),
                target_ms: *t,
                state: state.clone(),
            })
        }))
    }
}

/// Plans by job, then by backfill id.
#[derive(Default)]
pub struct Plans {
    by_job: HashMap<String, BTreeMap<String, PlanEntry>>,
}

impl Plans {
    /// Rebuilds plans from stored entries (each plan before its targets; a target whose plan
    /// is missing is dropped).
    pub fn load(&mut self, entries: Vec<BackfillEntry>) {
        for entry in entries {
            match entry {
                BackfillEntry::Plan(plan) => self.insert(PlanEntry::new(plan)),
                BackfillEntry::Target(target) => {
                    if let Some(entry) = self.get_mut(&target.job, &target.id) {
                        entry.set(target.target_ms, target.state);
                    }
                }
            }
        }
    }

    pub fn insert(&mut self, entry: PlanEntry) {
        let plans = self.by_job.entry(entry.plan.job.clone()).or_default();
        plans.insert(entry.plan.id.clone(), entry);
    }

    pub fn get(&self, job: &str, id: &str) -> Option<&PlanEntry> {
        self.by_job.get(job)?.get(id)
    }

    pub fn get_mut(&mut self, job: &str, id: &str) -> Option<&mut PlanEntry> {
        self.by_job.get_mut(job)?.get_mut(id)
    }

    /// The ids of the backfills `job` has a plan in.
    pub fn ids_of(&self, job: &str) -> Vec<String> {
        let plans = self.by_job.get(job).into_iter().flat_map(|p| p.keys());
        plans.cloned().collect()
    }

    /// The backfill whose run of `job` for `target_ms` is live, if any (a job has one live
    /// instance per target, so at most one).
    pub fn running(&self, job: &str, target_ms: i64) -> Option<String> {
        let plans = self.by_job.get(job)?;
        let mut running = plans.iter();
        running
            .find(|(_, p)| p.state(target_ms) == Some(&TargetState::Running))
            .map(|(id, _)| id.clone())
    }

    /// The jobs of this shard with a plan in any backfill.
    pub fn jobs(&self) -> Vec<String> {
        self.by_job.keys().cloned().collect()
    }

    /// The jobs of this shard with a plan in backfill `id`.
    pub fn jobs_in(&self, id: &str) -> Vec<String> {
        let jobs = self.by_job.iter();
        let mut jobs: Vec<String> = jobs
            .filter(|(_, plans)| plans.contains_key(id))
            .map(|(job, _)| job.clone())
            .collect();
        jobs.sort();
        jobs
    }

    /// Every plan, or those of backfill `id`.
    pub fn all<'a>(&'a self, id: Option<&'a str>) -> impl Iterator<Item = &'a PlanEntry> + 'a {
        let plans = self.by_job.values().flat_map(|plans| plans.values());
        plans.filter(move |p| id.is_none_or(|id| p.plan.id == id))
    }

    /// Takes a job's plans out (its deletion, or its move to another shard).
    pub fn remove_job(&mut self, job: &str) -> Vec<PlanEntry> {
        let plans = self.by_job.remove(job).unwrap_or_default();
        plans.into_values().collect()
    }
}
