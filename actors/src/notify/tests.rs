//! The notifier under paused tokio time: retries and backoff, flood control, restarts.
//! Messages go to a transport that records them (the real SMTP and HTTP transports are
//! proven end to end in `tests/notifications.rs`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use dron_model::notice::{Delivery, DeliveryState};

use super::*;
use crate::clock::TokioClock;
use crate::store::MemoryNoticeStore;

/// Records what it is asked to send; fails the first `failures` sends.
#[derive(Default)]
struct Recording {
    sent: Mutex<Vec<Outgoing>>,
    failures: AtomicUsize,
    permanent: bool,
}

impl Transport for Arc<Recording> {
    fn send(&self, message: Outgoing) -> SendFuture {
        let fail = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let permanent = self.permanent;
        if !fail {
            self.sent.lock().unwrap().push(message);
        }
        Box::pin(async move {
            match (fail, permanent) {
                (false, _) => Ok(()),
                (true, false) => Err(SendError::transient("connection refused")),
                (true, true) => Err(SendError::permanent("550 no such user")),
            }
        })
    }
}

impl Recording {
    fn sent(&self) -> Vec<Outgoing> {
        self.sent.lock().unwrap().clone()
    }
}

fn config() -> NotifyConfig {
    NotifyConfig {
        email: true,
        digest_window_ms: 10_000,
        retry_backoff_ms: 1_000,
        retry_backoff_max_ms: 4_000,
        ..NotifyConfig::default()
    }
}

fn failure(at_ms: i64) -> Notice {
    Notice {
        job: "export".into(),
        kind: NoticeKind::Failed,
        target_ms: at_ms,
        at_ms,
        owner: "ops@example.com".into(),
        webhooks: vec![],
        attempt: 0,
        task_id: None,
        exit_code: Some(1),
        message: "exited with code 1".into(),
        count: 1,
        stderr_tail: String::new(),
    }
}

async fn start(
    config: NotifyConfig,
    store: Arc<MemoryNoticeStore>,
    transport: Arc<Recording>,
) -> ActorRef<NotifierMsg> {
    let args = NotifierArgs {
        config,
        store,
        transport: Arc::new(transport),
        clock: Arc::new(TokioClock::starting_at(chrono::Utc::now())),
        runs_root: PathBuf::from("/nonexistent"),
    };
    Actor::spawn(None, Notifier, args).await.unwrap().0
}

async fn record(notifier: &ActorRef<NotifierMsg>, notices: Vec<Notice>) {
    let asked = notifier
        .call(|reply| NotifierMsg::Record { notices, reply }, None)
        .await
        .unwrap();
    assert!(matches!(asked, ractor::rpc::CallResult::Success(Ok(()))));
}

fn states(store: &MemoryNoticeStore) -> Vec<(DeliveryState, u32)> {
    let records = store.load().unwrap();
    let deliveries = records.iter().flat_map(|r| &r.deliveries);
    deliveries.map(|d| (d.state, d.attempts)).collect()
}

async fn settle(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_send_is_retried_with_backoff_and_recorded_as_sent_once() {
    let store = Arc::new(MemoryNoticeStore::default());
    let transport = Arc::new(Recording::default());
    transport.failures.store(2, Ordering::SeqCst);
    let notifier = start(config(), store.clone(), transport.clone()).await;
    record(&notifier, vec![failure(1)]).await;
    settle(10).await;
    assert!(transport.sent().is_empty(), "the first attempt failed");
    assert_eq!(states(&store), [(DeliveryState::Queued, 1)]);
    settle(1_000).await; // first retry after 1 s: fails again
    assert!(transport.sent().is_empty());
    settle(2_000).await; // second retry after 2 s more: delivered
    assert_eq!(transport.sent().len(), 1);
    assert_eq!(transport.sent()[0].to, ["ops@example.com"]);
    assert_eq!(states(&store), [(DeliveryState::Sent, 3)]);
    // Handed over again (a coordinator restarted before dropping its copy): nothing resent.
    record(&notifier, vec![failure(1)]).await;
    settle(60_000).await;
    assert_eq!(transport.sent().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_gives_up_at_once() {
    let store = Arc::new(MemoryNoticeStore::default());
    let transport = Arc::new(Recording {
        permanent: true,
        ..Recording::default()
    });
    transport.failures.store(1, Ordering::SeqCst);
    let notifier = start(config(), store.clone(), transport.clone()).await;
    record(&notifier, vec![failure(1)]).await;
    settle(60_000).await;
    assert!(transport.sent().is_empty());
    assert_eq!(states(&store), [(DeliveryState::Failed, 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_flood_sends_one_message_then_one_digest_per_window() {
    let store = Arc::new(MemoryNoticeStore::default());
    let transport = Arc::new(Recording::default());
    let notifier = start(config(), store.clone(), transport.clone()).await;
    // A failure every second for 25 s, with a 10 s window.
    for second in 0..25 {
        record(&notifier, vec![failure(1_000 + second)]).await;
        settle(1_000).await;
    }
    settle(20_000).await;
    let sent = transport.sent();
    let events: Vec<&str> = sent.iter().map(|m| m.event.as_str()).collect();
    assert_eq!(events, ["failed", "digest", "digest", "digest"]);
    let told: usize = sent
        .iter()
        .map(|m| {
            let json: serde_json::Value = serde_json::from_str(&m.json).unwrap();
            json["count"].as_u64().unwrap() as usize
        })
        .sum();
    assert_eq!(told, 25, "every failure told exactly once");
    assert!(
        states(&store)
            .iter()
            .all(|(s, _)| *s == DeliveryState::Sent)
    );
}

#[tokio::test(start_paused = true)]
async fn queued_deliveries_go_after_a_restart_as_one_digest_per_job() {
    let store = Arc::new(MemoryNoticeStore::default());
    let queued = |at_ms| NoticeRecord {
        notice: failure(at_ms),
        deliveries: vec![Delivery::queued(Channel::Email)],
    };
    let mut other = queued(9);
    other.notice.job = "import".into();
    let ops = vec![queued(1), queued(2), queued(3), other]
        .into_iter()
        .map(NoticeOp::Put)
        .collect();
    drop(store.submit(ops));
    let transport = Arc::new(Recording::default());
    let _notifier = start(config(), store.clone(), transport.clone()).await;
    settle(10).await;
    let sent = transport.sent();
    assert_eq!(sent.len(), 2, "one message per job");
    assert!(
        sent.iter()
            .any(|m| m.event == "digest" && m.subject.contains("'export': 3"))
    );
    assert!(
        sent.iter()
            .any(|m| m.event == "failed" && m.subject.contains("'import'"))
    );
    assert!(
        states(&store)
            .iter()
            .all(|(s, _)| *s == DeliveryState::Sent)
    );
}

#[tokio::test(start_paused = true)]
async fn channels_follow_the_config_and_the_job() {
    let store = Arc::new(MemoryNoticeStore::default());
    let transport = Arc::new(Recording::default());
    let config = NotifyConfig {
        webhooks: vec![WebhookTarget {
            url: "http://pager/".into(),
            events: vec![NoticeKind::TimedOut],
            secret: Some("k".into()),
        }],
        job_webhook_secret: Some("j".into()),
        ..config()
    };
    let notifier = start(config, store.clone(), transport.clone()).await;
    let mut timed_out = failure(1);
    timed_out.kind = NoticeKind::TimedOut;
    timed_out.webhooks = vec!["http://chat/".into()];
    let mut recovered = failure(2);
    recovered.kind = NoticeKind::Recovered;
    recovered.job = "other".into();
    record(&notifier, vec![timed_out, recovered]).await;
    settle(10).await;
    let mut sent: Vec<(String, Option<String>)> = transport
        .sent()
        .iter()
        .map(|m| (m.channel.describe(), m.secret.clone()))
        .collect();
    sent.sort();
    // No mail for the recovery (mail_on_recovery is off); the pager wants timeouts only.
    assert_eq!(
        sent,
        [
            ("email".to_string(), None),
            ("webhook http://chat/".to_string(), Some("j".to_string())),
            ("webhook http://pager/".to_string(), Some("k".to_string())),
        ]
    );
}
