//! Asking every shard the same question at once: every question is sent before any answer is
//! awaited, so the shards work in parallel and the wait is the slowest shard's, not the sum.
//!
//! Sending is separate from waiting so that the router can send inside its handler and wait
//! outside it. A coordinator's mailbox is one FIFO channel (ractor's, unbounded) and the router
//! handles one message at a time, so what the router sends while it handles a message is in
//! each coordinator's mailbox ahead of anything it sends for a later message (a reshard's
//! `Release`): each coordinator handles the question first.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};

use crate::coordinator::CoordinatorMsg;

/// Questions sent to a list of shards, and their answers to come.
#[must_use = "the answers are only collected by `answers`"]
pub struct Asked<T> {
    /// One per shard, in order; None where the shard could not be reached (restarting).
    replies: Vec<Option<ractor::concurrency::OneshotReceiver<T>>>,
}

/// Sends `message` to every coordinator in `shards` now, without waiting for any answer.
pub fn ask_each<'a, T: Send + 'static>(
    shards: impl IntoIterator<Item = &'a ActorRef<CoordinatorMsg>>,
    mut message: impl FnMut(RpcReplyPort<T>) -> CoordinatorMsg,
) -> Asked<T> {
    let replies = shards
        .into_iter()
        .map(|shard| {
            let (reply, answer) = ractor::concurrency::oneshot();
            shard
                .send_message(message(reply.into()))
                .ok()
                .map(|()| answer)
        })
        .collect();
    Asked { replies }
}

impl<T> Asked<T> {
    /// Every shard's answer, in the order of the shards, all within `timeout` from now. The
    /// questions are all out already, so taking the answers in turn costs no more than the
    /// slowest one.
    pub async fn answers(self, timeout: Duration) -> Vec<CallResult<T>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut answers = Vec::with_capacity(self.replies.len());
        for reply in self.replies {
            answers.push(match reply {
                None => CallResult::SenderError,
                Some(answer) => match tokio::time::timeout_at(deadline, answer).await {
                    Ok(Ok(value)) => CallResult::Success(value),
                    Ok(Err(_)) => CallResult::SenderError,
                    Err(_) => CallResult::Timeout,
                },
            });
        }
        answers
    }
}

#[cfg(test)]
mod tests {
    use ractor::{Actor, ActorProcessingErr};

    use super::*;
    use crate::coordinator::ShardStats;

    /// Answers `Stats` (with its shard number) `delay` after being asked; ignores the rest.
    struct Slow;

    impl Actor for Slow {
        type Msg = CoordinatorMsg;
        type State = (u32, Duration);
        type Arguments = (u32, Duration);

        async fn pre_start(
            &self,
            _: ActorRef<CoordinatorMsg>,
            args: (u32, Duration),
        ) -> Result<(u32, Duration), ActorProcessingErr> {
            Ok(args)
        }

        async fn handle(
            &self,
            _: ActorRef<CoordinatorMsg>,
            message: CoordinatorMsg,
            &mut (shard, delay): &mut (u32, Duration),
        ) -> Result<(), ActorProcessingErr> {
            if let CoordinatorMsg::Stats { reply } = message {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let stats = ShardStats {
                        shard,
                        jobs: 0,
                        live_instances: 0,
                        launching: 0,
                        timers: 0,
                        behind_ms: 0,
                    };
                    let _ = reply.send(stats);
                });
            }
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_shard_is_asked_before_any_answer_is_awaited() {
        let second = Duration::from_secs(1);
        let mut shards = Vec::new();
        for (shard, delay) in [
            (0, 3 * second),
            (1, second),
            (2, 2 * second),
            (3, 60 * second),
        ] {
            shards.push(Actor::spawn(None, Slow, (shard, delay)).await.unwrap().0);
        }
        // All are asked at once: the slowest sets the pace (3 s), not the sum (6 s).
        let asked = ask_each(&shards[..3], |reply| CoordinatorMsg::Stats { reply });
        let started = tokio::time::Instant::now();
        assert_eq!(asked.answers(10 * second).await.len(), 3);
        assert_eq!(started.elapsed(), 3 * second);

        // One deadline for all: the shard past it times out, the others answer.
        let asked = ask_each(&shards, |reply| CoordinatorMsg::Stats { reply });
        let started = tokio::time::Instant::now();
        let answers = asked.answers(10 * second).await;
        assert_eq!(started.elapsed(), 10 * second);
        let answered: Vec<Option<u32>> = answers
            .into_iter()
            .map(|answer| match answer {
                CallResult::Success(stats) => Some(stats.shard),
                _ => None,
            })
            .collect();
        assert_eq!(answered, [Some(0), Some(1), Some(2), None]);
    }
}
