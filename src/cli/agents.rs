//! `dron agents`: the server's agents and what they offer, use and have free.

use reqwest::Method;
use serde_json::Value;

use super::client::{Client, Outcome};
use super::table::{cell, pretty, render, time};

pub async fn agents(client: &Client, json: bool) -> Outcome {
    let answer = client.call(Method::GET, "/api/agents", None).await?;
    if json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    let agents = answer["agents"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = agents.iter().map(agent_row).collect();
    let headers = [
        "NAME",
        "STATE",
        "TASKS",
        "CPUS (USED/OFFERED)",
        "MEM MB",
        "DISK MB",
        "HEARTBEAT",
        "ATTRIBUTES",
    ];
    print!("{}", render(&headers, &rows));
    Ok(())
}

fn agent_row(agent: &Value) -> Vec<String> {
    let used_of = |resource: &str| {
        format!(
            "{}/{}",
            amount(&agent["used"][resource]),
            amount(&agent["offered"][resource])
        )
    };
    let attributes = agent["attributes"]
        .as_object()
        .map(|map| {
            let pairs = map.iter().map(|(k, v)| format!("{k}={}", cell(v)));
            pairs.collect::<Vec<_>>().join(",")
        })
        .unwrap_or_default();
    let heartbeat = match agent["local"].as_bool() {
        Some(true) => "(in server)".to_string(),
        _ => agent["lastHeartbeatMs"]
            .as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map_or("-".to_string(), |t| time(&Value::from(t.to_rfc3339()))),
    };
    vec![
        cell(&agent["name"]),
        cell(&agent["state"]),
        cell(&agent["tasks"]),
        used_of("cpus"),
        used_of("mem"),
        used_of("disk"),
        heartbeat,
        attributes,
    ]
}

/// Rounded for a table: 0.30000000000000004 cpus reads 0.3.
fn amount(value: &Value) -> String {
    value.as_f64().map_or_else(
        || cell(value),
        |v| format!("{}", (v * 100.0).round() / 100.0),
    )
}
