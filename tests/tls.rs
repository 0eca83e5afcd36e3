//! TLS (issue 19), against the real binary: the API, the CLI, agents over wss:// and a
//! cluster's Raft and forwarding over https://, with certificates made by `openssl` in the
//! test; and agents refusing a server epoch nobody proved (a fake server speaking the agent
//! protocol sends a forged one).

mod support;

use std::time::{Duration, Instant};

use dron_task::protocol::{AgentMessage, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::agents::{Agent, agents_config};
use support::cluster::{Cluster, ClusterAgent};
use support::tls::{Certs, client_trusting};
use support::{Server, dron_with_env, run_to_success, wait_for};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// GET `url` with `client`; the failure (its causes, as `Debug` shows them), and how long it
/// took.
async fn refused(client: &reqwest::Client, url: &str) -> (String, Duration) {
    let started = Instant::now();
    let error = client.get(url).send().await.expect_err("refused");
    (format!("{error:?}"), started.elapsed())
}

#[tokio::test]
async fn the_api_over_https_is_verified_with_the_ca_and_refused_clearly_without_it() {
    let certs = Certs::generate();
    // Healthy as seen by a client trusting the CA only.
    let server = Server::start_tls(2, "", &certs).await;
    let job = json!({"name": "over-tls", "command": "true", "schedule": "R1//PT1H"});
    run_to_success(&server.http, &server.url(""), job, || server.log()).await;

    let health = server.url("/health");
    let answer = server.ok("GET", "/health", None).await;
    assert_eq!(
        answer["leaderAddress"],
        server.url(""),
        "advertised as https://"
    );
    let no_ca = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for (client, what) in [
        (no_ca, "the system's CAs"),
        (client_trusting(&certs.other_ca()), "an unrelated CA"),
    ] {
        let (error, took) = refused(&client, &health).await;
        assert!(
            error.contains("certificate verify failed"),
            "{what}: {error}"
        );
        assert!(took < Duration::from_secs(5), "{what}: {took:?}");
    }
    // The right CA, a name the certificate does not list.
    let wrong_name = reqwest::Client::builder()
        .resolve("dron.test", ([127, 0, 0, 1], server.port).into())
        .tls_certs_only([
            reqwest::Certificate::from_pem(&std::fs::read(certs.ca()).unwrap()).unwrap(),
        ])
        .build()
        .unwrap();
    let url = format!("https://dron.test:{}/health", server.port);
    let (error, _) = refused(&wrong_name, &url).await;
    assert!(error.contains("certificate verify failed"), "{error}");
    // Plain HTTP at the TLS port is told what to do.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/health", server.port))
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    assert!(plain.text().await.unwrap().contains("use https://"));

    // The CLI: --ca-file, DRON_CA_FILE, and a clear failure without.
    let url = server.url("");
    let ca = certs.ca();
    let list = ["job", "list", "--url", &url];
    let mut with_flag = list.to_vec();
    with_flag.extend(["--ca-file", ca.to_str().unwrap()]);
    let (code, out, err) = dron_with_env(&with_flag, &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("over-tls"), "{out}");
    let (code, out, err) = dron_with_env(&list, &[("DRON_CA_FILE", ca.as_path())]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("over-tls"), "{out}");
    let (code, _, err) = dron_with_env(&list, &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("certificate verify failed") && err.contains("--ca-file"),
        "{err}"
    );
    let other = certs.other_ca();
    let (code, _, err) = dron_with_env(&list, &[("DRON_CA_FILE", other.as_path())]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("certificate verify failed"), "{err}");
}

#[tokio::test]
async fn an_agent_over_wss_registers_and_runs_a_job_and_refuses_an_unknown_ca() {
    let certs = Certs::generate();
    let server = Server::start_tls(2, &agents_config(5000), &certs).await;
    let ca = certs.ca();
    let agent = Agent::start_with_flags(&server, "w1", &["--ca-file", ca.to_str().unwrap()]).await;
    let job = json!({"name": "on-w1", "command": "true", "schedule": "R1//PT1H"});
    run_to_success(&server.http, &server.url(""), job, || server.log()).await;
    let runs = server.runs("on-w1").await;
    assert_eq!(runs[0]["agent"], "w1", "{runs:?}");
    assert!(agent.fence() > 0, "the TLS server's epoch was believed");

    let other = certs.other_ca();
    let stranger = Agent::spawn_with_flags(
        &server.url(""),
        "w2",
        &["--ca-file", other.to_str().unwrap()],
    );
    wait_for("the agent to say why", Duration::from_secs(20), || async {
        stranger.log().contains("certificate verify failed")
    })
    .await;
    assert!(stranger.log().contains("--ca-file"), "{}", stranger.log());
    let agents = server.ok("GET", "/api/agents", None).await;
    let names: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["w1"]);
}

#[tokio::test]
async fn a_cluster_over_tls_elects_a_leader_forwards_and_replicates() {
    let certs = Certs::generate();
    // Started: a leader elected over https:// Raft traffic.
    let mut cluster = Cluster::start_tls(3, &certs).await;
    assert!(cluster.nodes[0].url("").starts_with("https://"));
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let job = json!({"name": "replicated", "command": "true", "schedule": "R1//PT1H"});
    // Through a follower: forwarded to the leader over https://.
    let (status, body) = cluster
        .request(follower, "POST", "/scheduler/iso8601", Some(job))
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");
    let ca = certs.ca();
    let _agent =
        ClusterAgent::start_with_args(&cluster, "w1", 1.0, &["--ca-file", ca.to_str().unwrap()]);
    let runs = "/api/jobs/replicated/runs";
    wait_for(
        "the job to run on the agent",
        Duration::from_secs(30),
        || async {
            let Ok((_, body)) = cluster.request(follower, "GET", runs, None).await else {
                return false;
            };
            body["runs"][0]["state"] == "succeeded"
        },
    )
    .await;
    // The next leader has the job and its run: replicated.
    cluster.kill9(leader);
    let next = cluster.wait_for_leader().await;
    assert_ne!(next, leader);
    let (status, body) = cluster.request(next, "GET", runs, None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runs"][0]["state"], "succeeded", "{body}");
}

/// A fake server at an address of its own: it answers every agent's registration with
/// `epoch` (and no proof), then says nothing. Answers its address and how many
/// registrations it saw.
async fn fake_server(epoch: u64) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(AtomicU64::new(0));
    let counted = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    if let Ok(AgentMessage::Register { .. }) = serde_json::from_str(&text) {
                        counted.fetch_add(1, Ordering::Relaxed);
                        let forged = ServerMessage::Registered {
                            epoch,
                            heartbeat_ms: 100,
                            proof: None,
                        };
                        let text = serde_json::to_string(&forged).unwrap();
                        let _ = socket.send(Message::Text(text.into())).await;
                    }
                }
            });
        }
    });
    (address, seen)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits until the fake server saw a registration and the agent logged its refusal.
async fn wait_refused(agent: &Agent, seen: &std::sync::atomic::AtomicU64) {
    wait_for(
        "the agent to refuse the forged epoch",
        Duration::from_secs(20),
        || async {
            seen.load(std::sync::atomic::Ordering::Relaxed) > 0
                && agent.log().contains("refusing this server's epoch")
        },
    )
    .await;
}

#[tokio::test]
async fn an_agent_refuses_a_forged_epoch_jump_and_still_obeys_the_real_server() {
    let server = Server::start_with_config(2, &agents_config(5000)).await;
    let (fake, seen) = fake_server(u64::MAX).await;
    // The fake first: before, the agent recorded u64::MAX and the real server was locked out.
    let servers = format!("{fake},{}", server.url(""));
    let agent = Agent::spawn_with_flags(&servers, "w1", &[]);
    wait_refused(&agent, &seen).await;
    agent.wait_active(&server).await;
    assert!(agent.fence() < now_ms() + 60_000, "fence {}", agent.fence());
    let job = json!({"name": "obeyed", "command": "true", "schedule": "R1//PT1H"});
    run_to_success(&server.http, &server.url(""), job, || server.log()).await;
    assert!(
        agent.log().contains("ahead of this machine's clock"),
        "{}",
        agent.log()
    );
    // The real server heard of it.
    let metrics = server.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("dron_agent_epochs_refused{agent=\"w1\"}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn with_an_epoch_key_an_agent_believes_only_a_proved_epoch() {
    let key_dir = tempfile::tempdir().unwrap();
    let key = key_dir.path().join("epoch-key");
    std::fs::write(&key, "an-epoch-key-of-enough-length\n").unwrap();
    let config = format!("{}epoch_key_file = {:?}\n", agents_config(5000), key);
    let server = Server::start_with_config(2, &config).await;
    // A plausible epoch (a minute ahead: believable by the clock), without the proof.
    let (fake, seen) = fake_server(now_ms() + 60_000).await;
    let servers = format!("{fake},{}", server.url(""));
    let flags = ["--epoch-key-file", key.to_str().unwrap()];
    let agent = Agent::spawn_with_flags(&servers, "w1", &flags);
    wait_refused(&agent, &seen).await;
    assert!(
        agent.log().contains("did not prove it with the epoch key"),
        "{}",
        agent.log()
    );
    // The real server proves its epoch with the key.
    agent.wait_active(&server).await;
    let job = json!({"name": "proved", "command": "true", "schedule": "R1//PT1H"});
    run_to_success(&server.http, &server.url(""), job, || server.log()).await;
    assert!(agent.fence() < now_ms() + 30_000, "fence {}", agent.fence());
}
