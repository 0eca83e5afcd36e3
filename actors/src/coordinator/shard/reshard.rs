//! Resharding: handing jobs, with their live instances, to the shard the ring now names.

use dron_model::instance::InstanceRecord;
use dron_model::ring::Ring;

use super::super::messages::MovedJob;
use super::{Outbox, Shard};
use crate::store::StoreOp;

impl Shard {
    /// Takes out of this shard every job `ring` places elsewhere (history is read by the
    /// caller, which has the store).
    pub fn release(&mut self, ring: &Ring) -> Vec<MovedJob> {
        let leaving: Vec<String> = self
            .jobs
            .keys()
            .filter(|name| ring.owner(name) != self.index)
            .map(|name| name.to_string())
            .collect();
        let mut moved = Vec::with_capacity(leaving.len());
        for name in leaving {
            let ids = self.live.ids_of(&name);
            // Removing an instance takes its retry and its wait with it.
            let live: Vec<InstanceRecord> =
                ids.iter().filter_map(|id| self.remove_live(id)).collect();
            let record = self.remove_job(&name).expect("job present");
            let backfills = self.plans.remove_job(&name);
            self.released.insert(name, ids);
            moved.push(MovedJob {
                record,
                live,
                history: Vec::new(),
                backfills,
            });
        }
        moved
    }

    pub fn adopt(&mut self, jobs: Vec<MovedJob>, now_ms: i64, out: &mut Outbox) {
        for moved in jobs {
            let name = moved.record.spec.name.clone();
            if self.jobs.contains_key(name.as_str()) {
                continue; // an earlier, interrupted move already brought it: ours is newer
            }
            out.ops.push(StoreOp::PutJob(moved.record.clone()));
            self.insert_job(moved.record);
            for instance in moved.live {
                out.ops.push(StoreOp::PutInstance(instance.clone()));
                // One waiting to retry keeps its retry time (or retries now, lacking one).
                self.add_live(instance, now_ms, out);
            }
            out.ops
                .extend(moved.history.into_iter().map(StoreOp::AppendHistory));
            for plan in moved.backfills {
                out.ops.extend(plan.entries().map(StoreOp::PutBackfill));
                self.plans.insert(plan);
            }
            self.try_start(&name, now_ms, out);
            self.resume_backfills(std::slice::from_ref(&name), now_ms, out);
        }
    }

    pub fn forget(&mut self, names: &[String], out: &mut Outbox) {
        for name in names {
            let Some(ids) = self.released.remove(name) else {
                continue;
            };
            if self.jobs.contains_key(name.as_str()) {
                continue; // moved back in the meantime
            }
            out.ops.extend(ids.into_iter().map(StoreOp::DeleteInstance));
            out.ops.push(StoreOp::DeleteJob(name.clone()));
            out.ops.push(StoreOp::DeleteHistory { job: name.clone() });
            out.ops.push(StoreOp::DeleteBackfills {
                job: name.clone(),
                id: None,
            });
        }
    }
}
