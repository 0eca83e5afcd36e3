//! Partitions (issue 17): three real `dron serve` processes, each in its own network
//! namespace, joined by veth pairs to a bridge, and one real `dron agent` in a fourth. The
//! leader's cluster link goes down: it must stop scheduling within its lease, the majority
//! must elect a leader that goes on running the jobs, and after the heal the old leader must
//! follow the new term, with no target run twice or missed and every write the majority
//! acknowledged present on every server.
//!
//! Needs root and iproute2 (`ip netns`); elsewhere it says why and returns, unless
//! `DRON_REQUIRE_NETNS` is set, where it fails.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::netns::{NsAgent, NsCluster};
use support::recording::{INTERVAL_S, check_targets, now_ms, recording_job};
use support::{targets, wait_for};

/// The servers' Raft timing: short, so that the test is quick.
const HEARTBEAT_MS: u64 = 100;
const ELECTION_TIMEOUT_MS: u64 = 500;
/// How long after the cut the old leader may still report that it schedules: its lease (the
/// election timeout) and a margin for a busy machine.
const STOP_WITHIN: Duration = Duration::from_millis(ELECTION_TIMEOUT_MS + 3000);

/// What a writer tried, and what it was answered.
struct Writes {
    tried: usize,
    /// The jobs acknowledged, with when the request was sent and when the answer came.
    acknowledged: Vec<(String, Instant, Instant)>,
    /// How many times each answer came: a status code, or why none came.
    answers: BTreeMap<String, usize>,
}

/// Creates jobs through the servers at `urls`, in turn, until `stop`; remembers those
/// acknowledged (204).
fn spawn_writer(
    cluster: &NsCluster,
    urls: Vec<String>,
    prefix: &'static str,
    out: &Path,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Writes> {
    let http = cluster.http.clone();
    let out = out.to_path_buf();
    tokio::spawn(async move {
        let mut writes = Writes {
            tried: 0,
            acknowledged: Vec::new(),
            answers: BTreeMap::new(),
        };
        while !stop.load(Ordering::Acquire) {
            let name = format!("{prefix}-{}", writes.tried);
            // Far ahead: these jobs only have to exist.
            let job = recording_job(&name, &out, (now_ms() / 1000 + 3600) * 1000);
            let url = format!("{}/scheduler/iso8601", urls[writes.tried % urls.len()]);
            writes.tried += 1;
            let sent = Instant::now();
            let answer = match http
                .post(url)
                .json(&job)
                .timeout(Duration::from_secs(5))
                .send()
                .await
            {
                Ok(response) => response.status().as_u16().to_string(),
                Err(error) if error.is_timeout() => "timeout".to_string(),
                Err(_) => "no answer".to_string(),
            };
            if answer == "204" {
                writes.acknowledged.push((name, sent, Instant::now()));
                acknowledged.fetch_add(1, Ordering::AcqRel);
            }
            *writes.answers.entry(answer).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        writes
    })
}

async fn wait_for_agent(cluster: &NsCluster, name: &str) {
    wait_for(
        &format!("agent {name} to be active"),
        Duration::from_secs(30),
        || async {
            let Some(leader) = cluster.leader(&[0, 1, 2]).await else {
                return false;
            };
            let Ok((_, body)) = cluster.request(leader, "GET", "/api/agents", None).await else {
                return false;
            };
            body["agents"].as_array().is_some_and(|agents| {
                agents
                    .iter()
                    .any(|a| a["name"] == name && a["state"] == "active")
            })
        },
    )
    .await;
}

/// Polls `condition` every 50 ms until it holds; after `timeout`, fails with the servers'
/// and the agent's logs.
async fn wait_or_fail<F, Fut>(
    what: &str,
    timeout: Duration,
    cluster: &NsCluster,
    agent: &NsAgent,
    mut condition: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "timed out after {timeout:?} waiting for {what}\n{}\n--- agent ---\n{}",
        cluster.logs(),
        agent.log()
    );
}

fn ms(duration: Duration) -> u128 {
    duration.as_millis()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_cut_off_stops_the_majority_goes_on_and_the_heal_loses_nothing() {
    let raft = format!(
        "[cluster]\nheartbeat_ms = {HEARTBEAT_MS}\nelection_timeout_ms = {ELECTION_TIMEOUT_MS}\n"
    );
    let mut cluster = match NsCluster::start(3, &raft).await {
        Ok(cluster) => cluster,
        Err(why) => {
            assert!(
                std::env::var_os("DRON_REQUIRE_NETNS").is_none(),
                "network namespaces are unavailable: {why}"
            );
            eprintln!(
                "SKIPPED: the partition test needs network namespaces (root and iproute2's \
                 `ip netns`), unavailable here: {why}"
            );
            return;
        }
    };
    let agent = NsAgent::start(&mut cluster, "w1", 8.0);
    wait_for_agent(&cluster, "w1").await;
    let all = [0, 1, 2];

    let out = tempfile::tempdir().unwrap();
    let start_ms = (now_ms() / 1000 + 3) * 1000;
    let names: Vec<String> = (0..6).map(|i| format!("steady-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let (status, body) = cluster
            .request(
                i % 3,
                "POST",
                "/scheduler/iso8601",
                Some(recording_job(name, out.path(), start_ms)),
            )
            .await
            .expect("creating a job");
        assert_eq!(status, 204, "creating {name}: {body}\n{}", cluster.logs());
    }
    wait_or_fail(
        "every job to run twice",
        Duration::from_secs(30),
        &cluster,
        &agent,
        || async {
            names
                .iter()
                .all(|n| targets(&out.path().join(n)).len() >= 2)
        },
    )
    .await;

    let old = cluster.leader(&all).await.expect("a leader");
    let old_term = cluster.status(old).await.unwrap()["term"].as_u64().unwrap();
    let majority: Vec<usize> = all.iter().copied().filter(|i| *i != old).collect();

    // Writes through the majority for the whole partition (forwarded to whoever leads there),
    // and, from the cut, through the cut-off leader: what any of them acknowledges must exist
    // afterwards.
    let stop = Arc::new(AtomicBool::new(false));
    let majority_acknowledged = Arc::new(AtomicUsize::new(0));
    let majority_writer = spawn_writer(
        &cluster,
        majority.iter().map(|i| cluster.nodes[*i].url("")).collect(),
        "majority",
        out.path(),
        stop.clone(),
        majority_acknowledged.clone(),
    );
    // The cut.
    let cut_at = Instant::now();
    cluster.network.cut(&cluster.nodes[old].host);
    let minority_writer = spawn_writer(
        &cluster,
        vec![cluster.nodes[old].url("")],
        "minority",
        out.path(),
        stop.clone(),
        Arc::new(AtomicUsize::new(0)),
    );

    eprintln!(
        "timeline: +0 ms: node {} (leader, term {old_term}) cut off from the cluster network",
        cluster.nodes[old].id
    );

    // (1) The old leader stops scheduling within its lease.
    wait_or_fail(
        "the cut-off leader to stop scheduling",
        STOP_WITHIN,
        &cluster,
        &agent,
        || async {
            cluster
                .status(old)
                .await
                .is_some_and(|s| s["scheduling"] == false)
        },
    )
    .await;
    let stopped = cut_at.elapsed();
    eprintln!(
        "timeline: +{} ms: the old leader reports scheduling: false",
        ms(stopped)
    );
    // From now until the heal it must never schedule again.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (http, url, watching) = (
            cluster.http.clone(),
            cluster.nodes[old].url("/api/cluster"),
            watching.clone(),
        );
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while watching.load(Ordering::Acquire) {
                if let Ok(response) = http.get(&url).send().await
                    && let Ok(status) = response.json::<Value>().await
                    && status["scheduling"] == true
                {
                    seen.push(status);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        })
    };

    // (2) The majority elects a leader that schedules, in a later term.
    let new = cluster.wait_for_leader(&majority).await;
    let elected = cut_at.elapsed();
    let elected_ms = now_ms();
    let new_status = cluster.status(new).await.unwrap();
    let new_term = new_status["term"].as_u64().unwrap();
    assert_ne!(new, old, "the cut-off node still leads the majority");
    assert!(new_term > old_term, "new term {new_term} after {old_term}");
    eprintln!(
        "timeline: +{} ms: node {} leads the majority in term {new_term} and schedules",
        ms(elected),
        cluster.nodes[new].id
    );
    // The agent (on the majority's side) finds the new leader.
    wait_or_fail(
        "the agent to register with the new leader",
        Duration::from_secs(30),
        &cluster,
        &agent,
        || async {
            let Ok((_, body)) = cluster.request(new, "GET", "/api/agents", None).await else {
                return false;
            };
            body["agents"].as_array().is_some_and(|agents| {
                agents
                    .iter()
                    .any(|a| a["name"] == "w1" && a["state"] == "active")
            })
        },
    )
    .await;
    eprintln!(
        "timeline: +{} ms: the agent is active on the new leader",
        ms(cut_at.elapsed())
    );
    // The jobs go on: every job runs a target that fell due after the election.
    wait_or_fail(
        "every job to run under the new leader",
        Duration::from_secs(30),
        &cluster,
        &agent,
        || async {
            names
                .iter()
                .all(|n| targets(&out.path().join(n)).iter().any(|t| *t > elected_ms))
        },
    )
    .await;
    eprintln!(
        "timeline: +{} ms: every job has run a target due after the election",
        ms(cut_at.elapsed())
    );
    let status = cluster.status(old).await.expect("the old leader answers");
    assert_eq!(status["scheduling"], false, "{status}");
    eprintln!(
        "timeline: the old leader, still cut off, sees itself as {} of term {}",
        status["role"], status["term"]
    );

    // The majority takes writes while the old leader is cut off: the partition lasts until
    // one is acknowledged (a write sent just before the cut waits on the old leader until it
    // times out, and agents may find the new leader before that).
    wait_or_fail(
        "a write through the majority to be acknowledged",
        Duration::from_secs(30),
        &cluster,
        &agent,
        || async { majority_acknowledged.load(Ordering::Acquire) > 0 },
    )
    .await;
    eprintln!(
        "timeline: +{} ms: the majority acknowledged a write",
        ms(cut_at.elapsed())
    );

    // (3) The heal: the old leader follows the new term.
    let healed_at = cut_at.elapsed();
    let healed_ms = now_ms();
    cluster.network.heal(&cluster.nodes[old].host);
    eprintln!("timeline: +{} ms: healed", ms(healed_at));
    wait_or_fail(
        "the old leader to follow the new leader",
        Duration::from_secs(30),
        &cluster,
        &agent,
        || async {
            cluster.status(old).await.is_some_and(|s| {
                s["leader"].as_u64().is_some()
                    && s["leader"].as_u64() != Some(cluster.nodes[old].id)
                    && s["term"].as_u64() >= Some(new_term)
                    && s["role"] == "follower"
                    && s["scheduling"] == false
            })
        },
    )
    .await;
    let rejoined = cut_at.elapsed();
    watching.store(false, Ordering::Release);
    let scheduling_while_cut = watcher.await.unwrap();
    assert!(
        scheduling_while_cut.is_empty(),
        "the cut-off old leader reported scheduling again: {scheduling_while_cut:?}\n{}",
        cluster.logs()
    );
    let leader = cluster.wait_for_leader(&all).await;
    let status = cluster.status(old).await.unwrap();
    eprintln!(
        "timeline: +{} ms: the old leader follows node {} in term {} (all agree on node {})",
        ms(rejoined),
        status["leader"],
        status["term"],
        cluster.nodes[leader].id
    );

    // (5) Every acknowledged write exists, through every server; the healed one has applied
    // everything the leader had when the writes stopped.
    stop.store(true, Ordering::Release);
    let majority_writes = majority_writer.await.unwrap();
    let minority_writes = minority_writer.await.unwrap();
    eprintln!(
        "writes: {} of {} acknowledged through the majority (answers {:?}), {} of {} through \
         the cut-off leader (answers {:?})",
        majority_writes.acknowledged.len(),
        majority_writes.tried,
        majority_writes.answers,
        minority_writes.acknowledged.len(),
        minority_writes.tried,
        minority_writes.answers,
    );
    assert!(
        !majority_writes.acknowledged.is_empty(),
        "no write was acknowledged through the majority during the partition\n{}",
        cluster.logs()
    );
    let leader_applied = cluster.status(leader).await.unwrap()["lastApplied"]
        .as_u64()
        .unwrap();
    wait_or_fail(
        "the healed server to apply what the leader has",
        Duration::from_secs(30),
        &cluster,
        &agent,
        || async {
            cluster
                .status(old)
                .await
                .and_then(|s| s["lastApplied"].as_u64())
                .is_some_and(|applied| applied >= leader_applied)
        },
    )
    .await;
    // A leader cut off from the majority cannot commit: it acknowledges nothing sent after the
    // cut before the heal (what it forwards to the new leader afterwards is fine).
    let healed_instant = cut_at + healed_at;
    let early: Vec<&String> = minority_writes
        .acknowledged
        .iter()
        .filter(|(_, sent, answered)| *sent >= cut_at && *answered < healed_instant)
        .map(|(name, _, _)| name)
        .collect();
    assert!(
        early.is_empty(),
        "the cut-off leader acknowledged {early:?} before the heal\n{}",
        cluster.logs()
    );
    for (name, _, _) in majority_writes
        .acknowledged
        .iter()
        .chain(&minority_writes.acknowledged)
    {
        for index in all {
            let (status, body) = cluster
                .request(index, "GET", &format!("/scheduler/job/{name}"), None)
                .await
                .unwrap();
            assert_eq!(
                status,
                200,
                "acknowledged {name} is missing on node {}: {body}\n{}",
                cluster.nodes[index].id,
                cluster.logs()
            );
        }
    }

    // (4) No target ran twice, none was missed: up to a few intervals after the heal.
    let until_ms = healed_ms + 2 * INTERVAL_S * 1000;
    wait_or_fail(
        "the targets after the heal to run",
        Duration::from_secs(30),
        &cluster,
        &agent,
        || async {
            names
                .iter()
                .all(|n| targets(&out.path().join(n)).iter().any(|t| *t > until_ms))
        },
    )
    .await;
    let logs = format!("{}\n--- agent ---\n{}", cluster.logs(), agent.log());
    check_targets(out.path(), &names, start_ms, until_ms, &logs);
    eprintln!(
        "targets: every target of {} jobs from {start_ms} to {until_ms} ran exactly once",
        names.len()
    );
}
