use dron_model::notice::{Channel, Notice, NoticeRecord};
use ractor::RpcReplyPort;

use super::transport::SendResult;
use crate::error::CommandError;

pub enum NotifierMsg {
    /// Notices a coordinator hands over (its runs ended). Answers once they are recorded
    /// durably: the coordinator may then drop them from its outbox.
    Record {
        notices: Vec<Notice>,
        reply: RpcReplyPort<Result<(), CommandError>>,
    },
    /// Sent by the notifier's own task once new records are durable (deliver them), or not.
    Recorded {
        keys: Vec<String>,
        written: Result<(), crate::store::StoreError>,
    },
    /// A flood-control window of (job, channel) ends: send what it gathered.
    WindowEnd { job: String, channel: Channel },
    /// Sent by a delivery task: how an attempt to send batch `batch` went.
    Attempted { batch: u64, result: SendResult },
    /// Time to try batch `batch` again.
    Retry { batch: u64 },
    /// The newest `limit` notices with their deliveries, newest first.
    List {
        limit: usize,
        reply: RpcReplyPort<Vec<NoticeRecord>>,
    },
    /// Retention: forgets at most `limit` delivered (or given-up) notices older than
    /// `before_ms`, oldest first, or with `dry_run` only names them. Answers their keys.
    Prune {
        before_ms: i64,
        limit: usize,
        dry_run: bool,
        reply: RpcReplyPort<Vec<String>>,
    },
    /// Sends a test notice through the channels asked for (or every configured one);
    /// answers once each has been tried once.
    Test {
        request: TestRequest,
        reply: RpcReplyPort<Result<NoticeRecord, CommandError>>,
    },
}

/// Where a test notice goes: to this address and/or this URL, or (neither given) through
/// every configured channel.
#[derive(Debug, Clone, Default)]
pub struct TestRequest {
    pub email: Option<String>,
    pub webhook: Option<String>,
}
