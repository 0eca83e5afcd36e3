//! `dron notifications list` (recent notices and how each delivery fared) and
//! `dron notifications test` (a test notice through the configured channels).

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Client, Failure, Outcome};
use super::table::{cell, pretty, render, time};

#[derive(Subcommand)]
pub enum NotificationsAction {
    /// The newest notices (failures, timeouts, expiries, skips, recoveries, tests), newest
    /// first, with the state of each delivery.
    List {
        /// At most this many (the server's default is 50, its maximum 1,000).
        #[arg(long)]
        limit: Option<u32>,
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send a test notice through every configured channel, or to an address or URL; exits
    /// 1 unless every channel delivered it.
    Test {
        /// Mail this address (through the configured SMTP server).
        #[arg(long)]
        email: Option<String>,
        /// Post to this webhook URL.
        #[arg(long)]
        webhook: Option<String>,
    },
}

pub async fn notifications(client: &Client, action: NotificationsAction) -> Outcome {
    match action {
        NotificationsAction::List { limit, json } => list(client, limit, json).await,
        NotificationsAction::Test { email, webhook } => test(client, email, webhook).await,
    }
}

async fn list(client: &Client, limit: Option<u32>, as_json: bool) -> Outcome {
    let path = match limit {
        Some(limit) => format!("/api/notifications?limit={limit}"),
        None => "/api/notifications".to_string(),
    };
    let answer = client.call(Method::GET, &path, None).await?;
    if as_json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    let notices = answer["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = notices
        .iter()
        .map(|notice| {
            vec![
                time(&notice["at"]),
                cell(&notice["job"]),
                cell(&notice["event"]),
                time(&notice["target"]),
                cell(&notice["exitCode"]),
                deliveries(&notice["deliveries"]),
            ]
        })
        .collect();
    print!(
        "{}",
        render(
            &["AT", "JOB", "EVENT", "TARGET", "EXIT", "DELIVERIES"],
            &rows
        )
    );
    Ok(())
}

/// `email sent, webhook queued (after 2 attempts: connection refused)`.
fn deliveries(value: &Value) -> String {
    let listed = value.as_array().cloned().unwrap_or_default();
    if listed.is_empty() {
        return "- (no channel)".to_string();
    }
    let described: Vec<String> = listed.iter().map(delivery).collect();
    described.join(", ")
}

fn delivery(delivery: &Value) -> String {
    format!("{} {}", cell(&delivery["channel"]), state(delivery))
}

/// `sent`, `sent (in a digest of 4)`, `queued (after 2 attempts: connection refused)`.
fn state(delivery: &Value) -> String {
    let mut text = cell(&delivery["state"]);
    if delivery["sentWith"].as_u64().is_some_and(|n| n > 1) {
        text.push_str(&format!(" (in a digest of {})", delivery["sentWith"]));
    }
    if delivery["state"] != "sent"
        && let Some(error) = delivery["lastError"].as_str()
    {
        let attempts = delivery["attempts"].as_u64().unwrap_or(0);
        let plural = if attempts == 1 { "" } else { "s" };
        text.push_str(&format!(" (after {attempts} attempt{plural}: {error})"));
    }
    text
}

async fn test(client: &Client, email: Option<String>, webhook: Option<String>) -> Outcome {
    let mut body = json!({});
    if let Some(email) = email {
        body["email"] = Value::from(email);
    }
    if let Some(url) = webhook {
        body["webhook"] = Value::from(url);
    }
    let path = "/api/notifications/test";
    let answer = client.call(Method::POST, path, Some(&body)).await?;
    for each in answer["deliveries"].as_array().into_iter().flatten() {
        let target = match each["channel"].as_str() {
            Some("email") => list_of(&each["to"]),
            _ => cell(&each["url"]),
        };
        println!("{} {target}: {}", cell(&each["channel"]), state(each));
    }
    match answer["delivered"] == true {
        true => Ok(()),
        false => Err(Failure::local(
            "not every channel delivered the test notice (retried in the background)",
        )),
    }
}

fn list_of(value: &Value) -> String {
    let items = value.as_array().into_iter().flatten();
    items.map(cell).collect::<Vec<_>>().join(", ")
}
