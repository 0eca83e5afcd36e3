//! `dron next NAME`: a job's next targets, in UTC and in its time zone.

use reqwest::Method;

use super::client::{Client, Outcome, job_segment};
use super::table::{cell, render, time};

pub async fn next(client: &Client, name: &str, n: Option<u32>) -> Outcome {
    let mut path = format!("/api/jobs/{}/next", job_segment(name)?);
    if let Some(n) = n {
        path.push_str(&format!("?n={n}"));
    }
    let answer = client.call(Method::GET, &path, None).await?;
    let targets = answer["targets"].as_array().cloned().unwrap_or_default();
    if let Some(pattern) = answer["triggeredBy"].as_str() {
        println!("job '{name}' runs on each event for a resource matching {pattern}");
        return Ok(());
    }
    if let Some(parents) = answer["parents"].as_array() {
        let parents: Vec<String> = parents.iter().map(cell).collect();
        println!(
            "job '{name}' is dependent: it runs when its parents succeed ({})",
            parents.join(", ")
        );
        return Ok(());
    }
    if targets.is_empty() {
        println!("job '{name}' has no more targets");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|target| {
            vec![
                time(&target["utc"]),
                local(&target["local"]),
                cell(&target["abbreviation"]),
                if target["offsetChanged"] == true {
                    "* offset changed".to_string()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    println!(
        "job '{name}': {} ({})",
        cell(&answer["schedule"]),
        cell(&answer["timeZone"])
    );
    print!("{}", render(&["UTC", "LOCAL", "ZONE", "NOTE"], &rows));
    Ok(())
}

/// A local RFC 3339 time as `YYYY-MM-DD HH:MM:SS+HH:MM`.
fn local(value: &serde_json::Value) -> String {
    match value.as_str() {
        None => "-".to_string(),
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%:z").to_string())
            .unwrap_or_else(|_| text.to_string()),
    }
}
