//! Following a run in the logs. Every actor on a run's path (coordinator → broker → agent →
//! broker → router → coordinator) enters a `run` span, with the fields `job`, `task` (the task
//! id) and, where the hop knows it, `shard`, while it acts for that run, so its log lines name
//! the run whatever the message that carried it:
//!
//! ```text
//! DEBUG run{job="nightly" task="ct:1795428000000:0:nightly:" shard=1}: dron_actors::coordinator: launch released
//! DEBUG run{job="nightly" task="ct:1795428000000:0:nightly:"}: dron_actors::broker: placed agent="local"
//! ```
//!
//! and `DRON_LOG='info,[run{job=nightly}]=debug'` shows one job's runs and nothing else.
//!
//! Each span is a root (`parent: None`): the hop that enters one replaces whatever span the
//! message arrived with (ractor hands a handler its sender's span), so a line is never
//! attributed to another run, and spans never nest. When nothing is logged at `debug` (the
//! default), a hop costs about a nanosecond: one check of the global level, no span, no
//! field computed, nothing allocated (measured against no tracing at all: docs/architecture.md).

use tracing::span::EnteredSpan;

/// Enters the run's span at a hop that knows its shard (the coordinator, the router), until
/// the answer is dropped.
#[inline]
pub fn enter_on_shard(task_id: &str, shard: u32) -> Option<EnteredSpan> {
    // Nothing at all unless something is logged at debug somewhere: a disabled span still
    // costs its creation, entry and drop (about 20 ns a hop, with tracing's `log` feature,
    // which dron's dependencies turn on); this check costs one atomic load.
    tracing::level_enabled!(tracing::Level::DEBUG).then(|| {
        let span = tracing::debug_span!(
            parent: None,
            "run",
            job = job_of(task_id),
            task = task_id,
            shard
        );
        span.entered()
    })
}

/// Enters the run's span at a hop that does not know its shard (the broker, the agents).
#[inline]
pub fn enter(task_id: &str) -> Option<EnteredSpan> {
    tracing::level_enabled!(tracing::Level::DEBUG).then(|| {
        let span = tracing::debug_span!(parent: None, "run", job = job_of(task_id), task = task_id);
        span.entered()
    })
}

/// The job named in a task id (`ct:TARGET:ATTEMPT:JOB:`), without allocating; empty for a
/// foreign id.
fn job_of(task_id: &str) -> &str {
    let job = task_id
        .strip_prefix("ct:")
        .and_then(|rest| rest.split(':').nth(2));
    job.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use dron_model::ids::task_id;
    use dron_model::ring::Ring;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    use super::*;
    use crate::testkit::{System, T0, wait_until};

    #[test]
    fn the_job_is_read_from_the_task_id() {
        let id = task_id("export.users", 1_700_000_000_123, 2);
        assert_eq!(job_of(&id), "export.users");
        assert_eq!(job_of("ct:1:0:a:--flag"), "a");
        assert_eq!(job_of("mesos-task-7"), "");
    }

    /// A span's or an event's fields, as text.
    #[derive(Debug, Default, Clone, PartialEq)]
    struct Fields(HashMap<String, String>);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().into(), format!("{value:?}"));
        }

        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().into(), value.into());
        }
    }

    /// A log line: its message and the fields of the span it was in.
    #[derive(Debug, Clone)]
    struct Line {
        message: String,
        span: Option<Fields>,
    }

    /// Records every `dron_actors` event at debug or above logged on a thread that
    /// [`record_here`] marked, with the span it was logged in (one thread: the tests' runtime
    /// is single-threaded).
    ///
    /// It is the global subscriber of this test binary rather than a scoped one: tracing
    /// caches per callsite whether any subscriber wants it, and a callsite that another
    /// test's thread registers while a scoped subscriber is being set can stay cached as
    /// unwanted (this test failed one run in five that way). The global one says "ask me each
    /// time" for every callsite, from before this test's first line.
    #[derive(Default)]
    struct Recorder {
        next_id: AtomicU64,
        spans: Mutex<HashMap<u64, Fields>>,
        entered: Mutex<Vec<u64>>,
        lines: Mutex<Vec<Line>>,
    }

    thread_local! {
        static RECORDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Records what this thread logs from now on, in the answer.
    fn record_here() -> &'static Recorder {
        static RECORDER: std::sync::OnceLock<Arc<Recorder>> = std::sync::OnceLock::new();
        let recorder = RECORDER.get_or_init(|| {
            let recorder = Arc::new(Recorder::default());
            tracing::subscriber::set_global_default(recorder.clone())
                .expect("no other subscriber in these tests");
            recorder
        });
        RECORDING.with(|recording| recording.set(true));
        recorder
    }

    impl Subscriber for Recorder {
        fn register_callsite(
            &self,
            _: &'static Metadata<'static>,
        ) -> tracing::subscriber::Interest {
            tracing::subscriber::Interest::sometimes()
        }

        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            RECORDING.with(|recording| recording.get())
                && metadata.target().starts_with("dron_actors")
                && *metadata.level() <= tracing::Level::DEBUG
        }

        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
            let mut fields = Fields::default();
            span.record(&mut fields);
            self.spans.lock().unwrap().insert(id, fields);
            Id::from_u64(id)
        }

        fn record(&self, span: &Id, values: &Record<'_>) {
            if let Some(fields) = self.spans.lock().unwrap().get_mut(&span.into_u64()) {
                values.record(fields);
            }
        }

        fn record_follows_from(&self, _: &Id, _: &Id) {}

        fn event(&self, event: &Event<'_>) {
            let mut fields = Fields::default();
            event.record(&mut fields);
            let current = self.entered.lock().unwrap().last().copied();
            let span = current.and_then(|id| self.spans.lock().unwrap().get(&id).cloned());
            let message = fields.0.remove("message").unwrap_or_default();
            self.lines.lock().unwrap().push(Line { message, span });
        }

        fn enter(&self, span: &Id) {
            self.entered.lock().unwrap().push(span.into_u64());
        }

        fn exit(&self, span: &Id) {
            let mut entered = self.entered.lock().unwrap();
            if let Some(at) = entered.iter().rposition(|id| *id == span.into_u64()) {
                entered.remove(at);
            }
        }
    }

    /// One run's way through the real coordinator, broker, local agent and router: every line
    /// a hop logs for it is in its span, which names the job, the task and (where the hop
    /// knows it) the shard; no line about it is logged in another run's span.
    #[tokio::test(start_paused = true)]
    async fn each_hop_of_a_run_logs_in_the_runs_span() {
        const AT: i64 = T0 + 1000;
        let recorder = record_here();
        let runs = tempfile::tempdir().unwrap();
        let system = System::start_with_local_agent(2, runs.path()).await;
        // A callsite another test's thread registered while the subscriber was being set
        // may have been cached as unwanted: decide again, now that it is set.
        tracing::callsite::rebuild_interest_cache();
        for name in ["nightly", "hourly"] {
            let job = serde_json::json!({
                "name": name, "command": "true", "builtinSleepMs": 100,
                "schedule": "R/2026-11-23T10:00:01Z/PT1H",
            });
            system.put(job).await;
        }
        for name in ["nightly", "hourly"] {
            wait_until("the run to succeed", Duration::from_secs(5), || async {
                system.succeeded(name).await == [AT]
            })
            .await;
        }
        // Its shard's coordinator recorded the end (the answer above): the last hop.
        let lines = recorder.lines.lock().unwrap().clone();
        let shard = Ring::new(2).owner("nightly").to_string();
        let task = task_id("nightly", AT, 0);
        let in_span_of =
            |line: &Line, task: &str| line.span.as_ref().is_some_and(|s| s.0["task"] == task);
        let in_span = |line: &Line| in_span_of(line, &task);
        let hops = [
            ("launch staged", true),   // coordinator: the instance started
            ("launch released", true), // coordinator: durable, sent to the broker
            ("launch queued", false),  // broker
            ("placed", false),         // broker: on the local agent
            ("launching", false),      // local agent
            ("reported", false),       // local agent: started, ended
            ("status", false),         // broker
            ("status routed", true),   // router
            ("status applied", true),  // coordinator
            ("run ended", true),       // coordinator
        ];
        for (message, on_shard) in hops {
            let line = lines.iter().find(|l| l.message == message && in_span(l));
            let Some(Line {
                span: Some(span), ..
            }) = line
            else {
                panic!("no '{message}' line in the run's span: {lines:#?}");
            };
            assert_eq!(span.0["job"], "nightly", "{message}");
            assert_eq!(span.0.get("shard"), on_shard.then_some(&shard), "{message}");
        }
        // The other job's run went the same way, in spans of its own: no line in one run's
        // span is about the other.
        let other = task_id("hourly", AT, 0);
        let ours = lines.iter().filter(|line| in_span(line));
        let theirs = lines.iter().filter(|line| in_span_of(line, &other));
        assert_eq!(ours.clone().count(), theirs.count());
        for line in ours {
            assert!(!format!("{line:?}").contains("hourly"), "{line:?}");
        }
    }
}
