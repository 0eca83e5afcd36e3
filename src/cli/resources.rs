//! `dron why JOB` (what a job's instances still wait for) and `dron resource show|announce`
//! (a resource's lineage; announcing that it is ready).

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Client, Outcome, job_segment};
use super::table::{cell, render, time};

#[derive(Subcommand)]
pub enum ResourceAction {
    /// Whether a resource is satisfied, who produces it and who waits for it.
    Show { id: String },
    /// Announce that a resource is ready (as a framework would over RabbitMQ).
    Announce {
        id: String,
        /// The event's time (RFC 3339); default: now.
        #[arg(long)]
        at: Option<String>,
    },
}

pub async fn why(client: &Client, name: &str) -> Outcome {
    let path = format!("/api/jobs/{}/waiting", job_segment(name)?);
    let answer = client.call(Method::GET, &path, None).await?;
    let instances = answer["instances"].as_array().cloned().unwrap_or_default();
    if instances.is_empty() {
        println!("job '{name}' has no live instance: nothing waits");
        if let Some(parents) = answer["parents"].as_array().filter(|p| !p.is_empty()) {
            let done: Vec<String> = list(&answer["parentsSucceeded"]);
            let missing: Vec<String> = parents
                .iter()
                .map(cell)
                .filter(|p| !done.contains(p))
                .collect();
            println!("its next run waits for parent(s): {}", missing.join(", "));
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|instance| {
            let waiting = list(&instance["waitingFor"]);
            vec![
                time(&instance["target"]),
                cell(&instance["state"]),
                if waiting.is_empty() {
                    "-".to_string()
                } else {
                    waiting.join(", ")
                },
                time(&instance["expires"]),
            ]
        })
        .collect();
    print!(
        "{}",
        render(&["TARGET", "STATE", "WAITING FOR", "EXPIRES"], &rows)
    );
    Ok(())
}

pub async fn resource(client: &Client, action: ResourceAction) -> Outcome {
    match action {
        ResourceAction::Show { id } => show(client, &id).await,
        ResourceAction::Announce { id, at } => {
            let mut body = json!({ "resource": id });
            if let Some(at) = at {
                body["at"] = Value::from(at);
            }
            let answer = client.call(Method::POST, "/resources", Some(&body)).await?;
            let what = match answer["duplicate"] == true {
                true => "already satisfied by the same event: nothing changed",
                false => "recorded and applied",
            };
            println!("{id}: {what} (at {})", time(&answer["at"]));
            Ok(())
        }
    }
}

async fn show(client: &Client, id: &str) -> Outcome {
    let path = format!("/api/resources?id={}", percent_encode(id));
    let answer = client.call(Method::GET, &path, None).await?;
    match answer["satisfied"] == true {
        true => println!("{id}: satisfied at {}", time(&answer["event"]["at"])),
        false => println!("{id}: not satisfied"),
    }
    for (label, key) in [
        ("produced by", "producers"),
        ("waited for by (dependsOn)", "consumers"),
        ("triggers", "triggered"),
        ("instances waiting now", "waiting"),
    ] {
        let names = list(&answer[key]);
        if !names.is_empty() {
            println!("{label}: {}", names.join(", "));
        }
    }
    Ok(())
}

fn list(value: &Value) -> Vec<String> {
    let items = value.as_array().into_iter().flatten();
    items.map(cell).collect()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
