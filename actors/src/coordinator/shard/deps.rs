//! Dependencies: parents' successes, resources becoming ready, `triggeredBy` events, and
//! waits that run out.

use std::collections::BTreeSet;

use dron_model::instance::{InstanceRecord, InstanceState, RunCause};
use dron_model::resource::{EventStatus, ResourceEvent, pattern_matches};

use super::super::messages::ShardLineage;
use super::status::Ending;
use super::{Outbox, Shard};
use crate::error::CommandError;
use crate::store::StoreOp;

/// Event times remembered per `triggeredBy` job, so a replayed event triggers no second run.
const TRIGGERS_REMEMBERED: usize = 256;

impl Shard {
    /// Counts a success of the job now, without a run, and announces it to its children as
    /// any success is: an operator satisfies a dependency whose parent's work was done by hand.
    pub fn mark_success(
        &mut self,
        name: &str,
        now_ms: i64,
        out: &mut Outbox,
    ) -> Result<(), CommandError> {
        let entry = self
            .jobs
            .get_mut(name)
            .ok_or_else(|| CommandError::JobNotFound(name.to_string()))?;
        entry.record.state.success_count += 1;
        entry.record.state.last_success_ms = Some(now_ms);
        out.ops.push(StoreOp::PutJob(entry.record.clone()));
        out.succeeded.push(name.to_string());
        Ok(())
    }

    /// Records a parent's success with each of its children here; a child whose parents have
    /// all succeeded since its last run gets an instance.
    pub fn parent_succeeded(&mut self, parent: &str, now_ms: i64, out: &mut Outbox) {
        let children: Vec<String> = self
            .children
            .get(parent)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for child in children {
            let Some(entry) = self.jobs.get_mut(child.as_str()) else {
                continue;
            };
            let state = &mut entry.record.state;
            state.parents_succeeded.insert(parent.to_string());
            let ready = entry
                .record
                .spec
                .parents()
                .iter()
                .all(|p| state.parents_succeeded.contains(p));
            if ready && !entry.record.spec.disabled {
                state.parents_succeeded.clear();
            }
            out.ops.push(StoreOp::PutJob(entry.record.clone()));
            if ready && !entry.record.spec.disabled {
                self.create_instance(&child, RunCause::Parents, now_ms, out);
                self.try_start(&child, now_ms, out);
            }
        }
    }

    /// A resource is ready (the bus recorded it before sending it here): instances waiting
    /// for it move on, and `triggeredBy` jobs whose pattern matches get an instance for the
    /// event's time. Applying the same event twice changes nothing the second time.
    pub fn resource_ready(&mut self, event: &ResourceEvent, now_ms: i64, out: &mut Outbox) {
        if event.status != EventStatus::Ready {
            return;
        }
        let mut to_start = BTreeSet::new();
        for id in self.waits.satisfy(&event.resource) {
            let queued = self.live.update(&id, |instance| {
                instance.state = InstanceState::Queued;
                instance.ready_ms = Some(now_ms);
                out.ops.push(StoreOp::PutInstance(instance.clone()));
                instance.job.clone()
            });
            to_start.extend(queued);
        }
        let matching: Vec<String> = self
            .triggered
            .iter()
            .filter(|(_, pattern)| pattern_matches(pattern, &event.resource))
            .map(|(job, _)| job.clone())
            .collect();
        for job in matching {
            if self.trigger_instance(&job, event.at_ms.unwrap_or(now_ms), now_ms, out) {
                to_start.insert(job);
            }
        }
        for job in to_start {
            self.try_start(&job, now_ms, out);
        }
    }

    /// Creates the instance of an event-triggered job for logical time `at_ms`, unless that
    /// event time already triggered one (a replayed event). Answers whether it created one.
    fn trigger_instance(&mut self, job: &str, at_ms: i64, now_ms: i64, out: &mut Outbox) -> bool {
        let Some(entry) = self.jobs.get_mut(job) else {
            return false;
        };
        let seen = &mut entry.record.state.triggered_targets;
        if entry.record.spec.disabled || !seen.insert(at_ms) {
            return false;
        }
        while seen.len() > TRIGGERS_REMEMBERED {
            seen.pop_first();
        }
        out.ops.push(StoreOp::PutJob(entry.record.clone()));
        let mut instance = InstanceRecord::new(job, at_ms, RunCause::Event, now_ms);
        if self.live.contains(&instance.id()) {
            return false;
        }
        // The event's time may be long past (data for yesterday): epsilon counts from now.
        instance.ready_ms = Some(now_ms);
        self.admit(instance, now_ms, out);
        true
    }

    /// A waiting instance ran out of time (it has left the wait index, still missing
    /// `missing`): it ends expired, and its failure is announced.
    pub(super) fn expire(
        &mut self,
        id: &str,
        missing: BTreeSet<String>,
        now_ms: i64,
        out: &mut Outbox,
    ) {
        metrics::counter!("dron_instances_expired_total").increment(1);
        let shown = missing
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let more = missing.len().saturating_sub(5);
        let message = match more {
            0 => format!("waitTimeout passed while waiting for {shown}"),
            n => format!("waitTimeout passed while waiting for {shown} and {n} more"),
        };
        tracing::warn!(instance = id, %message, "instance expired");
        let ending = Ending {
            state: InstanceState::Expired,
            exit_code: None,
            message: Some(message),
        };
        self.finish(id, ending, now_ms, out);
    }

    /// What this shard knows of `resource`: which of its jobs produce it, wait for it (by
    /// template) or are triggered by it, and which live instances wait for it now.
    pub fn lineage(&self, resource: &str) -> ShardLineage {
        let mut lineage = ShardLineage::default();
        let produced_by = resource
            .strip_prefix(dron_model::resource::JOB_PREFIX)
            .and_then(|rest| rest.split_once('@'))
            .map(|(job, _)| job);
        for (name, entry) in &self.jobs {
            let spec = &entry.record.spec;
            if produced_by == Some(&**name) {
                lineage.producers.push(name.to_string());
            }
            let templates = spec.templates();
            if templates
                .iter()
                .any(|t| pattern_matches(&t.as_pattern(), resource))
            {
                lineage.consumers.push(name.to_string());
            }
            if spec
                .trigger_pattern()
                .is_some_and(|p| pattern_matches(p, resource))
            {
                lineage.triggered.push(name.to_string());
            }
        }
        lineage.waiting = self.waits.waiters(resource).cloned().collect();
        lineage.waiting.sort();
        lineage
    }
}
