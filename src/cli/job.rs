//! `dron job ...`: add, list, show, run, kill and delete jobs on a running server.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use super::client::{Client, Failure, Outcome, job_segment};
use super::table::{cell, pretty, render, time};

#[derive(Subcommand)]
pub enum JobAction {
    /// Create or replace a job from a Chronos job JSON file ('-' reads stdin).
    ///
    /// A job with a non-empty "parents" list is posted to /scheduler/dependency, any other to
    /// /scheduler/iso8601. Job files are JSON, or YAML when named *.yaml or *.yml.
    Add {
        /// The job file: one Chronos job as a JSON object.
        file: PathBuf,
    },
    /// List every job: trigger, success/error counts, last success and error.
    List {
        /// Print the server's JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a job and its live runs as JSON.
    Show { name: String },
    /// Run a job now (queued behind a running one unless the job is concurrent).
    Run { name: String },
    /// Kill a job's queued and running runs.
    Kill { name: String },
    /// Delete a job, its live runs and its history.
    Delete { name: String },
}

pub async fn job(client: &Client, action: JobAction) -> Outcome {
    match action {
        JobAction::Add { file } => add(client, &file).await,
        JobAction::List { json } => list(client, json).await,
        JobAction::Show { name } => show(client, &name).await,
        JobAction::Run { name } => {
            let path = format!("/scheduler/job/{}", job_segment(&name)?);
            client.call(Method::PUT, &path, None).await?;
            println!("started a run of job '{name}' (see: dron runs {name})");
            Ok(())
        }
        JobAction::Kill { name } => {
            let path = format!("/scheduler/task/kill/{}", job_segment(&name)?);
            client.call(Method::DELETE, &path, None).await?;
            println!("killed the live runs of job '{name}'");
            Ok(())
        }
        JobAction::Delete { name } => {
            let path = format!("/scheduler/job/{}", job_segment(&name)?);
            client.call(Method::DELETE, &path, None).await?;
            println!("deleted job '{name}'");
            Ok(())
        }
    }
}

async fn add(client: &Client, file: &Path) -> Outcome {
    let job = read_job(file)?;
    let dependent = save(client, &job).await?;
    let kind = if dependent { "dependent" } else { "scheduled" };
    println!("saved {kind} job '{}'", cell(&job["name"]));
    Ok(())
}

/// Creates or replaces one job; answers whether it is dependent.
pub(super) async fn save(client: &Client, job: &Value) -> Result<bool, Failure> {
    let dependent = match &job["parents"] {
        Value::Null => false,
        Value::Array(parents) => !parents.is_empty(),
        _ => true, // not a list: let the server name the field
    };
    let endpoint = if dependent {
        "/scheduler/dependency"
    } else {
        "/scheduler/iso8601"
    };
    client.call(Method::POST, endpoint, Some(job)).await?;
    Ok(dependent)
}

/// Reads and parses a job file; every failure names the file.
pub(super) fn read_job(file: &Path) -> Result<Value, Failure> {
    let job = read_document(file)?;
    if !job.is_object() {
        return Err(Failure::local(format!(
            "job file {} must hold one object (a Chronos job)",
            file.display()
        )));
    }
    Ok(job)
}

/// Reads and parses a JSON or YAML file (`-`: standard input); every failure names the file.
pub(super) fn read_document(file: &Path) -> Result<Value, Failure> {
    let shown = file.display();
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
    .map_err(|e| Failure::local(format!("cannot read job file {shown}: {e}")))?;
    let is_yaml = matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let job: Value = if is_yaml {
        serde_norway::from_str(&text)
            .map_err(|e| Failure::local(format!("job file {shown} is not valid YAML: {e}")))?
    } else {
        serde_json::from_str(&text)
            .map_err(|e| Failure::local(format!("job file {shown} is not valid JSON: {e}")))?
    };
    Ok(job)
}

async fn list(client: &Client, json: bool) -> Outcome {
    let jobs = client.call(Method::GET, "/scheduler/jobs", None).await?;
    if json {
        println!("{}", pretty(&jobs));
        return Ok(());
    }
    let mut jobs = jobs.as_array().cloned().unwrap_or_default();
    if jobs.is_empty() {
        println!("no jobs");
        return Ok(());
    }
    jobs.sort_by_key(|job| cell(&job["name"]));
    let rows: Vec<Vec<String>> = jobs.iter().map(job_row).collect();
    let headers = [
        "NAME",
        "TRIGGER",
        "OK",
        "ERRORS",
        "LAST SUCCESS",
        "LAST ERROR",
        "DISABLED",
    ];
    print!("{}", render(&headers, &rows));
    Ok(())
}

fn job_row(job: &Value) -> Vec<String> {
    vec![
        cell(&job["name"]),
        trigger(job),
        cell(&job["successCount"]),
        cell(&job["errorCount"]),
        time(&job["lastSuccess"]),
        time(&job["lastError"]),
        if job["disabled"] == true { "yes" } else { "no" }.to_string(),
    ]
}

/// The schedule of a scheduled job, `after a, b` for a dependent one, `on PATTERN` for one
/// triggered by events.
fn trigger(job: &Value) -> String {
    if let Some(pattern) = job["triggeredBy"].as_str() {
        return format!("on {pattern}");
    }
    let parents: Vec<String> = job["parents"]
        .as_array()
        .map(|p| p.iter().map(cell).collect())
        .unwrap_or_default();
    if parents.is_empty() {
        cell(&job["schedule"])
    } else {
        format!("after {}", parents.join(", "))
    }
}

async fn show(client: &Client, name: &str) -> Outcome {
    let path = format!("/api/jobs/{}", job_segment(name)?);
    let answer = client.call(Method::GET, &path, None).await?;
    println!("{}", pretty(&answer));
    Ok(())
}
