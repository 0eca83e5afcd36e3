//! Job definitions and what the API reads of them.

use dron_model::instance::InstanceState;
use dron_model::job::{JobRecord, JobSpec, JobState, Trigger};

use super::super::messages::{JobView, PutOutcome, ShardStats};
use super::{Outbox, Shard, ms_to_time};
use crate::error::CommandError;
use crate::store::StoreOp;
use crate::views::{JobSummary, RunState};

impl Shard {
    pub fn put_job(&mut self, spec: JobSpec, received_ms: i64, out: &mut Outbox) -> PutOutcome {
        let name = spec.name.clone();
        let (outcome, state, reschedule) = match self.remove_job(&name) {
            Some(old) => {
                let enabled_again = old.spec.disabled && !spec.disabled;
                let reschedule = old.spec.trigger != spec.trigger || enabled_again;
                (PutOutcome::Replaced, old.state, reschedule)
            }
            None => (PutOutcome::Created, JobState::default(), true),
        };
        let mut record = JobRecord { spec, state };
        // Parsed once, for the next target and the shard's entry.
        let schedule = record.spec.schedule();
        if reschedule {
            record.state.next_target_ms = schedule
                .as_ref()
                .and_then(|s| s.first_at_or_after(ms_to_time(received_ms)))
                .map(|t| t.timestamp_millis());
        }
        if !matches!(record.spec.trigger, Trigger::Parents(_)) {
            record.state.parents_succeeded.clear();
        }
        // A parent taken out and named again later starts afresh (it may be a new job).
        let parents = record.spec.parents();
        let times = &mut record.state.parent_success_times;
        times.retain(|parent, _| parents.contains(parent));
        out.ops.push(StoreOp::PutJob(record.clone()));
        self.insert_parsed_job(record, schedule);
        outcome
    }

    pub fn delete_job(&mut self, name: &str, out: &mut Outbox) -> Result<(), CommandError> {
        self.ensure_job(name)?;
        for id in self.live.ids_of(name) {
            if let Some(instance) = self.remove_live(&id) {
                if instance.state == InstanceState::Running {
                    out.kills.push(instance.task_id());
                }
                out.ops.push(StoreOp::DeleteInstance(id));
            }
        }
        self.remove_job(name);
        // Its part in backfills goes with it (the others' go on without it).
        self.plans.remove_job(name);
        out.ops.push(StoreOp::DeleteBackfills {
            job: name.to_string(),
            id: None,
        });
        out.ops.push(StoreOp::DeleteJob(name.to_string()));
        out.ops.push(StoreOp::DeleteHistory {
            job: name.to_string(),
        });
        Ok(())
    }

    pub fn job_view(&self, name: &str) -> Result<JobView, CommandError> {
        let entry = self
            .jobs
            .get(name)
            .ok_or_else(|| CommandError::JobNotFound(name.to_string()))?;
        let live = self.live.instances_of(name).cloned().collect();
        let waiting_for = self
            .live
            .ids_of(name)
            .into_iter()
            .filter_map(|id| {
                let missing = self.waits.missing(&id)?;
                Some((id, missing.iter().cloned().collect()))
            })
            .collect();
        Ok(JobView {
            record: entry.record.clone(),
            live,
            waiting_for,
        })
    }

    pub fn job_records(&self) -> Vec<JobRecord> {
        self.jobs
            .values()
            .map(|entry| entry.record.clone())
            .collect()
    }

    /// The records of those of `names` this shard holds, in the order given.
    pub fn jobs_named(&self, names: &[String]) -> Vec<JobRecord> {
        names
            .iter()
            .filter_map(|name| Some(self.jobs.get(name.as_str())?.record.clone()))
            .collect()
    }

    pub fn job_names(&self) -> Vec<String> {
        self.jobs.keys().map(|name| name.to_string()).collect()
    }

    /// Every job with what its live instances are doing.
    pub fn summaries(&self) -> Vec<JobSummary> {
        let summary = |(record, run_state): (&JobRecord, RunState)| JobSummary {
            record: record.clone(),
            run_state,
        };
        self.jobs_with_run_state().map(summary).collect()
    }

    /// Every job, by reference, with what its live instances are doing (the jobs table and
    /// the graph read these without copying a shard's jobs).
    pub fn jobs_with_run_state(&self) -> impl Iterator<Item = (&JobRecord, RunState)> {
        let entries = self.jobs.values();
        entries.map(|entry| (&entry.record, self.live.run_state(&entry.record.spec.name)))
    }

    pub(super) fn ensure_job(&self, name: &str) -> Result<(), CommandError> {
        match self.jobs.contains_key(name) {
            true => Ok(()),
            false => Err(CommandError::JobNotFound(name.to_string())),
        }
    }

    pub fn has_job(&self, name: &str) -> bool {
        self.jobs.contains_key(name)
    }

    pub fn children_of(&self, name: &str) -> Vec<String> {
        let children = self.children.get(name).into_iter().flatten();
        children
            .filter(|child| self.jobs.contains_key(child.as_str()))
            .cloned()
            .collect()
    }

    pub fn parents_of(&self, names: &[String]) -> Vec<(String, Vec<String>)> {
        let owned = names.iter().filter_map(|name| self.jobs.get(name.as_str()));
        owned
            .map(|entry| {
                (
                    entry.record.spec.name.clone(),
                    entry.record.spec.upstream_jobs(),
                )
            })
            .collect()
    }

    pub fn stats(&self, now_ms: i64) -> ShardStats {
        ShardStats {
            shard: self.index,
            jobs: self.jobs.len(),
            live_instances: self.live.len(),
            launching: self.live.launching(),
            timers: self.timers.len(),
            behind_ms: self.timers.next_ms().map_or(0, |due| (now_ms - due).max(0)),
        }
    }
}
