//! The applier: the one task that hands recorded events to every coordinator (step 3 of the
//! bus's order). Batches recorded while a round of the shards is out wait for it and then go
//! together in the next round: under load every successful run announces `job:NAME@TIME`,
//! and a round per commit of every shard (each round a call to each coordinator and a commit
//! there) cost more than the runs themselves.

use dron_model::resource::PendingEvent;
use ractor::ActorRef;
use tokio::sync::mpsc;

use super::{APPLY_BATCH, Asker, BusMsg, Ingested, ToShards, apply_everywhere};
use crate::error::CommandError;

/// A batch the store has recorded, and who to answer once it is applied.
pub(super) struct Recorded {
    pub batch: Vec<PendingEvent>,
    pub asker: Asker,
}

impl Recorded {
    /// Tells the asker whether the batch was applied everywhere (or why it was not even
    /// recorded), then the bus.
    pub fn answer(self, bus: &ActorRef<BusMsg>, outcome: Result<bool, CommandError>) {
        let Recorded { batch, asker } = self;
        let applied = matches!(outcome, Ok(true));
        let announced = matches!(asker, Asker::Announce(_));
        match asker {
            Asker::Ingest(reply) => {
                let at_ms = batch[0].event.at_ms.unwrap_or_default();
                let ingested = |applied| Ingested {
                    duplicate: false,
                    applied,
                    at_ms,
                };
                let _ = reply.send(outcome.map(ingested));
            }
            Asker::Announce(done) => {
                let _ = done.send(match outcome {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(CommandError::Unavailable(
                        "resource events: not applied on every shard yet".into(),
                    )),
                    Err(error) => Err(error),
                });
            }
        }
        let _ = bus.send_message(BusMsg::Applied {
            batch,
            applied,
            announced,
        });
    }
}

pub(super) fn spawn(shards: ToShards, bus: ActorRef<BusMsg>) -> Applier {
    let (sender, mut recorded) = mpsc::unbounded_channel::<Recorded>();
    tokio::spawn(async move {
        while let Some(first) = recorded.recv().await {
            let mut round = vec![first];
            let mut events = round[0].batch.len();
            while events < APPLY_BATCH {
                match recorded.try_recv() {
                    Ok(next) => {
                        events += next.batch.len();
                        round.push(next);
                    }
                    Err(_) => break,
                }
            }
            let all = round
                .iter()
                .flat_map(|r| r.batch.iter().map(|p| p.event.clone()))
                .collect();
            let applied = apply_everywhere(&shards, all).await;
            for recorded in round {
                recorded.answer(&bus, Ok(applied));
            }
        }
    });
    Applier { sender }
}

/// Where recorded batches go to be applied.
#[derive(Clone)]
pub(super) struct Applier {
    sender: mpsc::UnboundedSender<Recorded>,
}

impl Applier {
    /// Queues a recorded batch; gives it back if the applier has stopped.
    pub fn apply(&self, recorded: Recorded) -> Result<(), Recorded> {
        self.sender.send(recorded).map_err(|error| error.0)
    }
}
