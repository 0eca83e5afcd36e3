//! Any server answers every request (issue 17): a server that does not schedule forwards the
//! API to the leader. Here the follower is dron's own HTTP router and `AppState` in this test
//! process, given a `ClusterView` that says who leads; the leader is a REAL `dron serve`
//! process. Real HTTP both ways, a real `dron agent` finding the leader through its list.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dron::cluster::view::{ClusterStatus, ClusterView, NodeStatus, Role};
use dron::config::AuthConfig;
use dron::http::AppState;
use serde_json::{Value, json};
use support::agents::{Agent, agent_view, agents_config};
use support::{Server, free_port};

/// What the Raft node would say; the test changes it at will.
struct View(Mutex<ClusterStatus>);

impl ClusterView for View {
    fn status(&self) -> ClusterStatus {
        self.0.lock().unwrap().clone()
    }
}

impl View {
    fn set(&self, leader: Option<(u64, &str)>, scheduling: bool) {
        let mut status = self.0.lock().unwrap();
        status.leader = leader.map(|(id, _)| id);
        status.leader_address = leader.map(|(_, address)| address.to_string());
        status.role = match leader {
            Some((id, _)) if id == status.this_node => Role::Leader,
            Some(_) => Role::Follower,
            None => Role::Candidate,
        };
        status.scheduling = scheduling;
    }
}

/// Node 1 of three, a follower of node 2 at `leader`.
fn follower_of(leader: &str) -> Arc<View> {
    let node = |id: u64, address: &str, role: Role| NodeStatus {
        id,
        address: address.to_string(),
        role,
        matched_index: None,
        lag_ms: None,
    };
    Arc::new(View(Mutex::new(ClusterStatus {
        leader: Some(2),
        leader_address: Some(leader.to_string()),
        term: 5,
        this_node: 1,
        role: Role::Follower,
        scheduling: false,
        last_log_index: Some(42),
        last_applied: Some(42),
        snapshot_index: None,
        purged_index: None,
        nodes: vec![
            node(1, "http://127.0.0.1:1", Role::Follower),
            node(2, leader, Role::Leader),
            node(3, "http://127.0.0.1:3", Role::Follower),
        ],
    })))
}

/// The process's metrics recorder, installed once for all the tests here.
fn metrics() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| dron::http::metrics::install().expect("installing the recorder"))
        .clone()
}

/// The follower: dron's router on a port of its own, in this process.
struct Follower {
    port: u16,
    view: Arc<View>,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    async fn start(view: Arc<View>, auth: &AuthConfig) -> Follower {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = AppState::new(format!("127.0.0.1:{port}"))
            .with_metrics(metrics())
            .with_auth(auth)
            .with_cluster(view.clone(), None);
        let app = dron::http::router(state, false);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Follower {
            port,
            view,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Status, headers and JSON (or text) body.
async fn send(request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

const TOKEN: &str = "forwarding-test-token";

/// Runs the real `dron` binary; answers (exit code, stdout, stderr). Fails the test if it has
/// not ended within 20 s.
async fn dron(args: &[&str]) -> (i32, String, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_dron"))
        .args(args)
        .env_remove("DRON_URL")
        .env_remove("DRON_TOKEN")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap_or_else(|_| panic!("dron {args:?} did not end"))
        .expect("running dron");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_the_api_to_the_leader() {
    let auth = format!("[auth]\ntokens = [\"{TOKEN}\"]\n");
    let leader = Server::start_with_config(2, &auth).await;
    let auth = AuthConfig {
        basic: Vec::new(),
        tokens: vec![TOKEN.into()],
    };
    let follower = Follower::start(follower_of(&leader.url("")), &auth).await;
    let http = &follower.http;
    let job =
        json!({"name": "forwarded", "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D"});

    // Credentials are checked where the request arrives...
    let (status, _, body) = send(http.post(follower.url("/scheduler/iso8601")).json(&job)).await;
    assert_eq!(status, 401, "{body}");

    // ...and travel with it: the leader accepts the job, and has it.
    let create = http
        .post(follower.url("/scheduler/iso8601"))
        .bearer_auth(TOKEN)
        .json(&job);
    let (status, _, body) = send(create).await;
    assert_eq!(status, 204, "{body}\n{}", leader.log());
    let on_leader = leader
        .http
        .get(leader.url("/scheduler/job/forwarded"))
        .bearer_auth(TOKEN);
    let (status, _, on_leader) = send(on_leader).await;
    assert_eq!(status, 200, "the job exists on the leader: {on_leader}");
    assert_eq!(on_leader["name"], "forwarded");
    let through = http
        .get(follower.url("/scheduler/job/forwarded"))
        .bearer_auth(TOKEN);
    let (status, _, through) = send(through).await;
    assert_eq!(
        (status, &through),
        (200, &on_leader),
        "reads answer the leader's data"
    );

    // Errors come back unchanged: status, JSON body, field.
    let bad = json!({"name": "bad", "command": "true", "schedule": "R//PXYZ"});
    for path in [
        "/scheduler/iso8601",
        "/api/jobs/forwarded/runs?limit=x",
        "/no/such/endpoint",
    ] {
        let method = if path == "/scheduler/iso8601" {
            "POST"
        } else {
            "GET"
        };
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let direct = leader
            .http
            .request(method.clone(), leader.url(path))
            .bearer_auth(TOKEN)
            .json(&bad);
        let forwarded = http
            .request(method, follower.url(path))
            .bearer_auth(TOKEN)
            .json(&bad);
        let (direct_status, direct_headers, direct) = send(direct).await;
        let (status, headers, body) = send(forwarded).await;
        assert!(direct_status >= 400, "{path}: {direct_status} {direct}");
        assert_eq!((status, &body), (direct_status, &direct), "{path}");
        assert_eq!(
            headers.get("content-type"),
            direct_headers.get("content-type"),
            "{path}"
        );
    }
    let (_, _, body) = send(
        http.post(follower.url("/scheduler/iso8601"))
            .bearer_auth(TOKEN)
            .json(&bad),
    )
    .await;
    assert_eq!(body["field"], "schedule", "{body}");

    // Other methods, queries and non-JSON answers go through as well.
    let run_now = http
        .put(follower.url("/scheduler/job/forwarded"))
        .bearer_auth(TOKEN);
    assert_eq!(send(run_now).await.0, 204);
    let runs = http
        .get(follower.url("/api/jobs/forwarded/runs?limit=1"))
        .bearer_auth(TOKEN);
    let (status, _, runs) = send(runs).await;
    assert_eq!(status, 200, "{runs}");
    assert!(runs["runs"].as_array().unwrap().len() <= 1, "{runs}");
    let dot = http
        .get(follower.url("/scheduler/graph/dot"))
        .bearer_auth(TOKEN);
    let (status, headers, dot) = send(dot).await;
    assert_eq!(status, 200);
    assert!(dot.as_str().unwrap().contains("forwarded"), "{dot}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/")
    );
    // Chronos's leader is the leader's address, not the follower's.
    let asked = http
        .get(follower.url("/scheduler/leader"))
        .bearer_auth(TOKEN);
    let (_, _, answer) = send(asked).await;
    assert_eq!(answer["leader"], format!("127.0.0.1:{}", leader.port));

    // Bodies are capped as the API caps them, before anything reaches the leader. (On a
    // client of its own: the server closes that connection before reading the whole body,
    // and a pooled connection would fail the next request.)
    let large = reqwest::Client::new()
        .post(follower.url("/scheduler/iso8601"))
        .bearer_auth(TOKEN)
        .body(vec![b' '; 2 * 1024 * 1024]);
    let (status, _, body) = send(large).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("larger than"),
        "{body}"
    );

    // A request already forwarded once is not forwarded again.
    let again = http
        .get(follower.url("/scheduler/jobs"))
        .bearer_auth(TOKEN)
        .header("x-dron-forwarded-by", "3");
    let (status, headers, body) = send(again).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("node 3 forwarded this request to node 1"),
        "{body}"
    );
    assert!(error.contains("forwarded once only"), "{body}");
    assert_eq!(body["leader"], leader.url(""));

    // What a server says of itself is its own, not the leader's.
    let (status, _, health) = send(http.get(follower.url("/health"))).await;
    assert_eq!(
        status, 200,
        "a follower that knows the leader is healthy: {health}"
    );
    assert_eq!(
        (&health["status"], &health["role"], &health["leader"]),
        (&json!("ok"), &json!("follower"), &json!(2))
    );
    assert_eq!(health["leaderAddress"], leader.url(""));
    assert!(health.get("shards").is_none(), "{health}");
    let cluster = http.get(follower.url("/api/cluster")).bearer_auth(TOKEN);
    let (status, _, cluster) = send(cluster).await;
    assert_eq!(status, 200, "{cluster}");
    let expected = serde_json::to_value(follower.view.status()).unwrap();
    assert_eq!(cluster, expected);
    assert_eq!(
        (
            &cluster["thisNode"],
            &cluster["term"],
            &cluster["lastApplied"]
        ),
        (&json!(1), &json!(5), &json!(42))
    );

    let metrics = http.get(follower.url("/metrics")).bearer_auth(TOKEN);
    let (_, _, metrics) = send(metrics).await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("dron_api_forwarded_total{outcome=\"forwarded\"}")
            && metrics.contains("dron_api_forwarded_total{outcome=\"loop\"} 1"),
        "{metrics}"
    );

    // `dron cluster` asks any server.
    let (code, out, err) = dron(&["cluster", "--url", &follower.url(""), "--token", TOKEN]).await;
    assert_eq!(code, 0, "{out}{err}");
    let first = format!("leader: node 2 at {}, term 5\n", leader.url(""));
    assert!(out.starts_with(&first), "{out}");
    assert!(
        out.contains("asked:  node 1 (follower, not scheduling)"),
        "{out}"
    );
    assert!(out.contains("1 *  http://127.0.0.1:1"), "{out}");
    let (code, out, _) = dron(&[
        "cluster",
        "--json",
        "--url",
        &leader.url(""),
        "--token",
        TOKEN,
    ])
    .await;
    assert_eq!(code, 0);
    let single: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(single["thisNode"], 1, "{out}");

    // The single server (the leader here) is a cluster of one, and says so in /health.
    let single = leader
        .http
        .get(leader.url("/api/cluster"))
        .bearer_auth(TOKEN);
    let (_, _, single) = send(single).await;
    assert_eq!(
        (
            &single["leader"],
            &single["term"],
            &single["role"],
            &single["scheduling"]
        ),
        (&json!(1), &json!(0), &json!("leader"), &json!(true)),
        "{single}"
    );
    assert_eq!(single["nodes"][0]["address"], leader.url(""));
    let (_, _, health) = send(leader.http.get(leader.url("/health"))).await;
    assert_eq!(
        (
            &health["status"],
            &health["role"],
            &health["leader"],
            &health["shards"]
        ),
        (&json!("ok"), &json!("leader"), &json!(1), &json!(2)),
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reachable_leader_the_api_answers_503() {
    let view = follower_of("http://127.0.0.1:1");
    let follower = Follower::start(view.clone(), &AuthConfig::default()).await;
    let http = &follower.http;
    let job = json!({"name": "nowhere", "command": "true", "schedule": "R//P1D"});

    // No leader elected.
    view.set(None, false);
    let (status, headers, body) =
        send(http.post(follower.url("/scheduler/iso8601")).json(&job)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(
        body,
        json!({"error": "no leader is elected yet; retry shortly", "leader": null})
    );
    let (status, _, health) = send(http.get(follower.url("/health"))).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(
        (&health["status"], &health["role"], &health["leader"]),
        (&json!("unavailable"), &json!("candidate"), &Value::Null)
    );
    assert_eq!(health["error"], "no leader is elected yet; retry shortly");
    let (status, _, cluster) = send(http.get(follower.url("/api/cluster"))).await;
    assert_eq!((status, &cluster["leader"]), (200, &Value::Null));

    // A leader nobody can reach: the answer names it.
    let closed = format!("http://127.0.0.1:{}", free_port());
    view.set(Some((2, &closed)), false);
    let (status, _, body) = send(http.get(follower.url("/scheduler/jobs"))).await;
    assert_eq!(status, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains(&format!("node 2 at {closed}")), "{body}");
    assert!(error.contains("cannot be reached"), "{body}");
    assert_eq!(body["leader"], closed);
    // What a server answers of itself needs no leader.
    for path in ["/ping", "/metrics", "/ui/", "/ui/app.js"] {
        let (status, _, body) = send(http.get(follower.url(path))).await;
        assert_eq!(status, 200, "{path} is answered here: {body}");
    }

    // Elected here, still recovering: answered here, not forwarded to itself.
    view.set(Some((1, "http://127.0.0.1:1")), false);
    let (status, _, body) = send(http.get(follower.url("/scheduler/jobs"))).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("recovering"),
        "{body}"
    );
    let (status, _, health) = send(http.get(follower.url("/health"))).await;
    assert_eq!(
        (status, &health["role"]),
        (503, &json!("leader")),
        "{health}"
    );

    // Scheduling here: nothing is forwarded (this test's state has no scheduler, so 503).
    view.set(Some((1, "http://127.0.0.1:1")), true);
    let (status, _, body) = send(http.get(follower.url("/scheduler/jobs"))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["error"],
        "dron is recovering its shards; retry shortly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_finds_the_leader_through_its_server_list() {
    let leader = Server::start_with_config(2, &agents_config(5000)).await;
    let follower = Follower::start(follower_of(&leader.url("")), &AuthConfig::default()).await;

    // The agents' WebSocket on a server that does not lead: 503 naming the leader.
    let connect = format!("ws://127.0.0.1:{}/api/agents/connect", follower.port);
    match tokio_tungstenite::connect_async(connect.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(
                body,
                json!({"error": "this server is not the leader", "leader": leader.url("")})
            );
        }
        Ok(_) => panic!("a follower took an agent"),
        Err(error) => panic!("unexpected answer: {error}"),
    }

    // A dead server, then the follower, which names the leader: the agent ends there.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let servers = format!("{dead},{}", follower.url(""));
    let agent = Agent::start_with_servers(&leader, &servers, "listed", 1.0, 1024.0, "").await;
    assert_eq!(agent_view(&leader, "listed").await["state"], "active");
    let log = agent.log();
    assert!(
        log.contains(&dead),
        "the dead server was tried first:\n{log}"
    );
    assert!(
        log.contains(&format!("the leader is at {}", leader.url(""))),
        "the follower sent it to the leader:\n{log}"
    );

    // It runs work there.
    let job = json!({"name": "on-agent", "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D", "cpus": 0.1, "mem": 16});
    leader.create(job).await;
    leader.ok("PUT", "/scheduler/job/on-agent", None).await;
    let run = leader.wait_for_run("on-agent", "succeeded").await;
    assert_eq!(run["agent"], "listed", "{run}");

    // The leader restarts: the agent comes back to it, the last server that accepted it.
    let mut leader = leader;
    leader.restart().await;
    support::wait_for(
        "the agent to register again",
        Duration::from_secs(30),
        || async { agent_view(&leader, "listed").await["state"] == "active" },
    )
    .await;
}

#[tokio::test]
async fn serve_refuses_a_cluster_it_cannot_form() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short-secret");
    std::fs::write(&short, "too short\n").unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a-secret-of-more-than-16-bytes\n").unwrap();
    let local = dir.path().join("local.toml");
    std::fs::write(&local, "[agents]\nlocal = true\n").unwrap();
    let data = dir.path().join("data");
    let peers = "1=http://127.0.0.1:4401,2=http://127.0.0.1:4402,3=http://127.0.0.1:4403";
    let (short, secret, local) = (
        short.to_str().unwrap(),
        secret.to_str().unwrap(),
        local.to_str().unwrap(),
    );
    let cases: &[(&[&str], &str)] = &[
        (
            &["--peers", peers],
            "--node-id (cluster.node_id) is required",
        ),
        (
            &["--node-id", "4", "--peers", peers],
            "node id 4 is not among the peers (1, 2, 3)",
        ),
        (
            &["--node-id", "1", "--peers", peers],
            "a secret file is required",
        ),
        (
            &[
                "--node-id",
                "1",
                "--peers",
                peers,
                "--cluster-secret-file",
                short,
            ],
            "is 9 bytes long; at least 16",
        ),
        (
            &[
                "--node-id",
                "1",
                "--peers",
                "1=ftp://127.0.0.1:4401",
                "--cluster-secret-file",
                secret,
            ],
            "node 1's address 'ftp://127.0.0.1:4401' must be an http:// or https:// URL",
        ),
        (&["--node-id", "1"], "without --peers"),
        (
            &["--peers", "1=http://a:1,1=http://b:1"],
            "node 1 is listed twice",
        ),
        (
            &[
                "--config",
                local,
                "--node-id",
                "1",
                "--peers",
                peers,
                "--cluster-secret-file",
                secret,
            ],
            "agents.local = true is refused in a cluster",
        ),
    ];
    for (flags, problem) in cases {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir"];
        args.push(data.to_str().unwrap());
        args.extend_from_slice(flags);
        let (code, out, err) = dron(&args).await;
        assert_ne!(code, 0, "{flags:?} was accepted:\n{out}{err}");
        assert!(
            err.contains(problem),
            "{flags:?}: expected '{problem}' in:\n{err}"
        );
    }
}

/// A broker that hands each connection's outbox to the test, and keeps no state of its own:
/// the outbox outlives it, so only the broker's end can close the socket.
struct HandingBroker;

impl ractor::Actor for HandingBroker {
    type Msg = dron_actors::broker::BrokerMsg;
    type State = tokio::sync::mpsc::UnboundedSender<Box<dyn std::any::Any + Send>>;
    type Arguments = Self::State;

    async fn pre_start(
        &self,
        _: ractor::ActorRef<Self::Msg>,
        to_test: Self::State,
    ) -> Result<Self::State, ractor::ActorProcessingErr> {
        Ok(to_test)
    }

    async fn handle(
        &self,
        _: ractor::ActorRef<Self::Msg>,
        message: Self::Msg,
        to_test: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        if let dron_actors::broker::BrokerMsg::Connected { outbox, .. } = message {
            let _ = to_test.send(Box::new(outbox));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_connection_ends_when_the_broker_stops() {
    use dron::storage::agent_tokens::RocksAgentTokens;
    use futures_util::StreamExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Agents without credentials are accepted, as on a loopback server without auth.
    let tokens_dir = tempfile::tempdir().unwrap();
    let tokens = RocksAgentTokens::open(&tokens_dir.path().join("agent-tokens")).unwrap();
    let state = AppState::new(format!("127.0.0.1:{port}"))
        .with_agent_tokens(std::sync::Arc::new(tokens), true);
    let (to_test, mut outboxes) = tokio::sync::mpsc::unbounded_channel();
    let (broker, _) = ractor::Actor::spawn(None, HandingBroker, to_test)
        .await
        .unwrap();
    state.set_broker(broker.clone());
    let app = dron::http::router(state.clone(), false);
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let url = format!("ws://127.0.0.1:{port}/api/agents/connect");
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let _outbox = outboxes
        .recv()
        .await
        .expect("the broker was told of the connection");

    // This server stops leading: the broker stops, the API stands down.
    state.stand_down();
    broker.stop(None);
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(message)) if message.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the agent's socket closed when the broker stopped"
    );
    let refused = tokio_tungstenite::connect_async(url.as_str()).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 503),
        "no broker, no agents: {refused:?}"
    );
    server.abort();
}
