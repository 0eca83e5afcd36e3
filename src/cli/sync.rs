//! `dron sync DIR`: make the server's jobs match a directory of Chronos job files.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use chrono::Utc;
use dron_model::job::SECRET_PLACEHOLDER;
use dron_model::schedule::Schedule;
use reqwest::Method;
use serde_json::Value;

use super::client::{Client, Failure, Outcome, job_segment};
use super::job::{read_document, save};
use super::table::cell;

/// Server-maintained fields a file never sets: never compared.
const IGNORED: &[&str] = &[
    "successCount",
    "errorCount",
    "lastSuccess",
    "lastError",
    "errorsSinceLastSuccess",
];

pub async fn sync(client: &Client, dir: &Path, prune: bool, dry_run: bool) -> Outcome {
    let files = load(dir)?;
    let server = client.call(Method::GET, "/scheduler/jobs", None).await?;
    let server: BTreeMap<String, Value> = server
        .as_array()
        .into_iter()
        .flatten()
        .map(|job| (cell(&job["name"]), job.clone()))
        .collect();

    let order = parents_first(&files);
    let deletions = if prune {
        deletion_order(&files, &server)
    } else {
        Vec::new()
    };
    let total = order.len() + deletions.len();
    let progress = Progress::new(total);
    let mut failures = 0;
    let mut done = 0;
    for name in &order {
        let job = &files[name];
        let send = match server.get(name) {
            None => {
                println!("+ {name}");
                true
            }
            Some(current) => {
                let changes = differences(job, current);
                if changes.is_empty() {
                    println!("= {name}");
                }
                for change in &changes {
                    println!("~ {name}: {change}");
                }
                !changes.is_empty()
            }
        };
        if send
            && !dry_run
            && let Err(failure) = save(client, job).await
        {
            eprintln!("error: {name}: {}", failure.message);
            failures += 1;
        }
        done += 1;
        progress.show(done);
    }
    for name in &deletions {
        println!("- {name}");
        if !dry_run {
            let result = match job_segment(name) {
                Ok(segment) => {
                    let path = format!("/scheduler/job/{segment}");
                    client.call(Method::DELETE, &path, None).await.map(drop)
                }
                Err(failure) => Err(failure),
            };
            if let Err(failure) = result {
                eprintln!("error: {name}: {}", failure.message);
                failures += 1;
            }
        }
        done += 1;
        progress.show(done);
    }
    progress.end();
    if failures > 0 {
        return Err(Failure {
            code: 1,
            message: format!("{failures} request(s) failed"),
        });
    }
    Ok(())
}

/// Every job of every `*.json`, `*.yaml` and `*.yml` file of `dir`, parsed, by job name; any bad
/// file fails before anything is sent. A file holds one job, or a list of jobs: a Chronos job
/// list (`GET /scheduler/jobs`, e.g. a Chronos 3 export) saved as it is.
fn load(dir: &Path) -> Result<BTreeMap<String, Value>, Failure> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Failure::local(format!("cannot read directory {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_file() && is_job_file(path))
        .collect();
    paths.sort();
    let mut jobs: BTreeMap<String, Value> = BTreeMap::new();
    let mut sources: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in paths {
        let jobs_of_file = match read_document(&path)? {
            job @ Value::Object(_) => vec![job],
            Value::Array(list) if list.iter().all(Value::is_object) => list,
            _ => {
                return Err(Failure::local(format!(
                    "job file {} must hold one object (a Chronos job) or a list of them",
                    path.display()
                )));
            }
        };
        for job in jobs_of_file {
            let Some(name) = job["name"].as_str().map(str::to_string) else {
                return Err(Failure::local(format!(
                    "job file {} has a job without a \"name\" string",
                    path.display()
                )));
            };
            if let Some(other) = sources.get(&name) {
                let files = if other == &path {
                    format!("job file {} names job '{name}' twice", path.display())
                } else {
                    format!(
                        "job files {} and {} both name job '{name}'",
                        other.display(),
                        path.display()
                    )
                };
                return Err(Failure::local(files));
            }
            sources.insert(name.clone(), path.clone());
            jobs.insert(name, job);
        }
    }
    Ok(jobs)
}

fn parents(job: &Value) -> Vec<String> {
    job["parents"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Job names, each after the parents it names that are in `jobs` (a cycle: by name).
fn parents_first(jobs: &BTreeMap<String, Value>) -> Vec<String> {
    let mut order = Vec::new();
    let mut placed = BTreeSet::new();
    while placed.len() < jobs.len() {
        let ready: Vec<String> = jobs
            .iter()
            .filter(|(name, _)| !placed.contains(*name))
            .filter(|(_, job)| {
                parents(job)
                    .iter()
                    .all(|p| placed.contains(p) || !jobs.contains_key(p))
            })
            .map(|(name, _)| name.clone())
            .collect();
        let ready = if ready.is_empty() {
            // A cycle: the server will refuse it; send the rest by name.
            jobs.keys()
                .filter(|name| !placed.contains(*name))
                .cloned()
                .collect()
        } else {
            ready
        };
        for name in ready {
            placed.insert(name.clone());
            order.push(name);
        }
    }
    order
}

/// The server's jobs not in the directory, children before parents.
fn deletion_order(
    files: &BTreeMap<String, Value>,
    server: &BTreeMap<String, Value>,
) -> Vec<String> {
    let mut left: BTreeSet<String> = server
        .keys()
        .filter(|name| !files.contains_key(*name))
        .cloned()
        .collect();
    let mut order = Vec::new();
    while !left.is_empty() {
        // Parents named by the jobs that stay (the files) or are still to be deleted.
        let named: BTreeSet<String> = files
            .values()
            .chain(left.iter().filter_map(|name| server.get(name)))
            .flat_map(parents)
            .collect();
        let ready: Vec<String> = left
            .iter()
            .filter(|name| !named.contains(*name))
            .cloned()
            .collect();
        // Only parents of jobs that stay are left: delete them anyway; the server re-wires the
        // jobs that stay to their grandparents (or their schedule), as Chronos does.
        let ready = if ready.is_empty() {
            left.iter().cloned().collect()
        } else {
            ready
        };
        for name in ready {
            left.remove(&name);
            order.push(name);
        }
    }
    order
}

/// `field old -> new` for every field of the file that differs on the server. Secret
/// variables' values are never printed: the file's are masked as the server masks its own,
/// and since the server's cannot be compared, a file giving one always sends the job.
fn differences(file: &Value, server: &Value) -> Vec<String> {
    let Some(fields) = file.as_object() else {
        return Vec::new();
    };
    let zone = file["scheduleTimeZone"].as_str();
    let (masked, gives_secrets) = mask_secrets(fields);
    let mut changes: Vec<String> = masked
        .iter()
        .filter(|(field, _)| !IGNORED.contains(&field.as_str()))
        .filter(|(field, wanted)| {
            let current = &server[field.as_str()];
            match (field.as_str(), wanted, current) {
                ("schedule", Value::String(wanted), Value::String(current)) => {
                    !same_schedule(wanted, current, zone)
                }
                _ => !same(field, wanted, current),
            }
        })
        .map(|(field, wanted)| {
            format!(
                "{field} {} -> {}",
                shown(&server[field.as_str()]),
                shown(wanted)
            )
        })
        .collect();
    if gives_secrets && changes.is_empty() {
        changes.push("environmentVariables: secret values sent (never shown to compare)".into());
    }
    changes
}

/// The file's fields with every secret variable's value replaced by the placeholder the server
/// answers with; and whether the file gave a secret value (not the placeholder itself).
fn mask_secrets(fields: &serde_json::Map<String, Value>) -> (serde_json::Map<String, Value>, bool) {
    let mut masked = fields.clone();
    let mut gives_secrets = false;
    let variables = masked
        .get_mut("environmentVariables")
        .and_then(Value::as_array_mut);
    for variable in variables.into_iter().flatten() {
        if variable["secret"] != Value::Bool(true) {
            continue;
        }
        let value = variable["value"].as_str().unwrap_or_default();
        gives_secrets |= !value.is_empty() && value != SECRET_PLACEHOLDER;
        variable["value"] = SECRET_PLACEHOLDER.into();
    }
    (masked, gives_secrets)
}

fn shown(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

fn same(field: &str, wanted: &Value, current: &Value) -> bool {
    match (wanted, current) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        // Chronos writes 0 for no limit; the server answers no limit with no field.
        (Value::Number(a), Value::Null) if field == "maxCompletionTime" => a.as_f64() == Some(0.0),
        // Chronos writes "" for the default zone; the server answers it as "UTC".
        (Value::String(a), Value::String(b)) if field == "scheduleTimeZone" => {
            a == b || (a.trim().is_empty() && b == "UTC")
        }
        // An absent list or string on the server equals an empty one in the file.
        (Value::Array(a), Value::Null) => a.is_empty(),
        (Value::String(a), Value::Null) => a.is_empty(),
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| same(k, v, &b[k.as_str()]))
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same("", x, y))
        }
        _ => wanted == current,
    }
}

/// An ISO 8601 schedule with an empty start (`R//P1D`, `R5//PT1H`) matches whatever start the
/// server made explicit, when repetitions and period match. Otherwise the file's schedule
/// matches when the server's is its canonical form (as Chronos writes a start,
/// `2017-03-02T12:00:00.000Z`, the server answers `2017-03-02T12:00:00Z`).
fn same_schedule(wanted: &str, current: &str, zone: Option<&str>) -> bool {
    if wanted == current {
        return true;
    }
    let w: Vec<&str> = wanted.split('/').collect();
    let c: Vec<&str> = current.split('/').collect();
    if w.len() == 3 && c.len() == 3 && w[1].is_empty() {
        return w[0] == c[0] && w[2] == c[2];
    }
    Schedule::parse(wanted, zone, Utc::now()).is_ok_and(|s| s.canonical() == current)
}

/// `synced k/n` on stderr, when stderr is a terminal or there are many jobs.
struct Progress {
    total: usize,
    terminal: bool,
    on: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        Progress {
            total,
            terminal,
            on: total > 0 && (terminal || total > 20),
        }
    }

    fn show(&self, done: usize) {
        if !self.on {
            return;
        }
        if self.terminal {
            eprint!("\rsynced {done}/{}", self.total);
        } else {
            eprintln!("synced {done}/{}", self.total);
        }
    }

    fn end(&self) {
        if self.on && self.terminal {
            eprintln!();
        }
    }
}

fn is_job_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("json" | "yaml" | "yml")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chronos_spellings_equal_the_servers_answer() {
        let file = json!({
            "name": "a", "schedule": "R/2017-03-02T12:00:00.000Z/PT24H", "scheduleTimeZone": "",
            "maxCompletionTime": 0, "disk": 256.0, "successCount": 4, "lastSuccess": "x"
        });
        let server = json!({
            "name": "a", "schedule": "R/2017-03-02T12:00:00Z/PT24H", "scheduleTimeZone": "UTC",
            "disk": 256, "successCount": 0, "lastSuccess": ""
        });
        assert!(differences(&file, &server).is_empty());
        let zoned = json!({
            "schedule": "R5/2026-11-24T02:30:00.000+01:00/P1D", "scheduleTimeZone": "Europe/Paris"
        });
        let answer = json!({
            "schedule": "R5/2026-11-24T02:30:00/P1D", "scheduleTimeZone": "Europe/Paris"
        });
        assert!(differences(&zoned, &answer).is_empty());
    }

    #[test]
    fn secret_values_are_never_printed_and_always_sent() {
        let server = json!({"environmentVariables": [
            {"name": "T", "value": SECRET_PLACEHOLDER, "secret": true}, {"name": "P", "value": "1"}
        ]});
        let exported = server.clone();
        assert!(differences(&exported, &server).is_empty());
        let with_value = json!({"environmentVariables": [
            {"name": "T", "value": "hunter2", "secret": true}, {"name": "P", "value": "2"}
        ]});
        let changes = differences(&with_value, &server);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(!changes[0].contains("hunter2") && changes[0].contains("\"2\""));
        let only_secret = json!({"environmentVariables": [
            {"name": "T", "value": "hunter2", "secret": true}, {"name": "P", "value": "1"}
        ]});
        let changes = differences(&only_secret, &server);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(!changes[0].contains("hunter2"), "{changes:?}");
    }

    #[test]
    fn real_changes_still_show() {
        let server = json!({
            "schedule": "R/2017-03-02T12:00:00Z/PT24H", "scheduleTimeZone": "UTC",
            "maxCompletionTime": 5000
        });
        for (file, field) in [
            (
                json!({"schedule": "R/2017-03-02T13:00:00.000Z/PT24H"}),
                "schedule",
            ),
            (
                json!({"schedule": "R/2017-03-02T12:00:00.000Z/PT1H"}),
                "schedule",
            ),
            (
                json!({"scheduleTimeZone": "Europe/Paris"}),
                "scheduleTimeZone",
            ),
            (json!({"maxCompletionTime": 0}), "maxCompletionTime"),
        ] {
            let changes = differences(&file, &server);
            assert_eq!(changes.len(), 1, "{file}: {changes:?}");
            assert!(changes[0].starts_with(field), "{changes:?}");
        }
        let none = json!({"scheduleTimeZone": "UTC"});
        assert!(differences(&json!({"maxCompletionTime": 60}), &none).len() == 1);
        assert!(differences(&json!({"scheduleTimeZone": ""}), &none).is_empty());
    }
}
