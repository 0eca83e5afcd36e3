//! Jobs that record their own runs (each run appends its task id to a file), and the check
//! that every target of their schedule ran exactly once: what the cluster and partition
//! tests judge a failover by.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use super::targets;

/// Every recording job fires every `INTERVAL_S` seconds.
pub const INTERVAL_S: i64 = 2;

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A job that records each run's task id in `<out>/<name>`, firing every INTERVAL_S from
/// `start_ms`, with an epsilon long enough to cover a failover.
pub fn recording_job(name: &str, out: &Path, start_ms: i64) -> Value {
    let start = chrono::DateTime::from_timestamp_millis(start_ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({
        "name": name,
        "command": format!("echo $DRON_TASK_ID >> {}/{name}", out.display()),
        "schedule": format!("R/{start}/PT{INTERVAL_S}S"),
        "epsilon": "PT30S",
        "retries": 0,
        "cpus": 0.1,
        "mem": 16,
    })
}

/// Checks every job's recorded targets: none twice, and every target of its schedule from
/// `start_ms` up to `until_ms` present.
pub fn check_targets(out: &Path, names: &[String], start_ms: i64, until_ms: i64, logs: &str) {
    let mut problems = Vec::new();
    for name in names {
        let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
        for target in targets(&out.join(name)) {
            *counts.entry(target).or_default() += 1;
        }
        for (target, count) in &counts {
            if *count > 1 {
                problems.push(format!("{name}: target {target} ran {count} times"));
            }
        }
        let mut target = start_ms;
        while target <= until_ms {
            if !counts.contains_key(&target) {
                problems.push(format!("{name}: target {target} never ran"));
            }
            target += INTERVAL_S * 1000;
        }
    }
    assert!(problems.is_empty(), "{problems:#?}\n{logs}");
}
