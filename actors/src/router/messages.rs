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
    /// Change the number of shards online; answers the new count. The router passes it to
    /// the shard supervisor, which opens the new shards and then sends the router `Move`.
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
    /// From the shard supervisor: shard `shard` has a new coordinator (the old one failed
    /// and was rebuilt from the shard's storage).
    SetCoordinator {
        shard: u32,
        coordinator: ActorRef<CoordinatorMsg>,
    },
    /// From the shard supervisor, once it has opened the shards a reshard needs: move every
    /// job to its owner on the ring of `count` shards. `coordinators` are those of every open
    /// shard, the first `count` of them the shards that remain; the router routes to those
    /// once the move is done (the supervisor then stops the others). Answers how many jobs
    /// moved.
    Move {
        count: u32,
        coordinators: Vec<ActorRef<CoordinatorMsg>>,
        reply: Reply<usize>,
    },
}

/// A reshard asked of the router, which it passes on to whoever opens and closes shards (the
/// shard supervisor): the router knows only this message, not the supervisor.
pub struct Resharding {
    pub count: u32,
    pub reply: Reply<u32>,
}
