//! Admission: a new, recovered or moved-in instance enters the live set and, while resources
//! it depends on are missing, the wait index.

use std::collections::BTreeSet;

use dron_model::instance::{InstanceRecord, InstanceState, RunCause};
use dron_model::resource::Expansion;

use super::{Outbox, Shard, ms_to_time};
use crate::store::StoreOp;

impl Shard {
    /// Records a new instance. One with `dependsOn` (a manual run aside: an operator's "run
    /// now" does not wait) expands its templates for its logical time and waits for those
    /// of its resources that are not satisfied yet.
    pub(super) fn admit(&mut self, mut instance: InstanceRecord, now_ms: i64, out: &mut Outbox) {
        let spec = &self.jobs[instance.job.as_str()].record;
        if instance.cause != RunCause::Manual && !spec.spec.depends_on.is_empty() {
            let expansion = Expansion {
                logical: ms_to_time(instance.target_ms),
                zone: spec.spec.zone(),
                granularity: spec.spec.granularity(),
                last_run: spec.state.last_success_target_ms.map(ms_to_time),
            };
            let mut resources: Vec<String> = spec
                .spec
                .templates()
                .iter()
                .flat_map(|t| t.expand(&expansion))
                .collect();
            resources.sort();
            resources.dedup();
            instance.resources = resources;
            instance.state = InstanceState::Waiting;
        }
        let id = instance.id();
        self.add_live(instance, now_ms, out);
        if let Some(current) = self.live.get(&id) {
            out.ops.push(StoreOp::PutInstance(current.clone()));
        }
    }

    /// Indexes a live instance. A waiting one waits for all its resources, and its
    /// admission asks the coordinator to look them up in the resource store
    /// ([`Outbox::lookups`]): those already satisfied release it when the answer comes
    /// ([`Shard::resources_found`]). The shard itself reads nothing.
    pub(super) fn add_live(&mut self, mut instance: InstanceRecord, now_ms: i64, out: &mut Outbox) {
        if instance.state == InstanceState::Waiting {
            if instance.resources.is_empty() {
                // Templates that expanded to nothing: nothing to wait for.
                instance.state = InstanceState::Queued;
                instance.ready_ms = Some(now_ms);
                out.ops.push(StoreOp::PutInstance(instance.clone()));
            } else {
                let wanted: BTreeSet<String> = instance.resources.iter().cloned().collect();
                out.lookups.extend(wanted.iter().cloned());
                let timeout = self.jobs[instance.job.as_str()]
                    .record
                    .spec
                    .wait_timeout_ms();
                let deadline_ms = instance.created_ms.saturating_add(timeout);
                self.waits.wait(&instance.id(), wanted, deadline_ms);
            }
        }
        self.live.insert(instance, now_ms);
    }
}
