//! Issue 22: a job list exported from a Chronos 3 server (`GET /scheduler/jobs`), in exactly
//! the shape Chronos 3's `JobSerializer` writes, is accepted unchanged by
//! `POST /scheduler/iso8601` and `/scheduler/dependency` and by `dron sync`, and its jobs run.

mod support;

use std::path::Path;

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use serde_json::{Value, json};
use support::{Server, dron};

/// A job as Chronos 3's `JobSerializer` writes it: every field, in its order, with the values
/// its deserializer fills in (`runAsUser` the server's user, `cpus`/`disk`/`mem` its
/// defaults, written as doubles); then `parents` for a dependent job, or `schedule` and
/// `scheduleTimeZone` for a scheduled one. `container` is written only when the job has one.
/// `maxCompletionTime` (0: no limit) is written by builds after 3.0.2; 3.0.x leave it out.
fn chronos3_job(name: &str, command: &str, tail: Value) -> Value {
    let mut job = json!({
        "name": name, "command": command, "shell": true, "executor": "",
        "executorFlags": "", "taskInfoData": "", "retries": 2, "owner": "",
        "ownerName": "", "description": "", "successCount": 0, "errorCount": 0,
        "lastSuccess": "", "lastError": "", "cpus": 0.1, "disk": 256.0, "mem": 128.0,
        "disabled": false, "softError": false, "dataProcessingJobType": false,
        "errorsSinceLastSuccess": 0, "fetch": [], "uris": [], "environmentVariables": [],
        "arguments": [], "highPriority": false, "runAsUser": "root", "concurrent": false,
        "maxCompletionTime": 0, "constraints": []
    });
    let fields = job.as_object_mut().unwrap();
    for (key, value) in tail.as_object().unwrap() {
        fields.insert(key.clone(), value.clone());
    }
    job
}

/// A start as Chronos writes it in a schedule (Joda's ISO format: milliseconds, `Z` in UTC,
/// else the offset of the job's zone).
fn chronos_start(at: DateTime<Utc>, offset: Option<FixedOffset>) -> String {
    match offset {
        None => at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Some(offset) => at
            .with_timezone(&offset)
            .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
            .to_string(),
    }
}

/// A Chronos 3 job list: two scheduled jobs due in a few seconds (one in UTC with
/// `scheduleTimeZone: ""`, one zoned with an offset start), a dependent job of the first, a
/// dependent job with a Docker container, and a job that exhausted its repetitions (Chronos
/// disables it at R0). Listed children first, as Chronos's unordered list may have them.
fn chronos3_export(done_dir: &Path) -> Vec<Value> {
    let first = Utc::now() + TimeDelta::seconds(5);
    let command = |name: &str| format!("echo {name} >> {}/{name}.done", done_dir.display());
    // Tokyo has no daylight saving time: its offset is always +09:00.
    let tokyo = FixedOffset::east_opt(9 * 3600).unwrap();
    vec![
        chronos3_job(
            "c3-child",
            &command("c3-child"),
            json!({"owner": "data@example.com", "description": "after c3-daily",
                   "parents": ["c3-daily"]}),
        ),
        chronos3_job(
            "c3-daily",
            &command("c3-daily"),
            json!({
                "successCount": 41, "errorCount": 2, "lastSuccess": "2017-03-01T12:00:05.123Z",
                "lastError": "2017-02-27T12:00:01.004Z", "errorsSinceLastSuccess": 0,
                "environmentVariables": [{"name": "STAGE", "value": "prod"}],
                "fetch": [{"uri": "https://example.com/etl.sh", "executable": true,
                           "cache": false, "extract": true}],
                "uris": ["https://example.com/etl.sh"],
                "schedule": format!("R/{}/PT1H", chronos_start(first, None)),
                "scheduleTimeZone": ""
            }),
        ),
        chronos3_job(
            "c3-tokyo",
            &command("c3-tokyo"),
            json!({
                "schedule": format!("R5/{}/P1D", chronos_start(first, Some(tokyo))),
                "scheduleTimeZone": "Asia/Tokyo"
            }),
        ),
        chronos3_job(
            "c3-docker",
            "echo in a container",
            json!({
                "container": {
                    "type": "DOCKER", "image": "busybox:1.36", "network": "HOST",
                    "networkInfos": [],
                    "volumes": [{"hostPath": "/srv/data", "containerPath": "/data", "mode": "RW"}],
                    "forcePullImage": false, "parameters": []
                },
                "parents": ["c3-tokyo"], "disabled": true
            }),
        ),
        chronos3_job(
            "c3-done",
            "true",
            json!({"disabled": true, "successCount": 3,
                   "schedule": "R0/2017-03-04T12:00:00.000Z/PT24H", "scheduleTimeZone": ""}),
        ),
    ]
}

/// The fields Chronos 3 writes that dron does not act on: answered exactly as sent.
const KEPT: [&str; 17] = [
    "executor",
    "executorFlags",
    "taskInfoData",
    "ownerName",
    "description",
    "cpus",
    "disk",
    "mem",
    "softError",
    "dataProcessingJobType",
    "errorsSinceLastSuccess",
    "fetch",
    "uris",
    "highPriority",
    "runAsUser",
    "constraints",
    "container",
];

/// Every job of `export` is stored, with what it says.
async fn assert_stored(server: &Server, export: &[Value]) {
    let listed = server.ok("GET", "/scheduler/jobs", None).await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), export.len(), "{listed:?}");
    for sent in export {
        let name = sent["name"].as_str().unwrap();
        let answer = listed.iter().find(|j| j["name"] == name);
        let answer = answer.unwrap_or_else(|| panic!("{name} is not listed: {listed:?}"));
        for field in KEPT {
            assert_eq!(answer.get(field), sent.get(field), "{name}: {field}");
        }
        for field in [
            "command",
            "owner",
            "environmentVariables",
            "disabled",
            "parents",
        ] {
            if sent.get(field).is_some() {
                assert_eq!(answer[field], sent[field], "{name}: {field}");
            }
        }
        // 0 is no limit: answered as no field, as Chronos 3.0.x does.
        assert!(answer.get("maxCompletionTime").is_none(), "{answer}");
        if sent.get("schedule").is_some() {
            let zone = sent["scheduleTimeZone"].as_str().unwrap();
            let expected = if zone.is_empty() { "UTC" } else { zone };
            assert_eq!(answer["scheduleTimeZone"], expected, "{name}");
        }
    }
}

/// The three jobs due now run (the dependent one after its parent); the disabled ones do not.
async fn assert_runs(server: &Server, done_dir: &Path) {
    for name in ["c3-daily", "c3-tokyo", "c3-child"] {
        server.wait_for_run(name, "succeeded").await;
        let done = std::fs::read_to_string(done_dir.join(format!("{name}.done")));
        assert_eq!(done.unwrap_or_default(), format!("{name}\n"));
    }
    for name in ["c3-docker", "c3-done"] {
        assert!(server.runs(name).await.is_empty(), "{name} is disabled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chronos_3_export_posted_as_is_is_stored_and_runs() {
    let server = Server::start(2).await;
    let done_dir = server.scratch();
    let export = chronos3_export(&done_dir);
    // A migration posts parents first, each job to the endpoint of its kind, under both of
    // Chronos's prefixes.
    let order = ["c3-daily", "c3-tokyo", "c3-done", "c3-child", "c3-docker"];
    for (i, name) in order.iter().enumerate() {
        let job = export.iter().find(|j| j["name"] == *name).unwrap();
        let prefix = if i % 2 == 0 { "" } else { "/v1" };
        let kind = if job.get("parents").is_some() {
            "dependency"
        } else {
            "iso8601"
        };
        let path = format!("{prefix}/scheduler/{kind}");
        let (status, body) = server.request("POST", &path, Some(job.clone())).await;
        assert_eq!(status, 204, "{name} on {path}: {body}");
    }
    assert_stored(&server, &export).await;
    assert_runs(&server, &done_dir).await;

    // The answers, posted back as a Chronos client round-trips a job, change nothing.
    let before = server.ok("GET", "/scheduler/jobs", None).await;
    for job in before.as_array().unwrap() {
        let kind = if job["parents"].as_array().is_some_and(|p| !p.is_empty()) {
            "dependency"
        } else {
            "iso8601"
        };
        let path = format!("/scheduler/{kind}");
        let (status, body) = server.request("POST", &path, Some(job.clone())).await;
        assert_eq!(status, 204, "{path}: {body}");
        let name = job["name"].as_str().unwrap();
        let mut after = server.job(name).await;
        let mut job = job.clone();
        for counters in [&mut after, &mut job] {
            for field in ["successCount", "errorCount", "lastSuccess", "lastError"] {
                counters.as_object_mut().unwrap().remove(field);
            }
        }
        assert_eq!(after, job, "{name} round-trips");
    }

    // Bad input still gets a 400 naming the field.
    for bad in [json!(-1), json!("PT1H"), json!(2.5)] {
        let job = chronos3_job(
            "bad",
            "true",
            json!({"maxCompletionTime": bad, "schedule": "R//PT1H"}),
        );
        let (status, body) = server
            .request("POST", "/scheduler/iso8601", Some(job))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["field"], "maxCompletionTime", "{bad}: {body}");
    }
    for (field, bad) in [
        ("scheduleTimeZone", json!("Mars/Olympus")),
        ("cpus", json!(-0.1)),
        ("constraints", json!([["rack", "GROUP_BY"]])),
    ] {
        let mut job = chronos3_job("bad", "true", json!({"schedule": "R//PT1H"}));
        job[field] = bad;
        let (status, body) = server
            .request("POST", "/scheduler/iso8601", Some(job))
            .await;
        assert_eq!(status, 400, "{field}: {body}");
        assert_eq!(body["field"], field, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dron_sync_takes_a_chronos_3_export_file_as_is() {
    let server = Server::start(2).await;
    let url = server.url("");
    let done_dir = server.scratch();
    let export = chronos3_export(&done_dir);
    let dir = server.scratch().join("jobs");
    std::fs::create_dir_all(&dir).unwrap();
    // `curl chronos/v1/scheduler/jobs > jobs/chronos.json`, pretty or not.
    let text = serde_json::to_string_pretty(&export).unwrap();
    std::fs::write(dir.join("chronos.json"), text).unwrap();
    let sync = |extra: &'static [&'static str]| {
        let mut args = vec!["sync", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let url = url.clone();
        async move { dron(&url, &args).await }
    };

    let (code, out, err) = sync(&["--dry-run"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("+ c3-")).count(), 5);
    let (code, out, err) = sync(&[]).await;
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    let at = |name: &str| {
        let line = format!("+ {name}");
        let at = lines.iter().position(|l| *l == line);
        at.unwrap_or_else(|| panic!("{name} not sent: {out}"))
    };
    assert!(at("c3-daily") < at("c3-child"), "parents first: {out}");
    assert!(at("c3-tokyo") < at("c3-docker"), "parents first: {out}");
    assert_stored(&server, &export).await;
    assert_runs(&server, &done_dir).await;

    // The same export again changes nothing: Chronos's spellings (`.000Z` starts, offsets,
    // `scheduleTimeZone: ""`, `maxCompletionTime: 0`, `256.0`) match what the server answers.
    let (code, out, err) = sync(&[]).await;
    assert_eq!(code, 0, "{out}{err}");
    let unchanged: Vec<&str> = out.lines().filter(|l| l.starts_with("= ")).collect();
    assert_eq!(unchanged.len(), 5, "idempotent: {out}");

    // A list that names a job twice, or holds something else than jobs, stops the sync.
    let twice = Value::Array(vec![export[1].clone(), export[1].clone()]).to_string();
    std::fs::write(dir.join("chronos.json"), twice).unwrap();
    let (code, out, err) = sync(&[]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("names job 'c3-daily' twice"), "{err}");
    std::fs::write(dir.join("chronos.json"), "[1, 2]").unwrap();
    let (code, out, err) = sync(&[]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("or a list of them"), "{err}");
    assert_eq!(out, "");
}
