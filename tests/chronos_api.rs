//! The Chronos endpoints beyond job CRUD (search, summary, manual success, statistics, graph
//! CSV, leader, ping), end to end under both `/scheduler` and `/v1/scheduler`, with the JSON
//! shapes Chronos clients parse and the errors bad input gets.

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::Server;

const PREFIXES: [&str; 2] = ["", "/v1"];

fn keys(value: &Value) -> BTreeSet<&str> {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"));
    object.keys().map(String::as_str).collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

fn names(jobs: &Value) -> Vec<&str> {
    let jobs = jobs
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {jobs}"));
    jobs.iter()
        .map(|job| job["name"].as_str().unwrap())
        .collect()
}

/// A 4xx answer with a JSON error, naming `field` when given.
async fn assert_client_error(
    server: &Server,
    method: &str,
    path: &str,
    status: u16,
    field: Option<&str>,
) {
    let (got, body) = server.request(method, path, None).await;
    assert_eq!(got, status, "{method} {path}: {body}");
    assert!(
        body["error"].is_string(),
        "{method} {path}: not a JSON error: {body}"
    );
    if let Some(field) = field {
        assert_eq!(body["field"], field, "{method} {path}: {body}");
    }
}

async fn create_jobs(server: &Server) {
    let far = "R/2099-01-01T00:00:00Z/P1D";
    server
        .create(json!({
            "name": "etl-nightly", "command": "echo loading", "schedule": far,
            "owner": "data@example.com", "description": "Feeds the Warehouse"
        }))
        .await;
    server
        .create(json!({"name": "report", "command": "sleep 0.2", "parents": ["etl-nightly"]}))
        .await;
    server
        .create(json!({"name": "Cleanup", "command": "rm -rf /tmp/nothing-ETL", "schedule": far, "disabled": true}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_jobs_by_substring_and_pages() {
    let server = Server::start(2).await;
    create_jobs(&server).await;
    for prefix in PREFIXES {
        let search = |query: &str| format!("{prefix}/scheduler/jobs/search?{query}");
        let found = server.ok("GET", &search("name=ETL"), None).await;
        assert_eq!(names(&found), ["etl-nightly"]);
        // The same JSON as GET /scheduler/job/{name}.
        assert_eq!(found[0], server.job("etl-nightly").await);
        let found = server.ok("GET", &search("command=etl"), None).await;
        assert_eq!(names(&found), ["Cleanup"]);
        let found = server.ok("GET", &search("any=warehouse"), None).await;
        assert_eq!(names(&found), ["etl-nightly"], "description matched");
        let found = server.ok("GET", &search("any=DATA%40example"), None).await;
        assert_eq!(names(&found), ["etl-nightly"], "owner matched");
        let found = server.ok("GET", &search("any=etl"), None).await;
        assert_eq!(names(&found), ["Cleanup", "etl-nightly"], "name or command");
        let found = server
            .ok("GET", &search("name=e&command=o&any=zzz"), None)
            .await;
        assert_eq!(names(&found), Vec::<&str>::new(), "every filter must match");
        let all = server.ok("GET", &search(""), None).await;
        assert_eq!(names(&all), ["Cleanup", "etl-nightly", "report"]);
        let page = server.ok("GET", &search("limit=1&offset=1"), None).await;
        assert_eq!(names(&page), ["etl-nightly"]);
        let past_the_end = server.ok("GET", &search("offset=99"), None).await;
        assert_eq!(past_the_end, json!([]));
        let none = server.ok("GET", &search("limit=0"), None).await;
        assert_eq!(none, json!([]));
        assert_client_error(&server, "GET", &search("limit=-1"), 400, Some("limit")).await;
        assert_client_error(&server, "GET", &search("offset=ten"), 400, Some("offset")).await;
        let huge = "limit=99999999999999999999999";
        assert_client_error(&server, "GET", &search(huge), 400, Some("limit")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_graph_and_statistics_follow_chronos_shapes() {
    let server = Server::start(2).await;
    create_jobs(&server).await;
    for prefix in PREFIXES {
        let summary = server
            .ok("GET", &format!("{prefix}/scheduler/jobs/summary"), None)
            .await;
        assert_eq!(keys(&summary), set(&["jobs"]));
        let jobs = summary["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), 3);
        for job in jobs {
            assert_eq!(
                keys(job),
                set(&["name", "status", "state", "schedule", "parents", "disabled"])
            );
        }
        let etl = jobs.iter().find(|j| j["name"] == "etl-nightly").unwrap();
        assert_eq!(etl["status"], "fresh");
        assert_eq!(etl["state"], "idle");
        assert!(
            etl["schedule"]
                .as_str()
                .unwrap()
                .starts_with("R/2099-01-01T00:00:00")
        );
        assert_eq!(etl["parents"], json!([]));
        let report = jobs.iter().find(|j| j["name"] == "report").unwrap();
        assert_eq!(
            (&report["schedule"], &report["parents"]),
            (&json!(""), &json!(["etl-nightly"]))
        );
        let cleanup = jobs.iter().find(|j| j["name"] == "Cleanup").unwrap();
        assert_eq!(cleanup["disabled"], true);

        let (status, csv) = server
            .request("GET", &format!("{prefix}/scheduler/graph/csv"), None)
            .await;
        assert_eq!(status, 200);
        let lines: BTreeSet<&str> = csv.as_str().unwrap().lines().collect();
        assert_eq!(
            lines,
            set(&[
                "node,Cleanup,fresh,idle",
                "node,etl-nightly,fresh,idle",
                "node,report,fresh,idle",
                "link,etl-nightly,report",
            ])
        );

        // No finished runs yet: an empty histogram, and no job in the per-job statistics.
        let stat = server
            .ok("GET", &format!("{prefix}/scheduler/job/stat/report"), None)
            .await;
        assert_eq!(stat["histogram"]["count"], 0);
        assert_eq!(stat["taskStatHistory"], json!([]));
        let median = server
            .ok("GET", &format!("{prefix}/scheduler/stats/median"), None)
            .await;
        assert_eq!(median, json!([]));

        let leader = server
            .ok("GET", &format!("{prefix}/scheduler/leader"), None)
            .await;
        assert_eq!(
            leader,
            json!({ "leader": format!("127.0.0.1:{}", server.port) })
        );
    }

    // Marking the parent successful by hand runs its child, under each prefix in turn.
    for (round, prefix) in PREFIXES.iter().enumerate() {
        let path = format!("{prefix}/scheduler/job/success/etl-nightly");
        let (status, text) = server.request("PUT", &path, None).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(text, "marked job etl-nightly as successful: true");
        let etl = server.job("etl-nightly").await;
        assert_eq!(etl["successCount"], round as u64 + 1);
        assert!(etl["lastSuccess"].is_string());
        support::wait_for(
            "the child to run",
            std::time::Duration::from_secs(30),
            || async {
                server.job("report").await["successCount"].as_u64() == Some(round as u64 + 1)
            },
        )
        .await;
    }
    assert_eq!(
        server.job("etl-nightly").await["errorCount"],
        0,
        "no run of its own"
    );

    for prefix in PREFIXES {
        let stat = server
            .ok("GET", &format!("{prefix}/scheduler/job/stat/report"), None)
            .await;
        assert_eq!(keys(&stat), set(&["histogram", "taskStatHistory"]));
        let histogram = &stat["histogram"];
        assert_eq!(
            keys(histogram),
            set(&[
                "75thPercentile",
                "95thPercentile",
                "98thPercentile",
                "99thPercentile",
                "median",
                "mean",
                "count"
            ])
        );
        assert_eq!(histogram["count"], 2);
        let median_ms = histogram["median"].as_f64().unwrap();
        assert!(
            (150.0..30_000.0).contains(&median_ms),
            "report sleeps 0.2 s: {histogram}"
        );
        let tasks = stat["taskStatHistory"].as_array().unwrap();
        assert_eq!(tasks.len(), 2);
        for task in tasks {
            assert_eq!(
                keys(task),
                set(&[
                    "taskId",
                    "jobName",
                    "slaveId",
                    "startTime",
                    "endTime",
                    "duration",
                    "status"
                ])
            );
            assert_eq!(task["jobName"], "report");
            assert_eq!(task["status"], "succeeded");
            assert!(task["taskId"].as_str().unwrap().starts_with("ct:"));
            assert!(task["duration"].as_str().unwrap().ends_with('s'));
        }

        for statistic in [
            "99thPercentile",
            "98thPercentile",
            "95thPercentile",
            "75thPercentile",
            "median",
            "mean",
        ] {
            let path = format!("{prefix}/scheduler/stats/{statistic}");
            let answer = server.ok("GET", &path, None).await;
            let rows = answer.as_array().unwrap();
            assert_eq!(rows.len(), 1, "only jobs with finished runs: {answer}");
            assert_eq!(keys(&rows[0]), set(&["jobNameLabel", "time"]));
            assert_eq!(rows[0]["jobNameLabel"], "report");
            let seconds = rows[0]["time"].as_f64().unwrap();
            assert!(
                (0.15..30.0).contains(&seconds),
                "{statistic} in seconds: {answer}"
            );
        }

        let summary = server
            .ok("GET", &format!("{prefix}/scheduler/jobs/summary"), None)
            .await;
        let etl = summary["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == "etl-nightly")
            .cloned();
        assert_eq!(etl.unwrap()["status"], "success");
        let (_, csv) = server
            .request("GET", &format!("{prefix}/scheduler/graph/csv"), None)
            .await;
        let csv = csv.as_str().unwrap().to_string();
        assert!(csv.contains("node,etl-nightly,success,idle\n"), "{csv}");
        assert!(csv.contains("node,report,success,idle\n"), "{csv}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_json_client_errors() {
    let server = Server::start(1).await;
    for prefix in PREFIXES {
        let p = |path: &str| format!("{prefix}/scheduler{path}");
        assert_client_error(&server, "PUT", &p("/job/success/missing"), 404, None).await;
        assert_client_error(
            &server,
            "PUT",
            &p("/job/success/bad%20name"),
            400,
            Some("name"),
        )
        .await;
        assert_client_error(
            &server,
            "PUT",
            &p(&format!("/job/success/{}", "n".repeat(201))),
            400,
            Some("name"),
        )
        .await;
        assert_client_error(&server, "GET", &p("/job/stat/missing"), 404, None).await;
        assert_client_error(&server, "GET", &p("/job/stat/a%2Cb"), 400, Some("name")).await;
        assert_client_error(
            &server,
            "GET",
            &p("/stats/90thPercentile"),
            400,
            Some("statistic"),
        )
        .await;
        let (_, body) = server
            .request("GET", &p("/stats/90thPercentile"), None)
            .await;
        assert!(
            body["error"].as_str().unwrap().contains("90thPercentile"),
            "{body}"
        );
        let long = "x".repeat(5000);
        assert_client_error(
            &server,
            "GET",
            &p(&format!("/stats/{long}")),
            400,
            Some("statistic"),
        )
        .await;
        assert_client_error(&server, "GET", &p("/job/success/x"), 405, None).await;
        assert_client_error(&server, "POST", &p("/jobs/summary"), 405, None).await;
        assert_client_error(
            &server,
            "GET",
            &p("/jobs/search?limit=1.5"),
            400,
            Some("limit"),
        )
        .await;
        // Empty lists, not errors, when there are no jobs.
        assert_eq!(
            server.ok("GET", &p("/jobs/search?any=x"), None).await,
            json!([])
        );
        assert_eq!(
            server.ok("GET", &p("/jobs/summary"), None).await,
            json!({"jobs": []})
        );
        assert_eq!(server.ok("GET", &p("/stats/mean"), None).await, json!([]));
        let (status, csv) = server.request("GET", &p("/graph/csv"), None).await;
        assert_eq!((status, csv), (200, json!("")));
    }
    let (status, pong) = server.request("GET", "/ping", None).await;
    assert_eq!((status, pong.as_str().map(str::trim)), (200, Some("pong")));
    assert_client_error(&server, "GET", "/scheduler/ping", 404, None).await;
}

/// Chronos 2.x clients use `/scheduler/...`, 3.x clients `/v1/scheduler/...`: every endpoint
/// answers the same under both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_the_same_under_both_prefixes() {
    let server = Server::start(2).await;
    let dir = server.scratch();
    let parent = json!({"name": "v1-parent", "command": support::log_task_command(&dir), "schedule": "R/2099-01-01T00:00:00Z/P1D"});
    let child = json!({"name": "v1-child", "command": "sleep 60", "parents": ["v1-parent"]});
    assert_eq!(
        server
            .request("POST", "/v1/scheduler/iso8601", Some(parent.clone()))
            .await
            .0,
        204
    );
    assert_eq!(
        server
            .request("PUT", "/v1/scheduler/iso8601", Some(parent))
            .await
            .0,
        204
    );
    assert_eq!(
        server
            .request("PUT", "/v1/scheduler/dependency", Some(child))
            .await
            .0,
        204
    );
    assert_eq!(
        server
            .request("PUT", "/v1/scheduler/job/v1-parent", None)
            .await
            .0,
        204
    );
    server.wait_for_run("v1-parent", "succeeded").await;
    server.wait_for_run("v1-child", "running").await;
    for path in [
        "jobs",
        "jobs/search?name=v1",
        "jobs/summary",
        "job/v1-parent",
        "job/stat/v1-parent",
        "graph/dot",
        "graph/csv",
        "stats/median",
        "leader",
    ] {
        let old = server
            .request("GET", &format!("/scheduler/{path}"), None)
            .await;
        let new = server
            .request("GET", &format!("/v1/scheduler/{path}"), None)
            .await;
        assert_eq!(old.0, 200, "{path}: {}", old.1);
        assert_eq!(old, new, "{path} differs between prefixes");
    }
    assert_eq!(
        server
            .request("DELETE", "/v1/scheduler/task/kill/v1-child", None)
            .await
            .0,
        204
    );
    let killed = server.wait_for_run("v1-child", "killed").await;
    assert_eq!(killed["agent"], "local");
    let succeeded = server.wait_for_run("v1-parent", "succeeded").await;
    assert!(succeeded["lateMs"].as_i64().unwrap() >= 0, "{succeeded}");
    assert_eq!(
        server
            .request("PUT", "/v1/scheduler/job/success/v1-parent", None)
            .await
            .0,
        200
    );
    assert_eq!(
        server
            .request("DELETE", "/v1/scheduler/job/v1-child", None)
            .await
            .0,
        204
    );
    assert_eq!(
        server
            .request("DELETE", "/v1/scheduler/job/v1-parent", None)
            .await
            .0,
        204
    );
    assert_eq!(
        server.ok("GET", "/v1/scheduler/jobs", None).await,
        json!([])
    );
}
