//! Trust boundaries (issue 19), each attack against the real server: agents that are not who
//! they say, agents speaking of tasks they do not hold, offers that win every placement,
//! connections from web pages, connections that never register.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use dron_model::demand::Resources;
use dron_task::protocol::{AgentMessage, OutputChunk, PROTOCOL_VERSION, ServerMessage};
use dron_task::{TaskEnd, TaskEvent};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::agents::{Agent, agent_view, agents_config, newest_run};
use support::{Server, wait_for};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens the agents' WebSocket with `headers`; Err: the HTTP status of a refusal.
async fn connect(server: &Server, headers: &[(&str, &str)]) -> Result<Socket, u16> {
    connect_to(&server.url(""), headers).await
}

/// As `connect`, to the server at `base` (`http://host:port`).
async fn connect_to(base: &str, headers: &[(&str, &str)]) -> Result<Socket, u16> {
    let url = format!("{base}/api/agents/connect").replacen("http", "ws", 1);
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request
            .headers_mut()
            .insert(name, value.parse().expect("a header value"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(error) => panic!("connecting to the agents' endpoint: {error}"),
    }
}

async fn send(socket: &mut Socket, message: &AgentMessage) {
    let text = serde_json::to_string(message).unwrap();
    socket.send(Message::Text(text.into())).await.unwrap();
}

/// The next protocol message; None when the server closed the connection.
async fn receive(socket: &mut Socket) -> Option<ServerMessage> {
    let within = Duration::from_secs(20);
    loop {
        let next = tokio::time::timeout(within, socket.next()).await;
        match next.expect("the server said nothing for 20 s") {
            Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

fn registration(name: &str, agent_id: &str, cpus: f64) -> AgentMessage {
    AgentMessage::Register {
        protocol: PROTOCOL_VERSION,
        agent_id: agent_id.to_string(),
        name: name.to_string(),
        resources: Resources::new(cpus, 1024.0, 1024.0),
        attributes: BTreeMap::new(),
        tasks: Vec::new(),
        newest_epoch: 0,
        nonce: None,
        epochs_refused: 0,
    }
}

/// Registers on `socket`; answers the server's first answer.
async fn register(socket: &mut Socket, name: &str, agent_id: &str, cpus: f64) -> ServerMessage {
    send(socket, &registration(name, agent_id, cpus)).await;
    receive(socket)
        .await
        .expect("an answer to the registration")
}

fn refused(answer: &ServerMessage, why: &str) -> bool {
    matches!(answer, ServerMessage::Refused { reason } if reason.contains(why))
}

/// `dron_agent_messages_dropped_total{kind}`, 0 before the first.
async fn dropped(server: &Server, kind: &str) -> u64 {
    let text = server.http.get(server.url("/metrics")).send().await;
    let text = text.unwrap().text().await.unwrap();
    let series = format!("dron_agent_messages_dropped_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A job of `command` started now, running on an agent: answers its task id.
async fn running_task(server: &Server, name: &str, command: &str) -> String {
    let job = json!({"name": name, "command": command, "schedule": "R/2099-01-01T00:00:00Z/P1D", "retries": 0});
    server.create(job).await;
    let (status, body) = server
        .request("PUT", &format!("/scheduler/job/{name}"), None)
        .await;
    assert_eq!(status, 204, "run {name}: {body}");
    let run = server.wait_for_run(name, "running").await;
    wait_for(
        "the run to have started on an agent",
        Duration::from_secs(30),
        || async { newest_run(server, name).await["agent"].is_string() },
    )
    .await;
    run["taskId"].as_str().expect("a task id").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_cannot_end_fail_or_read_a_task_they_do_not_hold() {
    let server = Server::start_with_config(1, &agents_config(10_000)).await;
    let _w1 = Agent::start(&server, "w1", 2.0, 2048.0, "").await;
    let task = running_task(&server, "held", "sleep 60").await;

    // Another agent (accepted without credentials on a loopback server without auth) says
    // the task succeeded, that it refused it, and answers a read it was never asked.
    let mut intruder = connect(&server, &[]).await.unwrap();
    let answer = register(&mut intruder, "intruder", "intruder-id", 1.0).await;
    assert!(
        matches!(answer, ServerMessage::Registered { .. }),
        "{answer:?}"
    );
    let success = TaskEvent::Ended {
        end: TaskEnd::Exited(0),
        at_ms: 0,
    };
    let status = AgentMessage::Status {
        task_id: task.clone(),
        event: success,
    };
    let rejected = AgentMessage::Rejected {
        task_id: Some(task.clone()),
        reason: "no".into(),
    };
    let output = AgentMessage::Output {
        request: 1,
        chunk: Ok(OutputChunk {
            base64: String::new(),
            next: 0,
            finished: true,
        }),
    };
    for message in [&status, &rejected, &output] {
        send(&mut intruder, message).await;
    }
    // A connection that never registered tries the same.
    let mut anonymous = connect(&server, &[]).await.unwrap();
    for message in [&status, &rejected, &output] {
        send(&mut anonymous, message).await;
    }

    wait_for(
        "the six messages to be dropped",
        Duration::from_secs(20),
        || async {
            dropped(&server, "status").await >= 2
                && dropped(&server, "rejected").await >= 2
                && dropped(&server, "output").await >= 2
        },
    )
    .await;
    let run = newest_run(&server, "held").await;
    assert_eq!(
        (run["state"].as_str(), run["agent"].as_str()),
        (Some("running"), Some("w1")),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_agents_name_and_an_outsized_offer_are_refused() {
    let server = Server::start_with_config(1, &agents_config(10_000)).await;
    let _w1 = Agent::start(&server, "w1", 1.0, 1024.0, "").await;
    // Even with the agent's own id (which the API shows), a second connection is refused
    // while the first is alive.
    let id = agent_view(&server, "w1").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut twin = connect(&server, &[]).await.unwrap();
    let answer = register(&mut twin, "w1", &id, 1.0).await;
    assert!(refused(&answer, "connected already"), "{answer:?}");
    assert_eq!(agent_view(&server, "w1").await["state"], "active");

    let mut greedy = connect(&server, &[]).await.unwrap();
    let answer = register(&mut greedy, "greedy", "greedy-id", 1e300).await;
    assert!(refused(&answer, "offer of"), "{answer:?}");
    assert!(agent_view(&server, "greedy").await.is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_web_page_cannot_open_the_agents_websocket() {
    let server = Server::start_with_config(1, &agents_config(10_000)).await;
    let origin = [("origin", "http://attacker.example")];
    assert_eq!(connect(&server, &origin).await.err(), Some(403));
    assert!(connect(&server, &[]).await.is_ok(), "agents send no Origin");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_does_not_register_is_closed() {
    let server = Server::start_with_config(1, &agents_config(10_000)).await;
    let mut idle = connect(&server, &[]).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(receive(&mut idle).await, None, "closed without a word");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(9), "closed after {waited:?}");
}

const API_TOKEN: &str = "the-api-token";

/// The server's client sends the API token (the support's requests and the agents' wait).
fn with_api_token(server: &mut Server) {
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {API_TOKEN}").parse().unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, bearer);
    server.http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
}

async fn api(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    server.request(method, path, body).await
}

async fn create_token(server: &Server, name: &str) -> String {
    let (status, body) = api(
        server,
        "POST",
        "/api/agent-tokens",
        Some(json!({"name": name})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_prove_who_they_are_with_credentials_of_their_own() {
    let config = format!(
        "{}[auth]\ntokens = [\"{API_TOKEN}\"]\n",
        agents_config(10_000)
    );
    let mut server = Server::start_with_config(1, &config).await;
    with_api_token(&mut server);
    let api_bearer = format!("Bearer {API_TOKEN}");
    // Without a credential, or with the API's, no agent gets in.
    assert_eq!(connect(&server, &[]).await.err(), Some(401));
    let with_api_token = [("authorization", api_bearer.as_str())];
    assert_eq!(connect(&server, &with_api_token).await.err(), Some(401));

    // Credentials are made through the API, by its users only, once per name.
    let anonymous = reqwest::Client::new()
        .post(server.url("/api/agent-tokens"))
        .json(&json!({"name": "w1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let token = create_token(&server, "w1").await;
    let (status, body) = api(
        &server,
        "POST",
        "/api/agent-tokens",
        Some(json!({"name": "w1"})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = api(
        &server,
        "POST",
        "/api/agent-tokens",
        Some(json!({"name": "a b"})),
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("name")),
        "{body}"
    );
    let (_, listed) = api(&server, "GET", "/api/agent-tokens", None).await;
    assert_eq!(listed["agentTokens"][0]["name"], "w1", "{listed}");
    assert!(
        !listed.to_string().contains(&token),
        "the list shows no secret"
    );

    // The real agent connects with it; its credential names it.
    let token_file = server.scratch().join("w1.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let w1 = Agent::start_with_token_file(&server, "w1", &token_file).await;

    // The credential cannot register another name; a forged secret gets nowhere.
    let bearer = format!("Bearer {token}");
    let mut other = connect(&server, &[("authorization", bearer.as_str())])
        .await
        .unwrap();
    let answer = register(&mut other, "w2", "w2-id", 1.0).await;
    assert!(refused(&answer, "credential is agent 'w1'"), "{answer:?}");
    let forged = format!("Bearer w1.{}", "0".repeat(64));
    assert_eq!(
        connect(&server, &[("authorization", forged.as_str())])
            .await
            .err(),
        Some(401)
    );

    // Revoked: the agent's connection is closed and it cannot come back.
    let (status, body) = api(&server, "DELETE", "/api/agent-tokens/w1", None).await;
    assert_eq!(status, 200, "{body}");
    wait_for("w1 to be disconnected", Duration::from_secs(20), || async {
        agent_view(&server, "w1").await["state"] != "active"
    })
    .await;
    assert_eq!(
        connect(&server, &[("authorization", bearer.as_str())])
            .await
            .err(),
        Some(401)
    );
    drop(w1);

    // Credentials outlive a restart (kept hashed, in the server's database).
    let token = create_token(&server, "w2").await;
    server.restart().await;
    let bearer = format!("Bearer {token}");
    let mut w2 = connect(&server, &[("authorization", bearer.as_str())])
        .await
        .unwrap();
    let answer = register(&mut w2, "w2", "w2-id", 1.0).await;
    assert!(
        matches!(answer, ServerMessage::Registered { .. }),
        "{answer:?}"
    );
    let stored = std::fs::read_dir(server.data.path().join("data/agent-tokens")).unwrap();
    for file in stored {
        let bytes = std::fs::read(file.unwrap().path()).unwrap_or_default();
        let secret = token.rsplit_once('.').unwrap().1;
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "a secret is stored in the clear"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_agent_credentials_count_toward_the_failed_login_limit() {
    let config = format!(
        "{}[auth]\ntokens = [\"{API_TOKEN}\"]\n",
        agents_config(10_000)
    );
    let mut server = Server::start_with_config(1, &config).await;
    with_api_token(&mut server);
    let token = create_token(&server, "w1").await;
    let forged = format!("Bearer w1.{}", "0".repeat(64));
    for attempt in 0..10 {
        let refused = connect(&server, &[("authorization", forged.as_str())]).await;
        assert_eq!(refused.err(), Some(401), "attempt {attempt}");
    }
    // The 11th waits for the minute to end, even with the right credential...
    let bearer = format!("Bearer {token}");
    let blocked = connect(&server, &[("authorization", bearer.as_str())]).await;
    assert_eq!(blocked.err(), Some(429));
    // ...and so does the API from that address: one limit for both.
    let api = reqwest::Client::new()
        .get(server.url("/api/agents"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 429);
    assert!(api.headers().contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebinding_host_is_refused_and_the_ui_cannot_be_framed() {
    let server = Server::start(1).await;
    let job = json!({"name": "rebound", "command": "touch /tmp/owned", "schedule": "R1//PT1H"});
    let rebound = server
        .http
        .post(server.url("/scheduler/iso8601"))
        .header("host", format!("attacker.example:{}", server.port))
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    let body: Value = rebound.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("attacker.example"),
        "{body}"
    );
    let (status, _) = server.request("GET", "/scheduler/job/rebound", None).await;
    assert_eq!(status, 404, "the job was not created");
    for host in ["localhost", "127.0.0.1"] {
        let answer = server
            .http
            .get(server.url("/health"))
            .header("host", format!("{host}:{}", server.port))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{host}");
    }

    let ui = server.http.get(server.url("/ui/")).send().await.unwrap();
    assert_eq!(ui.headers()["x-frame-options"], "DENY");
    let policy = ui.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
}

/// A request to /ping with an invented method.
async fn invent(server: &Server, method: &str) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let sent = server.http.request(method, server.url("/ping")).send();
    sent.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn invented_methods_add_no_metrics_series() {
    let server = Server::start(1).await;
    let series = |text: &str| {
        text.lines()
            .filter(|line| line.starts_with("dron_api_request_duration_seconds_count"))
            .count()
    };
    let scrape = || async {
        server
            .http
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // One request first, so that the series of its outcome exists.
    invent(&server, "X0").await;
    let before = series(&scrape().await);
    for i in 0..1000 {
        invent(&server, &format!("M{i:04}XYZ")).await;
    }
    let text = scrape().await;
    assert_eq!(series(&text), before, "new series:\n{text}");
    assert!(!text.contains("M0999XYZ"));
}

#[tokio::test]
async fn serving_other_machines_without_auth_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_dron"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(data.path())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .expect("dron serve ended")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("without authentication"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_sees_only_its_own_environment_and_its_run_is_private() {
    // The server inherits this test's environment, e.g. cargo's CARGO_MANIFEST_DIR.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let server = Server::start(1).await;
    let out = server.scratch().join("env.txt");
    let job = json!({
        "name": "env",
        "command": format!("env > {}", out.display()),
        "schedule": "R1//PT1H",
        "environmentVariables": [{"name": "MINE", "value": "yes"}],
    });
    server.create(job).await;
    server.wait_for_run("env", "succeeded").await;
    let env = std::fs::read_to_string(&out).unwrap();
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(n, _)| n))
        .collect();
    assert!(
        !names.contains(&"CARGO_MANIFEST_DIR"),
        "the server's environment leaked:\n{env}"
    );
    for name in ["MINE", "DRON_JOB", "DRON_TASK_ID", "PATH"] {
        assert!(names.contains(&name), "{name} missing:\n{env}");
    }

    use std::os::unix::fs::PermissionsExt;
    let task_files = support::find_files(&server.data.path().join("data/runs"), "task.json");
    let task_file = task_files.first().expect("the run's task.json");
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(task_file), 0o600);
    assert_eq!(mode(task_file.parent().unwrap()), 0o700);
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_go_only_to_allowed_hosts() {
    let server = Server::start_with_config(1, "[notify]\nwebhook_hosts = [\"*\"]\n").await;
    let job = |name: &str, hook: &str| json!({"name": name, "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D", "notifyWebhooks": [hook]});
    // Any public host (the wildcard); private and loopback ones only when listed by name.
    let (status, body) = server
        .request(
            "POST",
            "/scheduler/iso8601",
            Some(job("public", "https://hooks.example.com/x")),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    for (name, hook) in [
        ("metadata", "http://169.254.169.254/latest/meta-data"),
        ("loopback", "http://127.0.0.1:4400/scheduler/iso8601"),
    ] {
        let (status, body) = server
            .request("POST", "/scheduler/iso8601", Some(job(name, hook)))
            .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (400, Some("notifyWebhooks")),
            "{body}"
        );
    }
    let test = json!({"webhook": "http://10.0.0.1/hook"});
    let (status, body) = server
        .request("POST", "/api/notifications/test", Some(test))
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("webhook")),
        "{body}"
    );

    // Without webhook_hosts, no host is allowed.
    let closed = Server::start(1).await;
    let (status, body) = closed
        .request(
            "POST",
            "/scheduler/iso8601",
            Some(job("public", "https://hooks.example.com/x")),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("notifyWebhooks")),
        "{body}"
    );
}

/// `dron_events_rejected_total`, 0 before the first.
async fn events_rejected(server: &Server) -> u64 {
    let text = server.http.get(server.url("/metrics")).send().await;
    let text = text.unwrap().text().await.unwrap();
    let series = "dron_events_rejected_total ";
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn outsiders_cannot_announce_a_jobs_run_nor_send_huge_events() {
    let broker = support::amqp::Broker::new("security");
    let channel = broker.channel().await;
    let server = Server::start_with_config(1, &broker.config()).await;
    wait_for("the AMQP link", Duration::from_secs(20), || async {
        server.ok("GET", "/health", None).await["amqp"] == "connected"
    })
    .await;
    // A forged success of job `export`, and an event whose meta is 100 KB.
    let forged = json!({"resource": "job:export@2026-11-23", "status": "ready"});
    broker.publish(&channel, &forged).await.unwrap();
    let huge = json!({"resource": "hive:huge", "meta": {"blob": "x".repeat(100_000)}});
    broker.publish(&channel, &huge).await.unwrap();
    broker
        .publish(&channel, &json!({"resource": "hive:fine"}))
        .await
        .unwrap();
    wait_for("the good event", Duration::from_secs(20), || async {
        server.ok("GET", "/api/resources?id=hive:fine", None).await["satisfied"] == true
    })
    .await;
    wait_for("both refusals", Duration::from_secs(20), || async {
        events_rejected(&server).await >= 2
    })
    .await;
    let forged = server
        .ok("GET", "/api/resources?id=job:export@2026-11-23", None)
        .await;
    assert_eq!(forged["satisfied"], false, "{forged}");
    // Over HTTP too, meta is capped.
    let body = json!({"resource": "hive:huge", "meta": {"blob": "x".repeat(20_000)}});
    let (status, answer) = server.request("POST", "/resources", Some(body)).await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (400, Some("meta")),
        "{answer}"
    );
    broker.clean_up(&channel, &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(1).await;
    let mut slow = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection is still open after 30 s");
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_leader_accepts_the_credentials_made_under_the_old_one() {
    let auth = format!("[auth]\ntokens = [\"{API_TOKEN}\"]\n");
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {API_TOKEN}").parse().unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, bearer);
    let mut cluster = support::cluster::Cluster::start_with_headers(3, &auth, headers).await;
    let leader = cluster.wait_for_leader().await;
    // Made through a follower (forwarded to the leader, written through the Raft log).
    let follower = (leader + 1) % 3;
    let body = json!({"name": "w1"});
    let (status, made) = cluster
        .request(follower, "POST", "/api/agent-tokens", Some(body))
        .await
        .unwrap();
    assert_eq!(status, 201, "{made}");
    let token = made["token"].as_str().unwrap().to_string();

    cluster.kill9(leader);
    let bearer = format!("Bearer {token}");
    wait_for(
        "a new leader to take the agent",
        Duration::from_secs(60),
        || async {
            for index in (0..3).filter(|i| *i != leader) {
                let base = cluster.nodes[index].url("");
                let Ok(mut socket) = connect_to(&base, &[("authorization", bearer.as_str())]).await
                else {
                    continue;
                };
                let answer = register(&mut socket, "w1", "w1-id", 1.0).await;
                if matches!(answer, ServerMessage::Registered { .. }) {
                    return true;
                }
            }
            false
        },
    )
    .await;
    // And a credential the cluster never made gets nowhere.
    let forged = format!("Bearer w1.{}", "0".repeat(64));
    let survivor = cluster.nodes[cluster.wait_for_leader().await].url("");
    assert_eq!(
        connect_to(&survivor, &[("authorization", forged.as_str())])
            .await
            .err(),
        Some(401)
    );
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut left = vec![dir.to_path_buf()];
    while let Some(dir) = left.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                left.push(path);
            } else if std::fs::read(&path).is_ok_and(|bytes| {
                bytes
                    .windows(needle.len())
                    .any(|window| window == needle.as_bytes())
            }) {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_variable_reaches_its_task_only() {
    const SECRET: &str = "hunter2-b7f3c1";
    let server = Server::start(1).await;
    let out = server.scratch().join("seen.txt");
    let job = json!({
        "name": "secretive",
        "command": format!("printf %s \"$TOKEN\" > {}", out.display()),
        "schedule": "R1//PT1H",
        "environmentVariables": [
            {"name": "TOKEN", "value": SECRET, "secret": true},
            {"name": "PLAIN", "value": "shown"}
        ],
    });
    server.create(job).await;
    server.wait_for_run("secretive", "succeeded").await;
    assert_eq!(std::fs::read_to_string(&out).unwrap(), SECRET);

    // Never answered: the Chronos API, the native API, the job list, the CLI.
    let answers = [
        server.job("secretive").await,
        server.ok("GET", "/api/jobs/secretive", None).await,
        server.ok("GET", "/scheduler/jobs", None).await,
    ];
    for answer in &answers {
        assert!(!answer.to_string().contains(SECRET), "{answer}");
    }
    let shown = &answers[0]["environmentVariables"];
    assert_eq!(
        shown[0],
        json!({"name": "TOKEN", "value": "<secret>", "secret": true})
    );
    assert_eq!(shown[1], json!({"name": "PLAIN", "value": "shown"}));
    let (code, stdout, stderr) =
        support::dron(&server.url(""), &["job", "show", "secretive"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("<secret>") && !stdout.contains(SECRET),
        "{stdout}"
    );

    // Never in a run directory in plain text (task.json holds it sealed), nor in the log.
    let runs = server.data.path().join("data/runs");
    let task_json = std::fs::read_to_string(&support::find_files(&runs, "task.json")[0]).unwrap();
    assert!(task_json.contains("Sealed"), "{task_json}");
    assert_eq!(
        files_containing(&runs, SECRET),
        Vec::<std::path::PathBuf>::new()
    );
    assert!(!server.log().contains(SECRET));

    // Sent back as answered (placeholder), with a change: the secret is kept.
    let mut changed = answers[0].clone();
    changed.as_object_mut().unwrap().remove("parents"); // `[]`: a scheduled job
    let out2 = server.scratch().join("seen-again.txt");
    changed["command"] = format!("printf %s \"$TOKEN\" > {}", out2.display()).into();
    server.create(changed.clone()).await;
    server.ok("PUT", "/scheduler/job/secretive", None).await;
    wait_for("the second run", Duration::from_secs(30), || async {
        std::fs::read_to_string(&out2).is_ok_and(|seen| seen == SECRET)
    })
    .await;

    // Imported where no value is held (another job, or another server): refused, never an
    // empty variable.
    changed["name"] = "copied".into();
    let (status, body) = api(&server, "POST", "/scheduler/iso8601", Some(changed)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "environmentVariables", "{body}");
    assert!(body["error"].as_str().unwrap().contains("TOKEN"), "{body}");
}

/// `method path` with `authorization` sent from the machine's address `from`; the status, the
/// `Retry-After` header and the JSON body.
async fn call_as(
    server: &Server,
    from: &str,
    authorization: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client
        .request(method, server.url(path))
        .header("authorization", authorization);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, retry_after, body)
}

const ROLES: &str = "[auth]\ntokens = [\"the-api-token\", \
    { token = \"reader\", role = \"read\" }, { token = \"operator\", role = \"operate\" }, \
    { token = \"writer\", role = \"write\" }]\n\
    basic = [{ user = \"viewer\", password = \"pw\", role = \"read\" }]\n";

#[tokio::test(flavor = "multi_thread")]
async fn each_token_may_do_what_its_role_allows_and_no_more() {
    let server = Server::start_with_config(1, ROLES).await;
    let job = |name: &str| json!({"name": name, "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D"});
    let as_role = |token: &'static str| format!("Bearer {token}");
    let call = |token: &'static str, method: &'static str, path: &'static str, body| {
        let server = &server;
        async move { call_as(server, "127.0.0.1", &as_role(token), method, path, body).await }
    };

    // read: GETs only; a job it sends is refused with the role it needs, and not made.
    let (status, _, _) = call("reader", "GET", "/scheduler/jobs", None).await;
    assert_eq!(status, 200);
    let (status, _, body) = call("reader", "POST", "/scheduler/iso8601", Some(job("r"))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["roleNeeded"], "write", "{body}");
    assert!(body["error"].as_str().unwrap().contains("write"), "{body}");
    let (status, _, _) = call("the-api-token", "GET", "/scheduler/job/r", None).await;
    assert_eq!(status, 404, "the refused job was made");
    // Basic users carry a role too.
    let viewer = "Basic dmlld2VyOnB3"; // viewer:pw
    let (status, _, body) = call_as(
        &server,
        "127.0.0.1",
        viewer,
        "DELETE",
        "/scheduler/job/r",
        None,
    )
    .await;
    assert_eq!((status, body["roleNeeded"].as_str()), (403, Some("write")));

    // write: jobs, not the server; operate: runs, not jobs.
    let (status, _, body) = call("writer", "POST", "/scheduler/iso8601", Some(job("w"))).await;
    assert_eq!(status, 204, "{body}");
    for (method, path) in [("PUT", "/api/shards"), ("POST", "/api/agent-tokens")] {
        let body = json!({"shards": 2, "name": "x"});
        let (status, _, answer) = call("writer", method, path, Some(body)).await;
        assert_eq!(
            (status, answer["roleNeeded"].as_str()),
            (403, Some("admin")),
            "{path}"
        );
    }
    let (status, _, body) = call("operator", "PUT", "/scheduler/job/w", None).await;
    assert_eq!(status, 204, "{body}");
    let (status, _, body) = call("operator", "DELETE", "/scheduler/job/w", None).await;
    assert_eq!((status, body["roleNeeded"].as_str()), (403, Some("write")));
    let (status, _, _) = call("reader", "DELETE", "/scheduler/task/kill/w", None).await;
    assert_eq!(status, 403);

    // A token without a role is admin, as before roles.
    let (status, _, body) = call("the-api-token", "GET", "/api/agent-tokens", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = call("writer", "GET", "/api/agent-tokens", None).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_address_that_keeps_sending_wrong_credentials_is_made_to_wait() {
    let server = Server::start_with_config(1, ROLES).await;
    let list_jobs = |from: &'static str, authorization: String| {
        let server = &server;
        async move { call_as(server, from, &authorization, "GET", "/scheduler/jobs", None).await }
    };
    let attacker = "127.0.0.7";
    for attempt in 0..10 {
        let (status, _, _) = list_jobs(attacker, format!("Bearer guess-{attempt}")).await;
        assert_eq!(status, 401, "attempt {attempt}");
    }
    // From now on, even the right token waits, from that address.
    for token in ["Bearer guess-10", "Bearer reader"] {
        let (status, retry, body) = list_jobs(attacker, token.to_string()).await;
        assert_eq!(status, 429, "{body}");
        let retry: u64 = retry.expect("Retry-After").parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("try again"), "{body}");
    }
    // Other addresses are not held up, and requests without credentials do not count.
    let reader = || "Bearer reader".to_string();
    assert_eq!(list_jobs("127.0.0.8", reader()).await.0, 200);
    for _ in 0..20 {
        let response = reqwest::get(server.url("/scheduler/jobs")).await.unwrap();
        assert_eq!(response.status(), 401);
    }
    assert_eq!(list_jobs("127.0.0.1", reader()).await.0, 200);
}
