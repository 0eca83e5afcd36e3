use ractor::{ActorRef, RpcReplyPort};

use dron_model::resource::ResourceEvent;

use crate::coordinator::{CoordinatorMsg, Reply};
use dron_task::TaskUpdate;

// Routed messages are moved into the mailbox once; boxing them would add an allocation per
// API call and status update for no gain.
#[allow(clippy::large_enum_variant)]
pub enum RouterMsg {
    /// Forward `message` to the coordinator owning job `job`.
    Route {
        job: String,
        message: CoordinatorMsg,
    },
    /// The current coordinators, for questions every shard must answer (listings).
    Shards {
        reply: RpcReplyPort<Vec<ActorRef<CoordinatorMsg>>>,
    },
    /// A status update from the broker, routed by the job named in its task id.
    TaskUpdate(TaskUpdate),
    /// An update a coordinator received for a job it no longer owns.
    ForwardTaskUpdate(TaskUpdate),
    /// From the event bus, after recording the events: hand them to every shard; answers true
    /// once all have applied them durably. The router sends them to every shard while it
    /// handles this message, which orders them with resharding: a job on the move applies
    /// them on its old shard before it leaves, or on its new one after.
    ResourceReady {
        events: Vec<ResourceEvent>,
        reply: RpcReplyPort<bool>,
    },
    /// Change the number of shards online; answers the new count.
    Reshard {
        count: u32,
        reply: Reply<u32>,
    },
    ShardCount {
        reply: RpcReplyPort<u32>,
    },
    /// Fault injection for tests: make shard `shard` panic.
    InjectPanic {
        shard: u32,
        reply: Reply<()>,
    },
}
