//! The alert rules and the Grafana dashboard in docs/monitoring/ against a real server: every
//! `dron_*` metric they use is on its `/metrics`. (`promtool check rules` checks the rules'
//! syntax in scripts/test.sh.)

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::Server;

/// The `dron_*` names in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("dron_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

fn monitoring_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/monitoring")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each alert rule's name and expression; every rule has a severity and a summary.
fn alert_rules() -> Vec<(String, String)> {
    let rules: Value = serde_norway::from_str(&monitoring_file("alerts.yml")).unwrap();
    let mut found = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("an alert name").to_string();
            assert!(rule["labels"]["severity"].is_string(), "{name}: severity");
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{name}: summary"
            );
            found.push((name, rule["expr"].as_str().expect("expr").to_string()));
        }
    }
    found
}

/// Each dashboard panel's title and its targets' expressions.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(&monitoring_file("dashboard.json")).unwrap();
    let mut found = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target's expr");
            found.push((title.to_string(), expr.to_string()));
        }
    }
    found
}

/// The metric names of a Prometheus text scrape.
fn scraped_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn names_are_read_from_expressions() {
    let expr = "histogram_quantile(0.99, sum by (le) (rate(dron_start_lateness_seconds_bucket[5m]))) \
                > 30 and dron_jobs{shard=\"1\"} / dron_jobs";
    let names: Vec<_> = metric_names(expr).into_iter().collect();
    assert_eq!(names, ["dron_jobs", "dron_start_lateness_seconds_bucket"]);
}

/// A fresh server that ran one scheduled job and one failing job has every metric the rules
/// and the dashboard use (the event-only counters are registered at zero from the start).
#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_rules_and_dashboard_use_exists() {
    let rules = alert_rules();
    let queries = dashboard_queries();
    assert!(
        rules.len() >= 10 && queries.len() >= 20,
        "{rules:?} {queries:?}"
    );
    let mut wanted: Vec<(String, String)> = Vec::new();
    for (used_by, expr) in rules.iter().chain(&queries) {
        wanted.extend(metric_names(expr).into_iter().map(|n| (n, used_by.clone())));
    }

    let server = Server::start(2).await;
    // A scheduled run (start lateness is recorded at a scheduled run's launch), which also
    // puts the local agent in the agent gauges.
    let job = json!({"name": "scheduled", "command": "true", "schedule": "R1//PT1H"});
    server.create(job).await;
    server.wait_for_run("scheduled", "succeeded").await;

    let http = server.http.clone();
    let url = server.url("/metrics");
    let scrape = || async { http.get(&url).send().await.unwrap().text().await.unwrap() };
    // Histograms are folded in by the exporter's upkeep (every 5 s), and the agents' gauges
    // published on the broker's next tick.
    let missing_now = || async {
        let present = scraped_names(&scrape().await);
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(name, _)| !present.contains(name))
            .cloned()
            .collect();
        (missing, present)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (mut missing, mut present) = missing_now().await;
    while !missing.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        (missing, present) = missing_now().await;
    }
    assert!(
        missing.is_empty(),
        "metrics used by docs/monitoring/ but not on /metrics (name, used by): {missing:?}\nscraped: {present:?}"
    );
}
