//! `dron sync DIR`: make the server's jobs match a directory of Chronos job files.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::Value;

use super::client::{Client, Failure, Outcome, job_segment};
use super::job::{read_job, save};
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

/// Every `*.json`, `*.yaml` and `*.yml` file of `dir`, parsed, by job name; any bad file fails before anything is sent.
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
        let job = read_job(&path)?;
        let Some(name) = job["name"].as_str().map(str::to_string) else {
            return Err(Failure::local(format!(
                "job file {} has no \"name\" string",
                path.display()
            )));
        };
        if let Some(other) = sources.get(&name) {
            return Err(Failure::local(format!(
                "job files {} and {} both name job '{name}'",
                other.display(),
                path.display()
            )));
        }
        sources.insert(name.clone(), path);
        jobs.insert(name, job);
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

/// `field old -> new` for every field of the file that differs on the server.
fn differences(file: &Value, server: &Value) -> Vec<String> {
    let Some(fields) = file.as_object() else {
        return Vec::new();
    };
    fields
        .iter()
        .filter(|(field, _)| !IGNORED.contains(&field.as_str()))
        .filter(|(field, wanted)| !same(field, wanted, &server[field.as_str()]))
        .map(|(field, wanted)| {
            format!(
                "{field} {} -> {}",
                shown(&server[field.as_str()]),
                shown(wanted)
            )
        })
        .collect()
}

fn shown(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

fn same(field: &str, wanted: &Value, current: &Value) -> bool {
    match (wanted, current) {
        (Value::String(wanted), Value::String(current)) if field == "schedule" => {
            same_schedule(wanted, current)
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
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
/// server made explicit, when repetitions and period match.
fn same_schedule(wanted: &str, current: &str) -> bool {
    if wanted == current {
        return true;
    }
    let w: Vec<&str> = wanted.split('/').collect();
    let c: Vec<&str> = current.split('/').collect();
    w.len() == 3 && c.len() == 3 && w[1].is_empty() && w[0] == c[0] && w[2] == c[2]
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
