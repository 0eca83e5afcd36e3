//! Online backup: `dron backup DIR` copies every store of a server while it schedules and
//! takes new jobs; `dron restore DIR --data-dir D` prepares a data directory from it, and a
//! server started on it has every job and every run recorded before the backup.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, dron, wait_for};

async fn job_names(server: &Server) -> BTreeSet<String> {
    let jobs = server.ok("GET", "/scheduler/jobs", None).await;
    let jobs = jobs.as_array().cloned().unwrap_or_default();
    jobs.iter()
        .filter_map(|job| Some(job["name"].as_str()?.to_string()))
        .collect()
}

/// The task ids of a job's finished runs.
async fn finished(server: &Server, job: &str) -> BTreeSet<String> {
    let runs = server.runs(job).await;
    let ended = runs.iter().filter(|run| !run["ended"].is_null());
    ended
        .filter_map(|run| Some(run["taskId"].as_str()?.to_string()))
        .collect()
}

fn restore(backup: &std::path::Path, data_dir: &std::path::Path) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dron"))
        .arg("restore")
        .arg(backup)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("running dron restore");
    let text = [output.stdout, output.stderr].concat();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&text).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_job_and_run_before_it() {
    let server = Server::start(2).await;
    // An agent's credential: a restored server must still know it.
    let (status, body) = server
        .request("POST", "/api/agent-tokens", Some(json!({"name": "w9"})))
        .await;
    assert_eq!(status, 201, "{body}");
    for n in 0..10 {
        let job =
            json!({"name": format!("tick-{n}"), "command": "echo tick", "schedule": "R//PT1S"});
        server.create(job).await;
    }
    wait_for(
        "two finished runs of every job",
        Duration::from_secs(30),
        || async {
            let mut all = true;
            for n in 0..10 {
                all &= finished(&server, &format!("tick-{n}")).await.len() >= 2;
            }
            all
        },
    )
    .await;

    // Jobs keep coming while the backup is taken: those acknowledged before it must be in it.
    let created: Arc<Mutex<Vec<String>>> = Arc::default();
    let creating = {
        let (url, http, created) = (
            server.url("/scheduler/iso8601"),
            server.http.clone(),
            created.clone(),
        );
        tokio::spawn(async move {
            for n in 0.. {
                let name = format!("late-{n}");
                let job = json!({"name": name, "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D"});
                let answer = http.post(&url).json(&job).send().await;
                if answer.is_ok_and(|a| a.status() == 204) {
                    created.lock().unwrap().push(name);
                }
            }
        })
    };
    wait_for("jobs being created", Duration::from_secs(10), || async {
        created.lock().unwrap().len() >= 5
    })
    .await;
    let mut before_runs = Vec::new();
    for n in 0..10 {
        let job = format!("tick-{n}");
        before_runs.push((job.clone(), finished(&server, &job).await));
    }
    let mut before_jobs = job_names(&server).await;
    before_jobs.extend(created.lock().unwrap().iter().cloned());

    let backups = tempfile::tempdir().unwrap();
    let dir = backups.path().join("hourly");
    let (code, out, err) = dron(&server.url(""), &["backup", dir.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}\n{}", server.log());
    assert!(
        out.starts_with("backed up 5 stores"),
        "two shards, resources, notifications, agent credentials: {out}"
    );
    creating.abort();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("backup.json")).unwrap()).unwrap();
    assert_eq!(manifest["kind"], "server");

    // The server went on scheduling.
    let seen = finished(&server, "tick-0").await;
    wait_for(
        "a run after the backup",
        Duration::from_secs(10),
        || async { finished(&server, "tick-0").await.len() > seen.len() },
    )
    .await;
    // A second backup into the same directory is refused: a backup never overwrites one.
    let (code, _, err) = dron(&server.url(""), &["backup", dir.to_str().unwrap()]).await;
    assert_eq!(code, 1);
    assert!(err.contains("is not empty"), "{err}");
    drop(server);

    let restored = tempfile::tempdir().unwrap();
    let (code, out) = restore(&dir, &restored.path().join("data"));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("dron serve --data-dir"), "{out}");
    let (code, out) = restore(&dir, &restored.path().join("data"));
    assert_eq!(
        code, 1,
        "a restore into a data directory in use is refused: {out}"
    );
    assert!(out.contains("is not empty"), "{out}");

    let server = Server::start_on(restored, 2, "").await;
    let after_jobs = job_names(&server).await;
    let missing: Vec<&String> = before_jobs.difference(&after_jobs).collect();
    assert!(
        missing.is_empty(),
        "jobs acknowledged before the backup: {missing:?}"
    );
    for (job, runs) in before_runs {
        let after = finished(&server, &job).await;
        let lost: Vec<&String> = runs.difference(&after).collect();
        assert!(lost.is_empty(), "runs of {job} before the backup: {lost:?}");
    }
    let tokens = server.ok("GET", "/api/agent-tokens", None).await;
    assert_eq!(tokens["agentTokens"][0]["name"], "w9", "{tokens}");
    // And it schedules: the restored jobs run again.
    let seen = finished(&server, "tick-0").await;
    wait_for(
        "a run on the restored server",
        Duration::from_secs(15),
        || async { finished(&server, "tick-0").await.len() > seen.len() },
    )
    .await;
}
