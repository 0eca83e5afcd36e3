//! Remote agents end to end: real `dron agent` processes on loopback with the real server,
//! killed with SIGKILL and restarted; the server killed and restarted under them.

mod support;

use std::time::Duration;

use dron_task::protocol::ServerMessage;
use serde_json::{Value, json};
use support::agents::{Agent, agent_view, agents_config, newest_run};
use support::{Server, lines, wait_for};
use tokio_tungstenite::tungstenite::Message;

/// A job that never fires on its own (run with [`run_now`]), with `fields` added.
fn job(name: &str, command: &str, fields: Value) -> Value {
    let mut job = json!({
        "name": name,
        "command": command,
        "schedule": "R/2030-01-01T00:00:00Z/PT24H",
        "retries": 0,
    });
    for (key, value) in fields.as_object().unwrap() {
        job[key] = value.clone();
    }
    job
}

async fn run_now(server: &Server, name: &str) {
    let (status, body) = server
        .request("PUT", &format!("/scheduler/job/{name}"), None)
        .await;
    assert_eq!(status, 204, "run {name}: {body}");
}

/// Waits until the job's newest run is in `state`; answers it.
async fn wait_run_state(server: &Server, job: &str, state: &str) -> Value {
    let what = format!("{job}'s newest run to be {state}");
    wait_for(&what, Duration::from_secs(30), || async {
        newest_run(server, job).await["state"] == state
    })
    .await;
    newest_run(server, job).await
}

#[tokio::test]
async fn tasks_are_placed_by_resources_and_constraints() {
    let server = Server::start_with_config(2, &agents_config(5000)).await;
    let w1 = Agent::start(&server, "w1", 1.0, 4096.0, "rack=r1").await;
    let _w2 = Agent::start(&server, "w2", 1.0, 4096.0, "rack=r2").await;

    // Unknown operators are refused, not dropped.
    let bad = job(
        "bad",
        "true",
        json!({"constraints": [["rack", "GROUP_BY", "r1"]]}),
    );
    let (status, body) = server
        .request("POST", "/scheduler/iso8601", Some(bad))
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("constraints")),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("GROUP_BY"),
        "{body}"
    );

    let pinned = json!({"cpus": 0.5, "constraints": [["rack", "EQUALS", "r2"]]});
    server.create(job("pinned", "true", pinned)).await;
    run_now(&server, "pinned").await;
    let run = wait_run_state(&server, "pinned", "succeeded").await;
    assert_eq!(run["agent"], "w2", "{run}");

    // Four half-core tasks fill both agents; a fifth waits, and says why.
    for i in 0..5 {
        let name = format!("spread-{i}");
        server
            .create(job(&name, "sleep 60", json!({"cpus": 0.5})))
            .await;
        run_now(&server, &name).await;
    }
    wait_for("four tasks running", Duration::from_secs(30), || async {
        let mut running = 0;
        for i in 0..5 {
            let run = newest_run(&server, &format!("spread-{i}")).await;
            running += (run["state"] == "running" && run["agent"].is_string()) as u32;
        }
        running == 4
    })
    .await;
    for name in ["w1", "w2"] {
        let view = agent_view(&server, name).await;
        assert_eq!(view["used"]["cpus"], 1.0, "{view}");
        assert_eq!(view["free"]["cpus"], 0.0, "{view}");
        assert_eq!(view["tasks"], 2, "{view}");
    }
    let mut waiting = Vec::new();
    for i in 0..5 {
        let run = newest_run(&server, &format!("spread-{i}")).await;
        if run["agent"].is_null() {
            waiting.push(run);
        }
    }
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    let message = waiting[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("waiting for resources"), "{}", waiting[0]);

    // A task no agent can ever fit says so.
    server.create(job("huge", "true", json!({"cpus": 8}))).await;
    run_now(&server, "huge").await;
    wait_for(
        "huge to explain its wait",
        Duration::from_secs(10),
        || async {
            let run = newest_run(&server, "huge").await;
            run["message"]
                .as_str()
                .is_some_and(|m| m.contains("no connected agent offers 8 cpus"))
        },
    )
    .await;

    // The CLI lists both agents with what they use.
    let listing = std::process::Command::new(env!("CARGO_BIN_EXE_dron"))
        .args(["agents", "--url", &server.url("")])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.status.success(), "{table}");
    assert!(
        table.contains("w1") && table.contains("w2") && table.contains("1/1"),
        "{table}"
    );
    drop(w1);
}

#[tokio::test]
async fn a_killed_agents_task_is_retried_elsewhere_and_killed_when_it_returns() {
    let server = Server::start_with_config(1, &agents_config(1500)).await;
    let mut w1 = Agent::start(&server, "w1", 1.0, 4096.0, "").await;
    let log = server.scratch().join("lost.log");
    // The first attempt outlives the test; the relaunched one finishes at once.
    let command = format!(
        "echo \"$DRON_TASK_ID\" >> {}; if [ \"$DRON_ATTEMPT\" = 0 ]; then sleep 120; fi",
        log.display()
    );
    server
        .create(job("lost", &command, json!({"cpus": 1})))
        .await;
    run_now(&server, "lost").await;
    let first = wait_run_state(&server, "lost", "running").await;
    wait_for(
        "the first attempt to start",
        Duration::from_secs(10),
        || async { lines(&log).len() == 1 },
    )
    .await;
    assert_eq!(first["agent"], "w1");

    // w1 dies (its task goes on under its shim); w2 joins. After the agent timeout the
    // attempt is declared lost and relaunched on w2, without spending a retry.
    w1.kill9();
    let _w2 = Agent::start(&server, "w2", 1.0, 4096.0, "").await;
    let done = wait_run_state(&server, "lost", "succeeded").await;
    assert_eq!(
        (done["agent"].as_str(), done["attempt"].as_u64()),
        (Some("w2"), Some(1)),
        "{done}"
    );
    assert_eq!(done["lostAttempts"], 1, "{done}");
    assert_eq!(agent_view(&server, "w1").await["state"], "lost");

    // w1 comes back still running attempt 0: it is killed there and counted nowhere.
    w1.restart();
    w1.wait_active(&server).await;
    let status = w1
        .runs_root()
        .join("lost")
        .read_dir()
        .unwrap()
        .flatten()
        .find_map(|d| {
            let status = d.path().join("status.json");
            (d.file_name().to_string_lossy().ends_with("-0")).then_some(status)
        });
    let status = status.expect("attempt 0's run directory on w1");
    wait_for(
        "the stale attempt to be killed on w1",
        Duration::from_secs(20),
        || async { status.exists() },
    )
    .await;
    let recorded: Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert!(
        recorded["signal"].is_number(),
        "killed by a signal: {recorded}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await; // let a wrong count show up
    let job = server.job("lost").await;
    assert_eq!(
        (job["successCount"].as_u64(), job["errorCount"].as_u64()),
        (Some(1), Some(0))
    );
    let runs = server.runs("lost").await;
    assert_eq!(runs.len(), 1, "one run, not two: {runs:?}");
    assert!(
        w1.log().contains("kill") || server.log().contains("stale attempt"),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn a_restarted_agent_adopts_its_running_task() {
    let server = Server::start_with_config(1, &agents_config(20_000)).await;
    let mut w1 = Agent::start(&server, "w1", 2.0, 4096.0, "").await;
    let marker = server.scratch().join("adopted.log");
    let command = format!("sleep 3; echo \"$DRON_TASK_ID\" >> {}", marker.display());
    server.create(job("adoptee", &command, json!({}))).await;
    run_now(&server, "adoptee").await;
    wait_run_state(&server, "adoptee", "running").await;
    w1.restart();
    w1.wait_active(&server).await;
    let run = wait_run_state(&server, "adoptee", "succeeded").await;
    assert_eq!(
        (run["attempt"].as_u64(), run["lostAttempts"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(run["agent"], "w1");
    assert_eq!(lines(&marker).len(), 1, "ran once");
    assert!(
        w1.log().contains("adopted a task still running"),
        "{}",
        w1.log()
    );
}

#[tokio::test]
async fn every_status_arrives_once_across_a_server_restart() {
    let mut server = Server::start_with_config(2, &agents_config(20_000)).await;
    let w1 = Agent::start(&server, "w1", 2.0, 4096.0, "").await;
    let w2 = Agent::start(&server, "w2", 2.0, 4096.0, "").await;
    let log = server.scratch().join("restart.log");
    let names: Vec<String> = (0..6).map(|i| format!("through-{i}")).collect();
    for name in &names {
        let command = format!("sleep 2; echo \"$DRON_TASK_ID\" >> {}", log.display());
        server
            .create(job(name, &command, json!({"cpus": 0.5})))
            .await;
        run_now(&server, name).await;
    }
    for name in &names {
        wait_run_state(&server, name, "running").await;
    }
    // The tasks end while the server is down; the agents keep their statuses until acked.
    server.kill9();
    wait_for("every task to end", Duration::from_secs(20), || async {
        lines(&log).len() == names.len()
    })
    .await;
    server.restart().await;
    for name in &names {
        let run = wait_run_state(&server, name, "succeeded").await;
        assert_eq!(run["attempt"], 0, "{run}");
        let job = server.job(name).await;
        assert_eq!(job["successCount"], 1, "{name} counted once: {job}");
        assert_eq!(server.runs(name).await.len(), 1);
    }
    for agent in [&w1, &w2] {
        wait_for(
            "the agent's statuses to be acknowledged",
            Duration::from_secs(10),
            || async {
                std::fs::read_dir(agent.work_dir.path().join("work/tasks"))
                    .unwrap()
                    .count()
                    == 0
            },
        )
        .await;
    }
}

#[tokio::test]
async fn owners_get_their_dominant_resource_fair_shares() {
    let server = Server::start_with_config(2, &agents_config(5000)).await;
    // The DRF paper's example: 9 cpus and 18 GB; alice's tasks need <1 cpu, 4 GB>, bob's
    // <3 cpus, 1 GB>. With both waiting, DRF runs 3 of alice's and 2 of bob's.
    let demands = [
        ("alice", json!({"cpus": 1, "mem": 4096, "disk": 0})),
        ("bob", json!({"cpus": 3, "mem": 1024, "disk": 0})),
    ];
    for (owner, demand) in &demands {
        for i in 0..6 {
            let name = format!("{owner}-{i}");
            let mut fields = demand.clone();
            fields["owner"] = json!(owner);
            server.create(job(&name, "sleep 60", fields)).await;
            run_now(&server, &name).await;
        }
    }
    wait_for(
        "every task to wait for an agent",
        Duration::from_secs(10),
        || async {
            let run = newest_run(&server, "bob-5").await;
            run["message"]
                .as_str()
                .is_some_and(|m| m.contains("no agent is connected"))
        },
    )
    .await;
    let _big = Agent::start(&server, "big", 9.0, 18_432.0, "").await;
    let running = |owner: &'static str| {
        let server = &server;
        async move {
            let mut count = 0;
            for i in 0..6 {
                let run = newest_run(server, &format!("{owner}-{i}")).await;
                count += (run["agent"] == "big") as usize;
            }
            count
        }
    };
    wait_for("five tasks placed", Duration::from_secs(20), || async {
        running("alice").await + running("bob").await == 5
    })
    .await;
    assert_eq!((running("alice").await, running("bob").await), (3, 2));
}

#[tokio::test]
async fn an_agent_refuses_a_server_that_was_superseded() {
    let mut server = Server::start_with_config(1, &agents_config(5000)).await;
    let agent = Agent::start(&server, "w1", 1.0, 1024.0, "").await;
    let epoch_file = server.data.path().join("data/epoch");
    let old_epoch = std::fs::read_to_string(&epoch_file).unwrap();
    let old: u64 = old_epoch.trim().parse().unwrap();

    // A server with a newer epoch commands the agent (5 minutes ahead: over plain ws://
    // without an epoch key an agent believes no more than 10 minutes ahead of its clock,
    // docs/security.md)...
    server.kill9();
    std::fs::write(&epoch_file, (old + 300_000).to_string()).unwrap();
    server.restart().await;
    agent.wait_active(&server).await;

    // ...then the old one comes back (its data restored as it was): refused both ways.
    server.kill9();
    std::fs::write(&epoch_file, old_epoch).unwrap();
    server.restart().await;
    server.create(job("fenced", "true", json!({}))).await;
    run_now(&server, "fenced").await;
    wait_for(
        "the agent to refuse the stale server",
        Duration::from_secs(20),
        || async { agent.log().contains("stale server epoch") },
    )
    .await;
    assert!(server.log().contains("superseded"), "{}", server.log());
    assert_ne!(agent_view(&server, "w1").await["state"], "active");
    let run = newest_run(&server, "fenced").await;
    assert!(
        run["agent"].is_null() && run["state"] == "staging",
        "never launched: {run}"
    );
}

#[tokio::test]
async fn a_remote_runs_output_is_read_from_its_agent() {
    let server = Server::start_with_config(1, &agents_config(5000)).await;
    let mut w1 = Agent::start(&server, "w1", 1.0, 1024.0, "").await;
    let command = "echo hello from $DRON_JOB; echo oops >&2; sleep 1; echo bye";
    server.create(job("printer", command, json!({}))).await;
    run_now(&server, "printer").await;
    let running = wait_run_state(&server, "printer", "running").await;
    let task = running["taskId"].as_str().unwrap().to_string();
    let stdout = server.url(&format!("/api/jobs/printer/runs/{task}/stdout"));

    // Followed while it runs, then read whole once it ended.
    let first = server
        .http
        .get(format!("{stdout}?follow=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let next = first.headers()["x-dron-next-offset"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(first.text().await.unwrap(), "hello from printer\n");
    wait_run_state(&server, "printer", "succeeded").await;
    let rest = server
        .http
        .get(format!("{stdout}?offset={next}"))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.headers()["x-dron-run-finished"], "true");
    assert_eq!(rest.text().await.unwrap(), "bye\n");
    let logs = std::process::Command::new(env!("CARGO_BIN_EXE_dron"))
        .args(["logs", "printer", "--stderr", "--url", &server.url("")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "oops\n");

    // With the agent gone, the answer says where the output is.
    w1.kill9();
    let (status, body) = server
        .request(
            "GET",
            &format!("/api/jobs/printer/runs/{task}/stdout"),
            None,
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("on agent 'w1'"),
        "{body}"
    );
}

#[tokio::test]
async fn a_kill_waits_for_an_agent_that_is_not_back_after_a_server_restart() {
    let mut server = Server::start_with_config(1, &agents_config(30_000)).await;
    let mut w1 = Agent::start(&server, "w1", 1.0, 1024.0, "").await;
    server.create(job("stubborn", "sleep 120", json!({}))).await;
    run_now(&server, "stubborn").await;
    wait_run_state(&server, "stubborn", "running").await;
    // Both go down; the server comes back first and is asked to kill the task.
    w1.kill9();
    server.restart().await;
    let (status, body) = server
        .request("DELETE", "/scheduler/task/kill/stubborn", None)
        .await;
    assert_eq!(status, 204, "{body}");
    w1.restart();
    w1.wait_active(&server).await;
    let run = wait_run_state(&server, "stubborn", "killed").await;
    assert_eq!(run["agent"], "w1", "{run}");
    let status_file = support::find_files(&w1.runs_root(), "status.json");
    assert_eq!(status_file.len(), 1, "the task ended on w1");
    let recorded: Value = serde_json::from_slice(&std::fs::read(&status_file[0]).unwrap()).unwrap();
    assert!(recorded["signal"].is_number(), "killed: {recorded}");
}

/// A raw agent connection (no `dron agent`) with a receive buffer of a few KB, so that what
/// the server writes to it and it does not read piles up on the server's side quickly.
async fn raw_agent(server: &Server, name: &str) -> RawSocket {
    use futures_util::SinkExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let stream = socket.connect(address).await.unwrap();
    let url = format!("ws://127.0.0.1:{}/api/agents/connect", server.port);
    let (mut socket, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let register = dron_task::protocol::AgentMessage::Register {
        protocol: dron_task::protocol::PROTOCOL_VERSION,
        agent_id: format!("{name}-id"),
        name: name.to_string(),
        resources: dron_model::demand::Resources::new(64.0, 65536.0, 65536.0),
        attributes: Default::default(),
        tasks: Vec::new(),
        newest_epoch: 0,
        nonce: None,
        epochs_refused: 0,
    };
    let text = serde_json::to_string(&register).unwrap();
    socket.send(Message::Text(text.into())).await.unwrap();
    let answer = next_server_message(&mut socket).await;
    assert!(
        matches!(answer, Some(ServerMessage::Registered { .. })),
        "{answer:?}"
    );
    socket
}

type RawSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// The next protocol message on a raw agent connection; None once it is closed.
async fn next_server_message(socket: &mut RawSocket) -> Option<ServerMessage> {
    use futures_util::StreamExt;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(20), socket.next()).await;
        match next.expect("the server said nothing for 20 s") {
            Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// A metric's value from /metrics (0 when absent).
async fn metric(server: &Server, series: &str) -> f64 {
    let text = server.metrics().await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// An agent that stops reading its socket while launches keep coming: what waits for it is
/// bounded (`[agents] outbox_messages`, 2 here). Once its outbox is full nothing more is
/// placed on it (the other launches wait for an offer); its connection is closed once a
/// message has waited 10 s to be written, well before the agent timeout (a minute here); and
/// when it registers again every launch placed on it arrives, then those that waited. The
/// launches are large (a 900 KB command each), so that a few fill the socket's buffers.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_stops_reading_gets_no_more_tasks_and_loses_no_launch() {
    let config = format!("{}outbox_messages = 2\n", agents_config(60_000));
    let server = Server::start_with_config(1, &config).await;
    let unread = raw_agent(&server, "stuck").await;
    let command = format!("true # {}", "x".repeat(900_000));
    let jobs: Vec<String> = (0..16).map(|i| format!("big-{i}")).collect();
    for name in &jobs {
        server
            .create(job(name, &command, json!({"cpus": 0.5})))
            .await;
        run_now(&server, name).await;
    }
    let full = "dron_agent_outbox_full_total{agent=\"stuck\"}";
    wait_for(
        "the stuck agent's outbox to fill",
        Duration::from_secs(20),
        || async { metric(&server, full).await >= 1.0 },
    )
    .await;
    wait_for(
        "launches to wait for an offer",
        Duration::from_secs(20),
        || async { metric(&server, "dron_tasks_waiting_for_offer").await >= 4.0 },
    )
    .await;
    assert_eq!(
        metric(&server, "dron_agent_outbox{agent=\"stuck\"}").await,
        2.0
    );
    wait_for(
        "the stuck agent's connection to be closed",
        Duration::from_secs(30),
        || async { agent_view(&server, "stuck").await["state"] == "disconnected" },
    )
    .await;
    let closed = "dron_agents_disconnected_slow_total{why=\"write_timeout\"}";
    assert_eq!(metric(&server, closed).await, 1.0);
    drop(unread);

    // Back, reading: every job's launch arrives (task ids name their job).
    let mut again = raw_agent(&server, "stuck").await;
    let expected: std::collections::BTreeSet<String> = jobs.iter().cloned().collect();
    let mut launched = std::collections::BTreeSet::new();
    while launched != expected {
        match next_server_message(&mut again).await {
            Some(ServerMessage::Launch { task, .. }) => {
                let job = task.task_id.split(':').nth(3).unwrap_or_default();
                launched.insert(job.to_string());
            }
            Some(_) => {}
            None => panic!("closed with {launched:?} launched"),
        }
    }
}
