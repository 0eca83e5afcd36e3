//! The shard's scheduling rules, without actors, storage or processes, by concern.

mod backfill;
mod deps;
mod firing;
mod recovery;
mod status;

use std::sync::Arc;

use dron_model::ids::parse_task_id;
use dron_model::instance::{HistoryEntry, InstanceRecord, InstanceState, RunCause, SkippedTargets};
use dron_model::job::{JobKind, JobRequest, JobSpec};
use dron_model::notice::{Notice, NoticeKind};
use dron_model::resource::{EventStatus, ResourceEvent, ResourceRecord};
use dron_model::ring::Ring;

use super::*;
use crate::error::CommandError;
use crate::store::{
    MemoryResourceStore, MemoryStore, ResourceOp, ResourceStore, ShardSnapshot, ShardStore, StoreOp,
};
use crate::views::RunState;
use dron_task::{TaskEnd, TaskEvent, TaskUpdate};

fn no_resources() -> Arc<MemoryResourceStore> {
    Arc::new(MemoryResourceStore::default())
}

/// Answers the lookups an outbox asks for against `store`, as the coordinator does: the
/// found resources release their waiters, with their effects in `out`.
fn look_up(shard: &mut Shard, store: &MemoryResourceStore, now_ms: i64, out: &mut Outbox) {
    let asked = std::mem::take(&mut out.lookups);
    let found: Vec<String> = asked
        .into_iter()
        .filter(|resource| store.get(resource).unwrap().is_some())
        .collect();
    shard.resources_found(&found, now_ms, out);
}

/// The announcement of a success of `job` for logical time `at_ms`, as the bus applies it.
fn success_of(job: &str, at_ms: i64) -> ResourceEvent {
    ResourceEvent::ready(format!("job:{job}@{at_ms}"), Some(at_ms))
}

/// Applies the announcement of a success of `parent` at `at_ms` to `shard`.
fn parent_succeeded(shard: &mut Shard, parent: &str, at_ms: i64, out: &mut Outbox) {
    shard.resource_ready(&success_of(parent, at_ms), at_ms, out);
}

const T0: i64 = 1_795_428_000_000; // 2026-11-23T10:00:00Z

fn spec(json: serde_json::Value, kind: JobKind) -> JobSpec {
    let request: JobRequest = serde_json::from_value(json).unwrap();
    request.validate(kind, ms_to_time(T0)).unwrap()
}

fn every_second(name: &str) -> JobSpec {
    spec(
        serde_json::json!({"name": name, "command": "true", "schedule": "R/2026-11-23T10:00:00Z/PT1S"}),
        JobKind::Scheduled,
    )
}

fn empty_shard() -> Shard {
    Shard::recover(0, ShardConfig::default(), ShardSnapshot::default(), T0).0
}

fn ended(task_id: &str, end: TaskEnd) -> TaskUpdate {
    TaskUpdate::new(task_id, TaskEvent::Ended { end, at_ms: 0 })
}

fn tick(shard: &mut Shard, now_ms: i64) -> Outbox {
    let mut out = Outbox::default();
    shard.tick(now_ms, &mut out);
    out
}

/// The runs an outbox appends to history.
fn history_runs(out: &Outbox) -> Vec<InstanceRecord> {
    out.ops
        .iter()
        .filter_map(|op| match op {
            StoreOp::AppendHistory(HistoryEntry::Run(run)) => Some(run.clone()),
            _ => None,
        })
        .collect()
}

fn satisfy(store: &MemoryResourceStore, resource: &str) -> ResourceEvent {
    let record = ResourceRecord {
        resource: resource.to_string(),
        at_ms: T0,
        recorded_ms: T0,
        meta_json: String::new(),
    };
    drop(store.submit(vec![ResourceOp::Satisfy(record)]));
    ResourceEvent::ready(resource, Some(T0))
}

fn hourly_waiting_for(templates: &[&str]) -> JobSpec {
    spec(
        serde_json::json!({
            "name": "load", "command": "true", "schedule": "R/2026-11-23T10:00:00Z/PT1H",
            "dependsOn": templates, "waitTimeout": "PT30M"
        }),
        JobKind::Scheduled,
    )
}
