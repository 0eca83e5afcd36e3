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
    message: impl Fn(RpcReplyPort<T>) -> CoordinatorMsg,
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
