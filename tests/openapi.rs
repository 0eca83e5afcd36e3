//! The OpenAPI document served at `/api/openapi.json` parses, and every native endpoint it
//! must describe is in it and routed on the real server for its documented method.

mod support;

use serde_json::json;
use support::Server;

const ENDPOINTS: [(&str, &str); 35] = [
    ("/health", "get"),
    ("/ping", "get"),
    ("/metrics", "get"),
    ("/api/openapi.json", "get"),
    ("/api/jobs", "get"),
    ("/api/graph", "get"),
    ("/api/jobs/{name}", "get"),
    ("/api/jobs/{name}/runs", "get"),
    ("/api/jobs/{name}/runs/{taskId}/stdout", "get"),
    ("/api/jobs/{name}/runs/{taskId}/stderr", "get"),
    ("/api/jobs/{name}/next", "get"),
    ("/api/jobs/{name}/waiting", "get"),
    // A range the job has no target in: refused (400), nothing created.
    ("/api/jobs/{name}/backfill", "post"),
    ("/api/jobs/{name}/runs/{target}/rerun", "post"),
    ("/api/backfills", "get"),
    // A rerun made first; then cancelled.
    ("/api/backfills/{id}", "get"),
    ("/api/backfills/{id}", "delete"),
    ("/resources", "post"),
    ("/api/resources", "get"),
    ("/api/resources", "post"),
    ("/api/schedule/preview", "get"),
    ("/api/shards", "get"),
    ("/api/shards", "put"),
    ("/api/agents", "get"),
    ("/api/agents/connect", "get"),
    ("/api/agent-tokens", "get"),
    // Made, then revoked.
    ("/api/agent-tokens", "post"),
    ("/api/agent-tokens/{name}", "delete"),
    ("/api/cluster", "get"),
    // A single server refuses membership changes (400): it is not a cluster.
    ("/api/cluster/nodes", "post"),
    ("/api/cluster/nodes/{id}", "delete"),
    ("/api/notifications", "get"),
    ("/api/notifications/test", "post"),
    ("/api/gc", "post"),
    ("/api/backup", "post"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_matches_the_routes() {
    let server = Server::start(2).await;
    server
        .create(json!({"name": "hello", "command": "echo hi", "schedule": "R/2099-01-01T00:00:00Z/P1D"}))
        .await;
    server.ok("PUT", "/scheduler/job/hello", None).await;
    let run = server.wait_for_run("hello", "succeeded").await;
    let task_id = run["taskId"].as_str().unwrap().to_string();

    let rerun = "/api/jobs/hello/runs/2026-11-23T00:00:00Z/rerun";
    let backfill = server.ok("POST", rerun, None).await["id"].to_string();
    let backfill = backfill.trim_matches('"').to_string();

    let doc = server.ok("GET", "/api/openapi.json", None).await;
    assert!(doc.is_object(), "the document is JSON: {doc}");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"), "{doc}");
    let on_disk: serde_json::Value =
        serde_json::from_str(include_str!("../docs/openapi.json")).unwrap();
    assert_eq!(doc, on_disk, "the server serves docs/openapi.json");

    for (path, method) in ENDPOINTS {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is documented");
        assert!(
            operation["responses"].is_object(),
            "{method} {path} has responses"
        );
        let id = match path.starts_with("/api/backfills/") {
            true => backfill.as_str(),
            false => "3",
        };
        let concrete = path
            .replace("{name}", "hello")
            .replace("{taskId}", &task_id)
            .replace("{target}", "2026-11-23T00:00:00Z")
            .replace("{id}", id);
        let (concrete, body) = match (path, method) {
            ("/api/schedule/preview", _) => (format!("{concrete}?schedule=R//PT1H&n=2"), None),
            ("/api/resources", "get") => (
                format!("{concrete}?id=hive%3Ausers%2Fds%3D2026-11-23"),
                None,
            ),
            ("/resources" | "/api/resources", "post") => (
                concrete,
                Some(json!({"resource": "openapi:test", "at": "2026-11-23T00:00:00Z"})),
            ),
            // An out-of-range count is refused (400) without moving any job.
            ("/api/shards", "put") => (concrete, Some(json!({"count": 0}))),
            ("/api/cluster/nodes", "post") => (
                concrete,
                Some(json!({"id": 4, "address": "http://127.0.0.1:4404"})),
            ),
            ("/api/gc", _) => (concrete, Some(json!({"dryRun": true}))),
            ("/api/jobs/{name}/backfill", _) => (
                concrete,
                Some(json!({"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"})),
            ),
            // A relative directory is refused (400) before anything is written.
            ("/api/backup", _) => (concrete, Some(json!({"dir": "relative/dir"}))),
            ("/api/agent-tokens", "post") => (concrete, Some(json!({"name": "hello"}))),
            _ => (concrete, None),
        };
        let (status, answer) = server
            .request(&method.to_uppercase(), &concrete, body)
            .await;
        assert!(
            status != 404 && status != 405,
            "{method} {concrete} answered {status}: {answer}"
        );
        assert!(
            operation["responses"][status.to_string()].is_object(),
            "{method} {path}: {status} is documented"
        );
    }
    // Every documented path is one of these.
    let documented: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    for path in documented {
        assert!(
            ENDPOINTS.iter().any(|(p, _)| p == path),
            "{path} is documented but not tested"
        );
    }
}
