//! What a shard's change hands back to its actor: the writes, and what to do once they are
//! durable.

use dron_model::notice::Notice;
use dron_model::resource::ResourceEvent;

use crate::broker::LaunchRequest;
use crate::store::StoreOp;

/// What a change needs written, and what to do once it is durable.
#[derive(Default)]
pub struct Outbox {
    pub ops: Vec<StoreOp>,
    pub launches: Vec<LaunchRequest>,
    pub kills: Vec<String>,
    /// Tasks to adopt after a restart.
    pub adopts: Vec<Adoption>,
    /// Events for the bus (`job:NAME@TIME` of runs that ended, and of successes marked by
    /// hand), also written to the shard's outbox in `ops` so none is lost to a crash. Every
    /// shard applies them: waiting instances, `triggeredBy` jobs and children of the job.
    pub announcements: Vec<ResourceEvent>,
    /// Notices for the notifier (failures, skips, recoveries), also written to the shard's
    /// notice outbox in `ops`, for the same reason.
    pub notices: Vec<Notice>,
    /// Set when a tick stopped at `max_instances_per_tick`: tick again at once.
    pub more_due: bool,
    /// Resources that admitted instances wait for, to look up in the resource store (off
    /// the actor): those it holds come back through [`super::Shard::resources_found`]. Not a
    /// write: nothing waits for durability to ask.
    pub lookups: Vec<String>,
}

impl Outbox {
    /// Nothing to write and nothing to release.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
            && self.launches.is_empty()
            && self.kills.is_empty()
            && self.adopts.is_empty()
            && self.announcements.is_empty()
            && self.notices.is_empty()
    }

    /// Adds `later`'s writes and effects after this one's.
    pub fn absorb(&mut self, later: Outbox) {
        append(&mut self.ops, later.ops);
        append(&mut self.launches, later.launches);
        append(&mut self.kills, later.kills);
        append(&mut self.adopts, later.adopts);
        append(&mut self.announcements, later.announcements);
        append(&mut self.notices, later.notices);
        self.more_due |= later.more_due;
        append(&mut self.lookups, later.lookups);
    }
}

/// `to.extend(more)`, without copying `more` when `to` is empty (store ops are large).
fn append<T>(to: &mut Vec<T>, mut more: Vec<T>) {
    if to.is_empty() {
        std::mem::swap(to, &mut more);
    } else {
        to.append(&mut more);
    }
}

/// Whether a status update was about a live instance's current attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// No live instance of this shard has the task (the job moved shard, or was deleted, or
    /// the instance has ended).
    Unknown,
    /// About an earlier attempt of a live instance.
    Stale,
    Current,
}

/// A running task to reconnect with its agent after a restart.
#[derive(Debug, Clone)]
pub struct Adoption {
    pub request: LaunchRequest,
    /// The agent it was recorded on (None: not recorded before the restart).
    pub agent: Option<String>,
    pub timeout_deadline_ms: Option<i64>,
}
