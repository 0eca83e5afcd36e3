//! Dependencies: parents' successes, resources becoming ready, `triggeredBy` events, and
//! waits that run out.

use std::collections::BTreeSet;

use dron_model::backfill::announced_backfill;
use dron_model::instance::{InstanceRecord, InstanceState, RunCause};
use dron_model::resource::{EventStatus, ResourceEvent, pattern_matches};

use super::super::messages::ShardLineage;
use super::status::{Ending, announce, run_event};
use super::{Outbox, Shard};
use crate::error::CommandError;
use crate::store::StoreOp;

/// Event times remembered per `triggeredBy` job, so a replayed event triggers no second run.
const TRIGGERS_REMEMBERED: usize = 256;
/// Success times remembered per parent of a dependent job, so a replayed announcement counts
/// no second success. Few are needed: older times count as seen once this many are kept.
const PARENT_SUCCESSES_REMEMBERED: usize = 8;

/// Whether a parent's success at `at_ms` is new to a child that counted those at `times`
/// (noted there if so). An announcement is applied again while it is pending anywhere (a
/// shard that failed to apply it, a restart), so a repeat can come after many newer
/// successes: once `times` is full, a time older than all of them counts as seen. A parent's
/// successes may be announced out of order (concurrent runs, a manual run): one newer than
/// the oldest kept still counts.
fn first_count(times: &mut BTreeSet<i64>, at_ms: i64) -> bool {
    let full = times.len() >= PARENT_SUCCESSES_REMEMBERED;
    let older_than_kept = times.first().is_some_and(|oldest| at_ms < *oldest);
    if (full && older_than_kept) || !times.insert(at_ms) {
        return false;
    }
    while times.len() > PARENT_SUCCESSES_REMEMBERED {
        times.pop_first();
    }
    true
}

/// The job a `job:NAME@TIME` resource announces a run of (job names hold no '@').
fn announced_job(resource: &str) -> Option<&str> {
    let rest = resource.strip_prefix(dron_model::resource::JOB_PREFIX)?;
    rest.split_once('@').map(|(job, _)| job)
}

impl Shard {
    /// Counts a success of the job now, without a run, and announces it as any success is
    /// (`job:NAME@NOW`, through the shard's outbox): an operator satisfies a dependency whose
    /// parent's work was done by hand. Its children learn of it from that announcement.
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
        let event = run_event(&entry.record.spec, now_ms, EventStatus::Ready);
        announce(event, out);
        Ok(())
    }

    /// Counts a success of `parent` (told by its `job:PARENT@TIME` announcement, `at_ms` its
    /// time) with each of its children here; a child whose parents have all succeeded since
    /// its last run gets an instance. An announcement applied again counts nothing: each
    /// child remembers the times it counted (see [`first_count`]).
    fn parent_succeeded(&mut self, parent: &str, at_ms: i64, now_ms: i64, out: &mut Outbox) {
        let Some(children) = self.children.get(parent) else {
            return;
        };
        let children: Vec<String> = children.iter().cloned().collect();
        for child in children {
            let Some(entry) = self.jobs.get_mut(child.as_str()) else {
                continue;
            };
            let state = &mut entry.record.state;
            let times = state
                .parent_success_times
                .entry(parent.to_string())
                .or_default();
            if !first_count(times, at_ms) {
                continue;
            }
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
        let mut to_start = self.release_waiters(&event.resource, now_ms, out);
        if let Some(id) = announced_backfill(&event.meta_json) {
            // A backfill's run: it counts for that backfill's downstream jobs only, never
            // as a scheduled success (`parents`, `triggeredBy`).
            for job in to_start {
                self.try_start(&job, now_ms, out);
            }
            if let (Some(upstream), Some(at_ms)) = (announced_job(&event.resource), event.at_ms) {
                self.backfill_upstream_succeeded(&id, upstream, at_ms, now_ms, out);
            }
            return;
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
        if let Some(parent) = announced_job(&event.resource) {
            self.parent_succeeded(parent, event.at_ms.unwrap_or(now_ms), now_ms, out);
        }
    }

    /// The resource store's answer to the lookups asked by admissions ([`Outbox::lookups`]):
    /// `found` are those of them it holds. Each releases the instances waiting for it, as its
    /// event did or would have; no `triggeredBy` job fires and no parent counts (a lookup is
    /// not an event). Answering the same again changes nothing.
    ///
    /// Why this cannot miss a resource: the bus records a resource before it sends its event
    /// here. An event handled before an instance's admission was recorded before the lookup
    /// that admission asked for, so the lookup finds it; an event handled after it finds the
    /// instance in the wait index.
    pub fn resources_found(&mut self, found: &[String], now_ms: i64, out: &mut Outbox) {
        let mut to_start = BTreeSet::new();
        for resource in found {
            to_start.append(&mut self.release_waiters(resource, now_ms, out));
        }
        for job in to_start {
            self.try_start(&job, now_ms, out);
        }
    }

    /// `resource` is satisfied: instances it was the last missing resource of are queued.
    /// Answers their jobs, which may start one.
    fn release_waiters(
        &mut self,
        resource: &str,
        now_ms: i64,
        out: &mut Outbox,
    ) -> BTreeSet<String> {
        let mut jobs = BTreeSet::new();
        for id in self.waits.satisfy(resource) {
            let queued = self.live.update(&id, |instance| {
                instance.state = InstanceState::Queued;
                instance.ready_ms = Some(now_ms);
                out.ops.push(StoreOp::PutInstance(instance.clone()));
                instance.job.clone()
            });
            jobs.extend(queued);
        }
        jobs
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
        let produced_by = announced_job(resource);
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
