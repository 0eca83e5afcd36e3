//! `dron runs NAME`: a job's run history, skipped ranges included.

use reqwest::Method;
use serde_json::Value;

use super::client::{Client, Outcome, job_segment};
use super::table::{cell, pretty, render, time};

pub async fn runs(client: &Client, name: &str, limit: Option<u32>, json: bool) -> Outcome {
    let mut path = format!("/api/jobs/{}/runs", job_segment(name)?);
    if let Some(limit) = limit {
        path.push_str(&format!("?limit={limit}"));
    }
    let answer = client.call(Method::GET, &path, None).await?;
    if json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    let runs = answer["runs"].as_array().cloned().unwrap_or_default();
    if runs.is_empty() {
        println!("no runs of job '{name}' yet");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = runs.iter().map(run_row).collect();
    let headers = [
        "TARGET", "STATE", "ATTEMPT", "STARTED", "ENDED", "EXIT", "MESSAGE",
    ];
    print!("{}", render(&headers, &rows));
    Ok(())
}

fn run_row(run: &Value) -> Vec<String> {
    if run["kind"] == "skipped" {
        return skipped_row(run);
    }
    vec![
        time(&run["target"]),
        cell(&run["state"]),
        cell(&run["attempt"]),
        time(&run["started"]),
        time(&run["ended"]),
        cell(&run["exitCode"]),
        cell(&run["message"]),
    ]
}

/// A skipped range: its first target, and how many targets up to when.
fn skipped_row(run: &Value) -> Vec<String> {
    let message = format!(
        "{} targets, up to {}: {}",
        cell(&run["count"]),
        time(&run["until"]),
        cell(&run["message"])
    );
    vec![
        time(&run["firstTarget"]),
        "skipped".to_string(),
        "-".to_string(),
        "-".to_string(),
        "-".to_string(),
        "-".to_string(),
        message,
    ]
}
