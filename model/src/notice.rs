//! Notices: what dron tells people about a job's runs. A run that fails for good, times out
//! or expires waiting, a target skipped, a job recovering: each makes one [`Notice`], which
//! the notifier mails to the job's owner and posts to webhooks, and records as a
//! [`NoticeRecord`] with the state of each delivery.

use serde::{Deserialize, Serialize};

use crate::error::Invalid;
use crate::name::truncate;

/// The longest accepted webhook URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NoticeKind {
    /// Failed on its last attempt (retries exhausted).
    Failed,
    /// Ran past maxCompletionTime on its last attempt.
    TimedOut,
    /// Its resources did not all arrive within waitTimeout.
    Expired,
    /// A target (or a range of them) could not start within epsilon.
    Skipped,
    /// The first success after failures.
    Recovered,
    /// Sent on request, to check the channels.
    Test,
}

impl NoticeKind {
    /// The events a webhook may subscribe to, as configured (`events = [...]`).
    pub const EVENTS: [NoticeKind; 5] = [
        NoticeKind::Failed,
        NoticeKind::TimedOut,
        NoticeKind::Expired,
        NoticeKind::Skipped,
        NoticeKind::Recovered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Failed => "failed",
            NoticeKind::TimedOut => "timed_out",
            NoticeKind::Expired => "expired",
            NoticeKind::Skipped => "skipped",
            NoticeKind::Recovered => "recovered",
            NoticeKind::Test => "test",
        }
    }

    pub fn parse(text: &str) -> Option<NoticeKind> {
        let mut all = Self::EVENTS.into_iter().chain([NoticeKind::Test]);
        all.find(|kind| kind.as_str() == text)
    }

    /// Whether it reports a problem (everything but a recovery and a test).
    pub fn is_problem(self) -> bool {
        !matches!(self, NoticeKind::Recovered | NoticeKind::Test)
    }
}

/// One thing to tell about one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub job: String,
    pub kind: NoticeKind,
    /// The logical time of the run (the first target of a skipped range).
    pub target_ms: i64,
    /// When it happened.
    pub at_ms: i64,
    /// The job's `owner`: comma-separated mail addresses, as Chronos accepts.
    pub owner: String,
    /// The job's own webhooks (`notifyWebhooks`).
    pub webhooks: Vec<String>,
    /// The attempt that ended (from 0), and its task id; none for skipped targets.
    pub attempt: u32,
    pub task_id: Option<String>,
    pub exit_code: Option<i32>,
    /// Why, in words (the run's message).
    pub message: String,
    /// Targets this notice stands for (a skipped range counts them all; else 1).
    pub count: u64,
    /// The last lines of the run's stderr, read by the notifier when it records the notice.
    pub stderr_tail: String,
}

impl Notice {
    /// Unique per notice, and sorted by time: the storage key.
    pub fn key(&self) -> String {
        format!(
            "{:015}|{}@{}|{}",
            self.at_ms.max(0),
            self.job,
            self.target_ms,
            self.kind.as_str()
        )
    }

    /// The addresses of the owner field: comma- (or semicolon-) separated, blanks dropped.
    pub fn recipients(&self) -> Vec<String> {
        recipients(&self.owner)
    }
}

/// Mail addresses of a Chronos `owner` field.
pub fn recipients(owner: &str) -> Vec<String> {
    let addresses = owner.split([',', ';']).map(str::trim);
    addresses
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

/// Where a notice goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Channel {
    /// To the job owner's addresses, through the configured SMTP server.
    Email,
    /// A JSON POST to this URL.
    Webhook(String),
}

impl Channel {
    /// The metric label: `email` or `webhook`.
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook(_) => "webhook",
        }
    }

    /// `email`, or `webhook <url>`.
    pub fn describe(&self) -> String {
        match self {
            Channel::Email => "email".to_string(),
            Channel::Webhook(url) => format!("webhook {url}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryState {
    /// Waiting: to be sent, retried, or gathered into a digest.
    Queued,
    /// Delivered (alone or in a digest); never sent again.
    Sent,
    /// Given up after the last retry.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::Sent => "sent",
            DeliveryState::Failed => "failed",
        }
    }
}

/// How one notice fared on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub channel: Channel,
    pub state: DeliveryState,
    /// Attempts so far, failed ones included.
    pub attempts: u32,
    pub last_error: Option<String>,
    pub sent_ms: Option<i64>,
    /// How many notices the message that carried it held (1: alone; more: a digest).
    pub sent_with: u32,
}

impl Delivery {
    pub fn queued(channel: Channel) -> Delivery {
        Delivery {
            channel,
            state: DeliveryState::Queued,
            attempts: 0,
            last_error: None,
            sent_ms: None,
            sent_with: 0,
        }
    }
}

/// A notice as the notifier keeps it, with its deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeRecord {
    pub notice: Notice,
    pub deliveries: Vec<Delivery>,
}

impl NoticeRecord {
    /// Whether any delivery still waits.
    pub fn is_pending(&self) -> bool {
        self.deliveries
            .iter()
            .any(|d| d.state == DeliveryState::Queued)
    }
}

impl crate::codec::Stored for Notice {}
impl crate::codec::Stored for NoticeRecord {}

/// Checks a webhook URL: `http://` or `https://`, a host, no blanks or control characters.
pub fn validate_webhook_url(field: &'static str, url: &str) -> Result<(), Invalid> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host_given = rest.is_some_and(|r| !r.is_empty() && !r.starts_with(['/', '?', '#']));
    let clean = !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if url.len() > MAX_URL_LEN || !host_given || !clean {
        return Err(Invalid::new(
            field,
            format!(
                "'{}' is not a webhook URL: give http://host/... or https://host/... ({MAX_URL_LEN} bytes at most)",
                truncate(url)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_split_into_recipients() {
        assert_eq!(
            recipients(" a@x.com, b@y.org;c@z.net ,, "),
            ["a@x.com", "b@y.org", "c@z.net"]
        );
        assert!(recipients("").is_empty());
    }

    #[test]
    fn keys_sort_by_time() {
        let notice = |at_ms| Notice {
            job: "j".into(),
            kind: NoticeKind::Failed,
            target_ms: 5,
            at_ms,
            owner: String::new(),
            webhooks: vec![],
            attempt: 0,
            task_id: None,
            exit_code: None,
            message: String::new(),
            count: 1,
            stderr_tail: String::new(),
        };
        assert!(notice(999).key() < notice(1_000).key());
        assert_eq!(notice(7).key(), "000000000000007|j@5|failed");
    }

    #[test]
    fn kinds_parse_back() {
        for kind in NoticeKind::EVENTS {
            assert_eq!(NoticeKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(NoticeKind::parse("exploded"), None);
    }

    #[test]
    fn webhook_urls_validate() {
        for good in [
            "http://127.0.0.1:9/hook",
            "https://hooks.example.com/T/B?x=1",
        ] {
            assert!(validate_webhook_url("url", good).is_ok(), "{good}");
        }
        for bad in ["", "http://", "https:///x", "ftp://x", "http://a b", "x"] {
            assert!(validate_webhook_url("url", bad).is_err(), "{bad}");
        }
    }
}
