//! `dron backfill JOB --from --to`, `dron backfill list|show|cancel`, `dron rerun JOB TARGET`.

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Client, Failure, Outcome, job_segment};
use super::table::{cell, pretty, render, time};

#[derive(Args)]
pub struct StartBackfill {
    /// The scheduled job to run over past logical times.
    pub job: Option<String>,
    /// The first logical time (RFC 3339, e.g. 2026-11-01T00:00:00Z, or Unix ms).
    #[arg(long)]
    pub from: Option<String>,
    /// The last logical time (included).
    #[arg(long)]
    pub to: Option<String>,
    /// Also run every job downstream of it (parents, job: dependencies) for the same times.
    #[arg(long)]
    pub downstream: bool,
    /// Runs of each job at once, at most.
    #[arg(long, default_value_t = 1)]
    pub parallel: u32,
    /// Run targets that already succeeded too (left alone by default).
    #[arg(long)]
    pub rerun_succeeded: bool,
    /// Wait, showing progress, until the backfill has finished.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Subcommand)]
pub enum BackfillAction {
    /// List backfills, newest first.
    List {
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one backfill, per job.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        /// Wait, showing progress, until it has finished.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Cancel a backfill: nothing new starts; runs already going finish (or, with --kill,
    /// are killed).
    Cancel {
        id: String,
        #[arg(long)]
        kill: bool,
    },
}

/// `dron backfill`: starts one (JOB and a range), or looks at them (`action`).
pub async fn backfill(
    client: &Client,
    action: Option<BackfillAction>,
    start: StartBackfill,
) -> Outcome {
    match action {
        Some(BackfillAction::List { json }) => list(client, json).await,
        Some(BackfillAction::Show { id, json, follow }) => match follow {
            true => follow_backfill(client, &id).await,
            false => show(client, &id, json).await,
        },
        Some(BackfillAction::Cancel { id, kill }) => {
            let kill = if kill { "?kill=true" } else { "" };
            let path = format!("/api/backfills/{}{kill}", id_segment(&id)?);
            let answer = client.call(Method::DELETE, &path, None).await?;
            println!("backfill {id} cancelled: nothing new starts");
            print_summary(&answer);
            Ok(())
        }
        None => start_backfill(client, start).await,
    }
}

async fn start_backfill(client: &Client, start: StartBackfill) -> Outcome {
    let missing = |what: &str| {
        Failure::local(format!(
            "{what} is needed: dron backfill JOB --from TIME --to TIME"
        ))
    };
    let job = start.job.ok_or_else(|| missing("JOB"))?;
    let from = start.from.ok_or_else(|| missing("--from"))?;
    let to = start.to.ok_or_else(|| missing("--to"))?;
    let body = json!({
        "from": from,
        "to": to,
        "downstream": start.downstream,
        "parallel": start.parallel,
        "rerunSucceeded": start.rerun_succeeded,
    });
    let path = format!("/api/jobs/{}/backfill", job_segment(&job)?);
    let answer = client.call(Method::POST, &path, Some(&body)).await?;
    let id = answer["id"].as_str().unwrap_or_default().to_string();
    println!("backfill {id} started");
    match start.follow {
        true => follow_backfill(client, &id).await,
        false => Ok(()),
    }
}

/// `dron rerun JOB TARGET [--downstream]`.
pub async fn rerun(
    client: &Client,
    job: &str,
    target: &str,
    downstream: bool,
    follow: bool,
) -> Outcome {
    let path = format!(
        "/api/jobs/{}/runs/{}/rerun",
        job_segment(job)?,
        job_segment(target)?
    );
    let body = json!({ "downstream": downstream });
    let answer = client.call(Method::POST, &path, Some(&body)).await?;
    let id = answer["id"].as_str().unwrap_or_default().to_string();
    println!("rerun {id} started");
    match follow {
        true => follow_backfill(client, &id).await,
        false => Ok(()),
    }
}

async fn list(client: &Client, json: bool) -> Outcome {
    let answer = client.call(Method::GET, "/api/backfills", None).await?;
    if json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    let backfills = answer["backfills"].as_array().cloned().unwrap_or_default();
    if backfills.is_empty() {
        println!("no backfills");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = backfills
        .iter()
        .map(|b| {
            vec![
                cell(&b["id"]),
                cell(&b["job"]),
                time(&b["from"]),
                time(&b["to"]),
                cell(&b["state"]),
                progress_text(b),
            ]
        })
        .collect();
    let headers = ["ID", "JOB", "FROM", "TO", "STATE", "PROGRESS"];
    print!("{}", render(&headers, &rows));
    Ok(())
}

async fn show(client: &Client, id: &str, json: bool) -> Outcome {
    let answer = status(client, id).await?;
    if json {
        println!("{}", pretty(&answer));
    } else {
        print_summary(&answer);
    }
    Ok(())
}

async fn status(client: &Client, id: &str) -> Result<Value, Failure> {
    let path = format!("/api/backfills/{}", id_segment(id)?);
    client.call(Method::GET, &path, None).await
}

/// Polls the backfill until it is finished or cancelled (and nothing runs): a progress bar
/// on a terminal, a line per change elsewhere; then the summary. Exit 1 if a run failed.
async fn follow_backfill(client: &Client, id: &str) -> Outcome {
    let terminal = std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    });
    let mut last = String::new();
    let answer = loop {
        let answer = status(client, id).await?;
        let done = answer["succeeded"].as_u64().unwrap_or(0)
            + answer["failed"].as_u64().unwrap_or(0)
            + answer["upstreamFailed"].as_u64().unwrap_or(0);
        let message = progress_text(&answer);
        match &bar {
            Some(bar) => {
                bar.set_length(answer["total"].as_u64().unwrap_or(0));
                bar.set_position(done);
                bar.set_message(message);
            }
            None if message != last => {
                eprintln!("{message}");
                last = message;
            }
            None => {}
        }
        let state = answer["state"].as_str().unwrap_or("");
        let running = answer["running"].as_u64().unwrap_or(0);
        if state == "finished" || (state == "cancelled" && running == 0) {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    print_summary(&answer);
    match answer["failed"].as_u64().unwrap_or(0) {
        0 => Ok(()),
        failed => Err(Failure {
            code: 1,
            message: format!("{failed} run(s) of backfill {id} failed"),
        }),
    }
}

fn progress_text(b: &Value) -> String {
    format!(
        "{} succeeded, {} failed, {} running, {} waiting of {}",
        cell(&b["succeeded"]),
        cell(&b["failed"]),
        cell(&b["running"]),
        cell(&b["waiting"]),
        cell(&b["total"]),
    )
}

fn print_summary(b: &Value) {
    println!(
        "backfill {} of {} from {} to {}: {} ({})",
        cell(&b["id"]),
        cell(&b["job"]),
        time(&b["from"]),
        time(&b["to"]),
        cell(&b["state"]),
        progress_text(b)
    );
    let jobs = b["jobs"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let failed: Vec<String> = j["failedTargets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(time)
                .collect();
            vec![
                cell(&j["job"]),
                cell(&j["succeeded"]),
                cell(&j["failed"]),
                cell(&j["running"]),
                cell(&j["waiting"]),
                cell(&j["upstreamFailed"]),
                cell(&j["leftAlone"]),
                failed.join(", "),
            ]
        })
        .collect();
    let headers = [
        "JOB",
        "SUCCEEDED",
        "FAILED",
        "RUNNING",
        "WAITING",
        "UPSTREAM FAILED",
        "LEFT ALONE",
        "FAILED TARGETS",
    ];
    print!("{}", render(&headers, &rows));
}

fn id_segment(id: &str) -> Result<String, Failure> {
    match dron_model::backfill::valid_id(id) {
        true => Ok(id.to_string()),
        false => Err(Failure::local(format!("'{id}' is not a backfill id"))),
    }
}
