//! Hand-overs: a shard's announcements to the bus and its notices to the notifier, asked
//! until taken, and gauges of those in flight. Each holds its batch in memory and retries it
//! when the receiver is slow, so a receiver that falls behind shows in its gauge first.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};

use crate::error::CommandError;

/// Asks `receiver` with the message `ask` builds until it answers `Ok(())`, pausing between
/// tries (a timeout, or an answer such as "busy") from 100 ms, doubling, up to 30 s. Answers
/// false when the receiver is gone (shutting down: the shard's outbox keeps the batch for the
/// next start).
pub(crate) async fn ask_until_taken<M: ractor::Message>(
    receiver: &ActorRef<M>,
    ask: impl Fn(RpcReplyPort<Result<(), CommandError>>) -> M,
    timeout: Duration,
) -> bool {
    let mut pause = Duration::from_millis(100);
    loop {
        match receiver.call(&ask, Some(timeout)).await {
            Ok(CallResult::Success(Ok(()))) => return true,
            Ok(CallResult::SenderError) | Err(_) => return false,
            _ => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Counts one hand-over in `gauge` while it lives.
pub(crate) struct InFlight(&'static str);

impl InFlight {
    pub(crate) fn start(gauge: &'static str) -> Self {
        metrics::gauge!(gauge).increment(1.0);
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}
