//! The notifier: tells people when a job's runs go wrong. Coordinators hand it
//! [`Notice`]s (a run failed for good, timed out, expired waiting, a target was skipped, a
//! job recovered); it mails the job's owner and posts to webhooks, without ever holding up
//! scheduling:
//!
//! 1. A coordinator writes each notice to its shard's notice outbox in the same batch as the
//!    run's end, and hands it over here once that batch is durable (in a task of its own).
//! 2. The notifier reads the run's stderr tail, records the notice with one queued delivery
//!    per channel in its [`NoticeStore`], and answers once that is durable; the coordinator
//!    then drops its copy. A crash on either side leaves a copy that is handed over again.
//! 3. Each delivery goes through flood control ([`digest`]): the first notice about a job in
//!    a window goes at once, later ones wait and go as one digest at the window's end.
//! 4. Messages are sent in tasks of their own through a [`Transport`] (SMTP and HTTP live in
//!    the server package) and retried with capped exponential backoff. A delivery recorded
//!    as sent is never sent again; queued ones are sent after a restart.

mod digest;
mod messages;
mod render;
mod transport;

pub use digest::{Admit, Digest, Flood};
pub use messages::{NotifierMsg, TestRequest};
pub use render::{Rendered, render};
pub use transport::{Outgoing, SendError, SendFuture, SendResult, Transport};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dron_model::error::Invalid;
use dron_model::notice::{Channel, Delivery, DeliveryState, Notice, NoticeKind, NoticeRecord};
use dron_task::{STDERR_FILE, run_dir};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::clock::SharedClock;
use crate::error::CommandError;
use crate::store::{NoticeOp, NoticeStore, StoreError};

/// How long a hand-over from a coordinator may take before it is tried again.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(30);
/// The job name test notices carry.
pub const TEST_JOB: &str = "dron-test";
/// Bytes read from the end of a run's stderr for its tail.
const TAIL_BYTES: u64 = 16 * 1024;
/// Longest line kept in a stderr tail.
const TAIL_LINE_CHARS: usize = 500;

/// A webhook configured for the whole server.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    pub url: String,
    /// The kinds of notice it wants.
    pub events: Vec<NoticeKind>,
    /// Signs the body (HMAC-SHA256) when set.
    pub secret: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Where links in messages point (the UI, or this server's API).
    pub ui_url: String,
    /// Flood-control window per (job, channel); 0 turns digests off.
    pub digest_window_ms: i64,
    /// Mail the owner when a job succeeds after failures.
    pub mail_on_recovery: bool,
    /// Whether an SMTP server is configured.
    pub email: bool,
    /// Where a test mail goes when the request names no address (the from-address).
    pub test_recipient: Option<String>,
    pub webhooks: Vec<WebhookTarget>,
    /// Signs the jobs' own webhooks (`notifyWebhooks`) when set.
    pub job_webhook_secret: Option<String>,
    /// Notices kept for listing; undelivered ones are kept beyond it.
    pub keep: usize,
    /// First retry delay; doubles per failed attempt up to the max.
    pub retry_backoff_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// Attempts per message before giving up.
    pub max_attempts: u32,
    /// Lines of a failed run's stderr quoted in its message.
    pub stderr_tail_lines: usize,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            ui_url: "http://127.0.0.1:4400".to_string(),
            digest_window_ms: 300_000,
            mail_on_recovery: false,
            email: false,
            test_recipient: None,
            webhooks: Vec::new(),
            job_webhook_secret: None,
            keep: 1000,
            retry_backoff_ms: 1000,
            retry_backoff_max_ms: 300_000,
            max_attempts: 50,
            stderr_tail_lines: 20,
        }
    }
}

pub struct Notifier;

pub struct NotifierArgs {
    pub config: NotifyConfig,
    pub store: Arc<dyn NoticeStore>,
    pub transport: Arc<dyn Transport>,
    pub clock: SharedClock,
    /// Where run directories live, for stderr tails.
    pub runs_root: PathBuf,
}

type TestReply = RpcReplyPort<Result<NoticeRecord, CommandError>>;

/// One message on its way: notices about one job, for one channel.
struct Batch {
    channel: Channel,
    keys: Vec<String>,
    attempts: u32,
}

pub struct NotifierState {
    config: NotifyConfig,
    store: Arc<dyn NoticeStore>,
    transport: Arc<dyn Transport>,
    clock: SharedClock,
    runs_root: PathBuf,
    /// Recorded notices by key (oldest first).
    records: BTreeMap<String, NoticeRecord>,
    /// Notices whose record is being written.
    recording: HashMap<String, NoticeRecord>,
    flood: Flood,
    batches: HashMap<u64, Batch>,
    next_batch: u64,
    /// Test requests waiting for each of their channels to be tried once.
    test_waiters: Vec<(String, TestReply)>,
}

impl Actor for Notifier {
    type Msg = NotifierMsg;
    type State = NotifierState;
    type Arguments = NotifierArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NotifierMsg>,
        args: NotifierArgs,
    ) -> Result<NotifierState, ActorProcessingErr> {
        let records = args.store.load()?;
        let mut state = NotifierState {
            flood: Flood::new(args.config.digest_window_ms),
            config: args.config,
            store: args.store,
            transport: args.transport,
            clock: args.clock,
            runs_root: args.runs_root,
            records: records.into_iter().map(|r| (r.notice.key(), r)).collect(),
            recording: HashMap::new(),
            batches: HashMap::new(),
            next_batch: 0,
            test_waiters: Vec::new(),
        };
        state.resume_queued(&myself);
        state.publish_gauge();
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<NotifierMsg>,
        message: NotifierMsg,
        state: &mut NotifierState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            NotifierMsg::Record { notices, reply } => {
                state.record(&myself, notices, reply).await;
            }
            NotifierMsg::Recorded { keys, written } => state.recorded(&myself, keys, written),
            NotifierMsg::WindowEnd { job, channel } => {
                let now_ms = state.clock.now_ms();
                // The timer and the wall clock may disagree by a millisecond: a timer that fires
                // before the window's end is set again rather than dropped (its digest with it).
                if let Some(ends_ms) = state.flood.window_end(&job, &channel)
                    && ends_ms > now_ms
                {
                    state.schedule_window_end(&myself, job, channel, ends_ms);
                    return Ok(());
                }
                if let Some(digest) = state.flood.close(&job, &channel, now_ms) {
                    state.start_batch(&myself, channel.clone(), digest.keys);
                    state.schedule_window_end(&myself, job, channel, digest.next_window_ends_ms);
                }
            }
            NotifierMsg::Attempted { batch, result } => state.attempted(&myself, batch, result),
            NotifierMsg::Retry { batch } => state.attempt(&myself, batch),
            NotifierMsg::List { limit, reply } => {
                let newest = state.records.values().rev().take(limit);
                let _ = reply.send(newest.cloned().collect());
            }
            NotifierMsg::Test { request, reply } => state.test(&myself, request, reply),
            NotifierMsg::Prune {
                before_ms,
                limit,
                dry_run,
                reply,
            } => {
                let _ = reply.send(state.prune(before_ms, limit, dry_run));
            }
        }
        Ok(())
    }
}

impl NotifierState {
    /// After a restart: every queued delivery goes at once, one message per (job, channel)
    /// (a digest when several waited), so a restart does not undo flood control.
    fn resume_queued(&mut self, myself: &ActorRef<NotifierMsg>) {
        let mut groups: BTreeMap<(String, Channel), Vec<String>> = BTreeMap::new();
        for (key, record) in &self.records {
            for delivery in &record.deliveries {
                if delivery.state == DeliveryState::Queued {
                    let group = (record.notice.job.clone(), delivery.channel.clone());
                    groups.entry(group).or_default().push(key.clone());
                }
            }
        }
        for ((_, channel), keys) in groups {
            self.start_batch(myself, channel, keys);
        }
    }

    /// Step 2 of the module docs: read tails, write records, answer once durable.
    async fn record(
        &mut self,
        myself: &ActorRef<NotifierMsg>,
        notices: Vec<Notice>,
        reply: RpcReplyPort<Result<(), CommandError>>,
    ) {
        let mut records = Vec::new();
        let mut busy = false;
        for mut notice in notices {
            let key = notice.key();
            if self.records.contains_key(&key) {
                continue; // handed over again after a crash: already recorded
            }
            if self.recording.contains_key(&key) {
                busy = true;
                continue;
            }
            notice.stderr_tail = self.stderr_tail(&notice).await;
            let deliveries = self.channels(&notice).into_iter().map(Delivery::queued);
            let record = NoticeRecord {
                deliveries: deliveries.collect(),
                notice,
            };
            self.recording.insert(key, record.clone());
            records.push(record);
        }
        let written = self.write_new(myself, records);
        tokio::spawn(async move {
            let answer = match (written.await, busy) {
                (Err(error), _) => Err(CommandError::from(error)),
                // The same notices are being written for an earlier hand-over: ask again.
                (Ok(()), true) => Err(CommandError::Unavailable("being recorded".into())),
                (Ok(()), false) => Ok(()),
            };
            let _ = reply.send(answer);
        });
    }

    /// Submits new records; once durable (or failed), tells the actor. Answers a future
    /// resolving to the write's outcome.
    fn write_new(
        &self,
        myself: &ActorRef<NotifierMsg>,
        records: Vec<NoticeRecord>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let keys: Vec<String> = records.iter().map(|r| r.notice.key()).collect();
        let durable = (!records.is_empty()).then(|| {
            self.store
                .submit(records.into_iter().map(NoticeOp::Put).collect())
        });
        let myself = myself.clone();
        async move {
            let Some(durable) = durable else {
                return Ok(());
            };
            let written = durable
                .await
                .unwrap_or_else(|_| Err(StoreError::Stopped("the notice store's writer")));
            if let Err(error) = &written {
                tracing::error!(%error, "recording notices failed");
            }
            let recorded = NotifierMsg::Recorded {
                keys,
                written: written.clone(),
            };
            let _ = myself.send_message(recorded);
            written
        }
    }

    fn recorded(
        &mut self,
        myself: &ActorRef<NotifierMsg>,
        keys: Vec<String>,
        written: Result<(), StoreError>,
    ) {
        for key in keys {
            let Some(record) = self.recording.remove(&key) else {
                continue;
            };
            if let Err(error) = &written {
                let refused = CommandError::storage("notice store", error);
                self.answer_test(&key, Err(refused));
                continue;
            }
            self.records.insert(key.clone(), record);
            self.deliver(myself, &key);
        }
        self.trim();
        self.publish_gauge();
    }

    /// The channels a notice goes to: the owner's mail (problems; recoveries if asked),
    /// the server's webhooks that want its kind, and the job's own webhooks.
    fn channels(&self, notice: &Notice) -> Vec<Channel> {
        let mut channels = Vec::new();
        let mail_wanted = notice.kind.is_problem()
            || (notice.kind == NoticeKind::Recovered && self.config.mail_on_recovery);
        if self.config.email && mail_wanted && !notice.recipients().is_empty() {
            channels.push(Channel::Email);
        }
        let server_hooks = self.config.webhooks.iter();
        let wanted = server_hooks.filter(|hook| hook.events.contains(&notice.kind));
        let urls = wanted.map(|hook| &hook.url).chain(&notice.webhooks);
        for url in urls {
            let channel = Channel::Webhook(url.clone());
            if !channels.contains(&channel) {
                channels.push(channel);
            }
        }
        channels
    }

    /// Sends a freshly recorded notice on each of its channels, through flood control.
    fn deliver(&mut self, myself: &ActorRef<NotifierMsg>, key: &str) {
        let Some(record) = self.records.get(key) else {
            return;
        };
        let job = record.notice.job.clone();
        let is_test = record.notice.kind == NoticeKind::Test;
        let queued: Vec<Channel> = record
            .deliveries
            .iter()
            .filter(|d| d.state == DeliveryState::Queued)
            .map(|d| d.channel.clone())
            .collect();
        let now_ms = self.clock.now_ms();
        for channel in queued {
            let admitted = match is_test {
                true => Admit::Now {
                    window_ends_ms: None,
                },
                false => self.flood.admit(&job, &channel, key, now_ms),
            };
            if let Admit::Now { window_ends_ms } = admitted {
                self.start_batch(myself, channel.clone(), vec![key.to_string()]);
                if let Some(ends_ms) = window_ends_ms {
                    self.schedule_window_end(myself, job.clone(), channel, ends_ms);
                }
            }
        }
    }

    fn schedule_window_end(
        &self,
        myself: &ActorRef<NotifierMsg>,
        job: String,
        channel: Channel,
        ends_ms: i64,
    ) {
        let wait_ms = (ends_ms - self.clock.now_ms()).max(0) as u64;
        myself.send_after(Duration::from_millis(wait_ms), move || {
            NotifierMsg::WindowEnd { job, channel }
        });
    }

    fn start_batch(&mut self, myself: &ActorRef<NotifierMsg>, channel: Channel, keys: Vec<String>) {
        let id = self.next_batch;
        self.next_batch += 1;
        let batch = Batch {
            channel,
            keys,
            attempts: 0,
        };
        self.batches.insert(id, batch);
        self.attempt(myself, id);
    }

    /// Renders a batch and sends it in a task of its own; the task reports back.
    fn attempt(&mut self, myself: &ActorRef<NotifierMsg>, id: u64) {
        let Some(batch) = self.batches.get(&id) else {
            return;
        };
        let notices: Vec<&Notice> = batch
            .keys
            .iter()
            .filter_map(|key| self.records.get(key))
            .map(|record| &record.notice)
            .collect();
        if notices.is_empty() {
            self.batches.remove(&id);
            return;
        }
        let window_secs = self.config.digest_window_ms / 1000;
        let rendered = render(&notices, &self.config.ui_url, window_secs);
        let mut to: Vec<String> = Vec::new();
        for address in notices.iter().flat_map(|n| n.recipients()) {
            if !to.contains(&address) {
                to.push(address);
            }
        }
        let message = Outgoing {
            channel: batch.channel.clone(),
            to,
            subject: rendered.subject,
            text: rendered.text,
            json: rendered.json.to_string(),
            secret: self.secret_for(&batch.channel),
            event: rendered.event,
            id: format!("{}+{}", batch.keys[0], batch.keys.len()),
        };
        let sending = self.transport.send(message);
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = sending.await;
            let _ = myself.send_message(NotifierMsg::Attempted { batch: id, result });
        });
    }

    fn secret_for(&self, channel: &Channel) -> Option<String> {
        let Channel::Webhook(url) = channel else {
            return None;
        };
        let configured = self.config.webhooks.iter().find(|hook| &hook.url == url);
        match configured {
            Some(hook) => hook.secret.clone(),
            None => self.config.job_webhook_secret.clone(),
        }
    }

    fn attempted(&mut self, myself: &ActorRef<NotifierMsg>, id: u64, result: SendResult) {
        let Some(batch) = self.batches.get_mut(&id) else {
            return;
        };
        batch.attempts += 1;
        let (attempts, channel, keys) = (batch.attempts, batch.channel.clone(), batch.keys.clone());
        let label = channel.kind();
        let now_ms = self.clock.now_ms();
        let give_up = result
            .as_ref()
            .is_err_and(|e| e.permanent || attempts >= self.config.max_attempts);
        match &result {
            Ok(()) => {
                metrics::counter!("dron_notifications_sent_total", "channel" => label).increment(1);
                self.batches.remove(&id);
            }
            Err(error) if give_up => {
                metrics::counter!("dron_notifications_failed_total", "channel" => label)
                    .increment(1);
                tracing::error!(channel = channel.describe(), %error, attempts, notices = keys.len(), "giving up on a notification");
                self.batches.remove(&id);
            }
            Err(error) => {
                metrics::counter!("dron_notifications_failed_total", "channel" => label)
                    .increment(1);
                let delay = self.backoff(attempts);
                tracing::warn!(channel = channel.describe(), %error, attempts, retry_in_ms = delay.as_millis() as u64, "notification not delivered; will retry");
                myself.send_after(delay, move || NotifierMsg::Retry { batch: id });
            }
        }
        let mut ops = Vec::new();
        for key in &keys {
            let Some(record) = self.records.get_mut(key) else {
                continue;
            };
            let delivery = record.deliveries.iter_mut().find(|d| d.channel == channel);
            if let Some(delivery) = delivery {
                delivery.attempts += 1;
                match &result {
                    Ok(()) => {
                        delivery.state = DeliveryState::Sent;
                        delivery.sent_ms = Some(now_ms);
                        delivery.sent_with = keys.len() as u32;
                    }
                    Err(error) => {
                        delivery.last_error = Some(error.message.clone());
                        if give_up {
                            delivery.state = DeliveryState::Failed;
                        }
                    }
                }
            }
            ops.push(NoticeOp::Put(record.clone()));
        }
        // Not awaited: if this write is lost to a crash, the message is sent once more after
        // the restart (at least once), which a receiver can spot by its id.
        drop(self.store.submit(ops));
        let tried: Vec<String> = keys.clone();
        for key in tried {
            self.answer_test_if_tried(&key);
        }
        self.publish_gauge();
    }

    /// `retry_backoff_ms × 2^(attempts − 1)`, capped.
    fn backoff(&self, attempts: u32) -> Duration {
        let doubled = self
            .config
            .retry_backoff_ms
            .saturating_mul(1 << attempts.saturating_sub(1).min(30));
        Duration::from_millis(doubled.min(self.config.retry_backoff_max_ms))
    }

    fn test(&mut self, myself: &ActorRef<NotifierMsg>, request: TestRequest, reply: TestReply) {
        let record = match self.test_record(request) {
            Ok(record) => record,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let key = record.notice.key();
        self.test_waiters.push((key.clone(), reply));
        self.recording.insert(key, record.clone());
        let written = self.write_new(myself, vec![record]);
        tokio::spawn(written);
    }

    fn test_record(&self, request: TestRequest) -> Result<NoticeRecord, CommandError> {
        let mut channels = Vec::new();
        let mut owner = String::new();
        let given = request.email.is_some() || request.webhook.is_some();
        if let Some(email) = request.email {
            if !self.config.email {
                let message = "no SMTP server is configured ([notify.smtp] in the config)";
                return Err(Invalid::new("email", message).into());
            }
            channels.push(Channel::Email);
            owner = email;
        }
        if let Some(url) = request.webhook {
            channels.push(Channel::Webhook(url));
        }
        if !given {
            if let (true, Some(to)) = (self.config.email, &self.config.test_recipient) {
                channels.push(Channel::Email);
                owner = to.clone();
            }
            let hooks = self.config.webhooks.iter();
            channels.extend(hooks.map(|hook| Channel::Webhook(hook.url.clone())));
        }
        if channels.is_empty() {
            let message = "no notification channel is configured ([notify.smtp], \
                           [[notify.webhooks]]): give \"email\" or \"webhook\"";
            return Err(Invalid::new("body", message).into());
        }
        let now_ms = self.clock.now_ms();
        let notice = Notice {
            job: TEST_JOB.to_string(),
            kind: NoticeKind::Test,
            target_ms: now_ms,
            at_ms: now_ms,
            owner,
            webhooks: Vec::new(),
            attempt: 0,
            task_id: None,
            exit_code: None,
            message: "sent on request (dron notifications test)".to_string(),
            count: 1,
            stderr_tail: String::new(),
        };
        Ok(NoticeRecord {
            notice,
            deliveries: channels.into_iter().map(Delivery::queued).collect(),
        })
    }

    /// Answers the test request for `key` once each of its channels has been tried.
    fn answer_test_if_tried(&mut self, key: &str) {
        let Some(record) = self.records.get(key) else {
            return;
        };
        let tried = record.deliveries.iter().all(|d| d.attempts > 0);
        if tried {
            let record = record.clone();
            self.answer_test(key, Ok(record));
        }
    }

    fn answer_test(&mut self, key: &str, answer: Result<NoticeRecord, CommandError>) {
        let Some(at) = self.test_waiters.iter().position(|(k, _)| k == key) else {
            return;
        };
        let (_, reply) = self.test_waiters.swap_remove(at);
        let _ = reply.send(answer);
    }

    /// The last lines of the run's stderr ("" when it has none, or never ran).
    async fn stderr_tail(&self, notice: &Notice) -> String {
        let task = notice.task_id.as_deref();
        let Some(dir) = task.and_then(|task| run_dir(&self.runs_root, task)) else {
            return String::new();
        };
        let lines = self.config.stderr_tail_lines;
        read_tail(&dir.join(STDERR_FILE), lines)
            .await
            .unwrap_or_default()
    }

    /// Keeps at most `keep` records, dropping the oldest delivered (or given-up) ones.
    fn trim(&mut self) {
        let excess = self.records.len().saturating_sub(self.config.keep);
        if excess == 0 {
            return;
        }
        let done = self.records.iter().filter(|(_, r)| !r.is_pending());
        let old: Vec<String> = done.take(excess).map(|(key, _)| key.clone()).collect();
        for key in &old {
            self.records.remove(key);
        }
        drop(
            self.store
                .submit(old.into_iter().map(NoticeOp::Delete).collect()),
        );
    }

    /// See [`NotifierMsg::Prune`]. In memory, and one write submitted (not awaited): the
    /// records are time-ordered, so it reads only what it forgets and what it must keep.
    fn prune(&mut self, before_ms: i64, limit: usize, dry_run: bool) -> Vec<String> {
        let old = self
            .records
            .iter()
            .take_while(|(_, r)| r.notice.at_ms < before_ms)
            .filter(|(_, r)| !r.is_pending())
            .take(limit);
        let keys: Vec<String> = old.map(|(key, _)| key.clone()).collect();
        if dry_run || keys.is_empty() {
            return keys;
        }
        for key in &keys {
            self.records.remove(key);
        }
        drop(
            self.store
                .submit(keys.iter().cloned().map(NoticeOp::Delete).collect()),
        );
        keys
    }

    fn publish_gauge(&self) {
        let queued = self.records.values().filter(|r| r.is_pending()).count();
        metrics::gauge!("dron_notifications_queued").set(queued as f64);
    }
}

/// The last `lines` lines of a file, from at most its last [`TAIL_BYTES`] bytes.
async fn read_tail(path: &Path, lines: usize) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await?;
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    // Reading from the middle of the file, the first line is a piece of one: drop it.
    let whole = &all[usize::from(start > 0).min(all.len())..];
    let kept = &whole[whole.len().saturating_sub(lines)..];
    let shortened = kept
        .iter()
        .map(|line| match line.char_indices().nth(TAIL_LINE_CHARS) {
            Some((cut, _)) => format!("{}...", &line[..cut]),
            None => line.to_string(),
        });
    Ok(shortened.collect::<Vec<_>>().join("\n"))
}

/// Hands a coordinator's notices to the notifier until it has recorded them, then calls
/// `done` with their keys (the coordinator drops them from its outbox). Runs in a task of its
/// own: a slow notifier never holds up a shard.
pub fn hand_over(
    notifier: ActorRef<NotifierMsg>,
    notices: Vec<Notice>,
    done: impl FnOnce(Vec<String>) + Send + 'static,
) {
    tokio::spawn(async move {
        let _counted = crate::in_flight::InFlight::start("dron_notices_in_flight");
        let ask = |reply| NotifierMsg::Record {
            notices: notices.clone(),
            reply,
        };
        if crate::in_flight::ask_until_taken(&notifier, ask, HAND_OVER_TIMEOUT).await {
            done(notices.iter().map(Notice::key).collect());
        }
    });
}

#[cfg(test)]
mod tests;
