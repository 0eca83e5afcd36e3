//! What the UI reads, over HTTP on a real server with several shards: the jobs table
//! (`GET /api/jobs`: search, filters, sort, pages merged across shards) and the dependency
//! graph (`GET /api/graph`: a job's neighbourhood, or every job).

mod support;

use serde_json::{Value, json};
use support::Server;

fn names(page: &Value) -> Vec<&str> {
    let jobs = page["jobs"].as_array().unwrap();
    jobs.iter().map(|j| j["name"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_table_pages_sorts_and_filters_across_shards() {
    let server = Server::start(4).await;
    for i in 0..30 {
        let job = json!({"name": format!("job-{i:02}"), "command": "true", "owner": format!("o{}", i % 3),
                          "schedule": format!("R/2099-01-{:02}T00:00:00Z/P1D", 30 - i)});
        server.create(job).await;
    }
    server
        .create(json!({"name": "broken", "command": "exit 1", "retries": 0, "schedule": "R/2099-01-01T00:00:00Z/P1D", "disabled": true}))
        .await;
    server.ok("PUT", "/scheduler/job/broken", None).await;
    server.wait_for_run("broken", "failed").await;

    let page = server.ok("GET", "/api/jobs?limit=5&offset=10", None).await;
    assert_eq!(page["total"], 31);
    assert_eq!(
        names(&page),
        ["job-09", "job-10", "job-11", "job-12", "job-13"]
    );

    // The latest next fire first; a disabled job has none and sorts last in either order.
    let page = server
        .ok("GET", "/api/jobs?sort=nextFire&order=desc&limit=2", None)
        .await;
    assert_eq!(names(&page), ["job-00", "job-01"]);
    let last = server
        .ok("GET", "/api/jobs?sort=nextFire&offset=30", None)
        .await;
    assert_eq!(names(&last), ["broken"]);
    assert_eq!(last["jobs"][0]["nextFire"], Value::Null);

    let found = server.ok("GET", "/api/jobs?q=JOB-2", None).await;
    assert_eq!(found["total"], 10, "job-20 to job-29: {found}");
    let owned = server.ok("GET", "/api/jobs?q=o1&limit=100", None).await;
    assert_eq!(owned["total"], 10);

    let failing = server
        .ok("GET", "/api/jobs?filter=failing,disabled", None)
        .await;
    assert_eq!(names(&failing), ["broken"]);
    let row = &failing["jobs"][0];
    assert_eq!(row["status"], "failure");
    assert_eq!(row["errorCount"], 1);
    assert_eq!(row["kind"], "schedule");
    assert_eq!(row["runState"], "idle");
    let running = server.ok("GET", "/api/jobs?filter=running", None).await;
    assert_eq!(running["total"], 0);

    for (query, field) in [
        ("filter=broken", "filter"),
        ("sort=size", "sort"),
        ("order=up", "order"),
        ("limit=-1", "limit"),
        ("offset=x", "offset"),
    ] {
        let (status, body) = server
            .request("GET", &format!("/api/jobs?{query}"), None)
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    let (status, _) = server.request("GET", "/api/jobs?colour=red", None).await;
    assert_eq!(status, 400, "an unknown parameter is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_answers_a_neighbourhood_with_resources_and_edge_kinds() {
    let server = Server::start(3).await;
    let future = "R/2099-01-01T00:00:00Z/P1D";
    let jobs = [
        json!({"name": "a", "command": "true", "schedule": future}),
        json!({"name": "b", "command": "true", "parents": ["a"]}),
        json!({"name": "c", "command": "true", "parents": ["b"]}),
        json!({"name": "d", "command": "true", "schedule": future,
               "dependsOn": ["job:c@{TODAY}", "hive:t/{TODAY}"]}),
        json!({"name": "e", "command": "true", "triggeredBy": "job:d@*"}),
        json!({"name": "lonely", "command": "true", "schedule": future}),
    ];
    for job in jobs {
        server.create(job).await;
    }

    let graph = server.ok("GET", "/api/graph?job=c&depth=1", None).await;
    let ids: Vec<&str> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["j:b", "j:c", "j:d", "r:hive:t/{TODAY}"], "{graph}");
    let edges: Vec<(&str, &str, &str)> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap();
            (s("from"), s("to"), s("kind"))
        })
        .collect();
    assert!(edges.contains(&("j:b", "j:c", "parent")), "{edges:?}");
    assert!(edges.contains(&("j:c", "j:d", "dependsOn")), "{edges:?}");
    assert!(
        edges.contains(&("r:hive:t/{TODAY}", "j:d", "dependsOn")),
        "{edges:?}"
    );
    assert_eq!(graph["truncated"], false);

    let deep = server.ok("GET", "/api/graph?job=a&depth=10", None).await;
    assert_eq!(
        deep["nodes"].as_array().unwrap().len(),
        6,
        "a..e and the resource"
    );
    let capped = server
        .ok("GET", "/api/graph?job=a&depth=10&limit=2", None)
        .await;
    assert_eq!(capped["truncated"], true);
    let alone = server
        .ok("GET", "/api/graph?job=c&depth=0&limit=1", None)
        .await;
    assert_eq!(alone["nodes"][0]["id"], "j:c");
    assert_eq!(
        alone["truncated"], false,
        "nothing was left out within depth 0"
    );

    let whole = server.ok("GET", "/api/graph", None).await;
    let jobs = whole["nodes"].as_array().unwrap().iter();
    assert_eq!(jobs.filter(|n| n["kind"] == "job").count(), 6);
    let too_many = server.ok("GET", "/api/graph?limit=3", None).await;
    assert_eq!(too_many["truncated"], true);
    assert_eq!(too_many["nodes"], json!([]));

    let (status, body) = server.request("GET", "/api/graph?job=ghost", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.request("GET", "/api/graph?job=a/b", None).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("job")));
    let (status, body) = server.request("GET", "/api/graph?depth=x", None).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("depth")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_is_served_from_the_binary() {
    let server = Server::start(1).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = no_redirects.get(server.url("/")).send().await.unwrap();
    assert_eq!(root.status(), 307);
    assert_eq!(root.headers()["location"], "/ui/");
    let index = server.http.get(server.url("/ui/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    assert!(
        index.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let etag = index.headers()["etag"].clone();
    assert!(index.text().await.unwrap().contains("app.js"));
    let again = server
        .http
        .get(server.url("/ui/"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304, "an unchanged file is not sent again");
    let module = server
        .http
        .get(server.url("/ui/vendor/cytoscape-3.34.4.esm.min.mjs"))
        .send()
        .await
        .unwrap();
    assert!(
        module.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let (status, body) = server.request("GET", "/ui/nothing.js", None).await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("nothing.js"));

    // A page elsewhere cannot post a job through the operator's browser; the UI's own
    // requests (same-origin) and clients that are not browsers (no header) can.
    let job = json!({"name": "csrf", "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D"});
    for (site, expected) in [
        ("cross-site", 403),
        ("same-site", 403),
        ("same-origin", 204),
    ] {
        let response = server
            .http
            .post(server.url("/scheduler/iso8601"))
            .header("sec-fetch-site", site)
            .json(&job)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "Sec-Fetch-Site: {site}");
        if expected == 403 {
            let body: Value = response.json().await.unwrap();
            assert!(body["error"].as_str().unwrap().contains("another web site"));
        }
    }
    let read = server
        .http
        .get(server.url("/api/jobs"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "reads are not changes");
}
