use dron_model::resource::{PendingEvent, ResourceEvent, ResourceRecord};
use ractor::RpcReplyPort;
use tokio::sync::mpsc;

use crate::error::CommandError;

pub enum BusMsg {
    /// The link to the message broker: events to publish go down this channel, and the link
    /// answers [`BusMsg::Published`] once the broker has confirmed one. The channel's size
    /// bounds the events waiting in memory; the others wait on disk (`outbound.rs`).
    SetPublisher(mpsc::Sender<ResourceEvent>),
    /// An event from outside (HTTP, or RabbitMQ). Answers once the event is
    /// recorded and applied to every coordinator (or was a duplicate).
    Ingest {
        event: ResourceEvent,
        origin: Origin,
        reply: RpcReplyPort<Result<Ingested, CommandError>>,
    },
    /// Events a coordinator announces (its job runs ended). Answers once they are applied
    /// everywhere: the coordinator may then drop them from its outbox.
    Announce {
        events: Vec<ResourceEvent>,
        reply: RpcReplyPort<Result<(), CommandError>>,
    },
    /// Sent by the bus's own tasks: a batch of events was applied to every coordinator, or not.
    Applied {
        batch: Vec<PendingEvent>,
        applied: bool,
        /// A coordinator's announcements (no pending record: see `Asker::Announce`).
        announced: bool,
    },
    /// Sent by the broker link: the broker confirmed this event (by key).
    Published { key: String },
    /// Try again to apply the events that could not be applied everywhere.
    RetryPending,
    /// A satisfied resource, if it is.
    Lookup {
        resource: String,
        reply: RpcReplyPort<Result<Option<ResourceRecord>, CommandError>>,
    },
}

/// Recorded events for every shard, sent down the bus's [`ToShards`] link: answers true once
/// every shard has applied them durably.
pub struct ApplyEverywhere {
    pub events: Vec<ResourceEvent>,
    pub reply: RpcReplyPort<bool>,
}

/// Where the bus sends events to apply on every shard. The router, which does it, is spawned
/// after the bus (its coordinators announce to the bus), so the bus gets the sending end at
/// construction and the router the receiving end: what the bus sends before the router runs
/// waits in the channel.
pub type ToShards = mpsc::UnboundedSender<ApplyEverywhere>;

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Api,
    /// Consumed from RabbitMQ; not published back to it. (Not the offer broker, `broker`.)
    Amqp,
    /// Announced by dron itself (`job:NAME@TIME`).
    Internal,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Api => "api",
            Origin::Amqp => "amqp",
            Origin::Internal => "internal",
        }
    }
}

/// What became of an ingested event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    /// The resource was already satisfied by an event of the same time: nothing changed.
    pub duplicate: bool,
    /// Every coordinator applied it (else it is retried until they have).
    pub applied: bool,
    /// The event's time (given, or when it was recorded).
    pub at_ms: i64,
}
