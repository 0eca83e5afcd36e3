//! Catching up and changing the membership of a cluster of real `dron serve` processes on
//! loopback (docs/cluster.md): a follower killed with SIGKILL catches up after its restart; a
//! dead server is replaced by a new, empty one that catches up from a snapshot; a removed
//! server stops scheduling; bad membership changes are refused with a 4xx naming the problem.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use support::cluster::Cluster;
use support::recording::{now_ms, recording_job};
use support::wait_for;

/// A job that never falls due while the test runs (no agent is needed).
fn later_job(name: &str) -> Value {
    let out = std::env::temp_dir();
    recording_job(name, &out, (now_ms() / 1000 + 7200) * 1000)
}

/// Creates `names` through server `index`, each acknowledged (204).
async fn create_all(cluster: &Cluster, index: usize, names: &[String]) {
    for name in names {
        let answer = cluster
            .request(index, "POST", "/scheduler/iso8601", Some(later_job(name)))
            .await;
        assert!(
            matches!(answer, Ok((204, _))),
            "creating {name}: {answer:?}\n{}",
            cluster.logs()
        );
    }
}

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// The names `GET /api/jobs` lists on server `index`.
async fn listed(cluster: &Cluster, index: usize) -> BTreeSet<String> {
    let (status, body) = cluster
        .request(index, "GET", "/api/jobs?limit=1000", None)
        .await
        .expect("listing jobs");
    assert_eq!(status, 200, "{body}");
    body["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|job| job["name"].as_str().map(str::to_string))
        .collect()
}

/// What server `index` lists from its own copy: the leader (`leader`) dies and the third
/// server's disk is lost, so `index`, the only one left with the whole log, is elected.
async fn listed_alone(cluster: &mut Cluster, index: usize, leader: usize) -> BTreeSet<String> {
    let other = 3 - index - leader;
    cluster.kill9(leader);
    cluster.kill9(other);
    cluster.wipe(other);
    cluster.restart(other);
    let elected = cluster.wait_for_leader().await;
    assert_eq!(elected, index, "{}", cluster.logs());
    listed(cluster, index).await
}

fn missing(expected: &[String], listed: &BTreeSet<String>) -> Vec<String> {
    expected
        .iter()
        .filter(|name| !listed.contains(*name))
        .cloned()
        .collect()
}

/// A number in server `index`'s `GET /api/cluster`.
async fn status_number(cluster: &Cluster, index: usize, field: &str) -> Option<u64> {
    cluster.status(index).await?[field].as_u64()
}

/// Waits until server `index` has applied every entry up to `index_applied`.
async fn applied(cluster: &Cluster, index: usize, index_applied: u64) {
    wait_for(
        &format!("server {index} to apply entry {index_applied}"),
        Duration::from_secs(30),
        || async { status_number(cluster, index, "lastApplied").await >= Some(index_applied) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_killed_and_restarted_catches_up() {
    let mut cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    create_all(&cluster, leader, &names("before", 5)).await;

    cluster.kill9(follower);
    let during = names("during", 30);
    create_all(&cluster, other, &during).await;
    let last = status_number(&cluster, leader, "lastApplied")
        .await
        .expect("the leader's last applied entry");

    cluster.restart(follower);
    applied(&cluster, follower, last).await;

    // Its own copy answers: the others go (the leader dies, the other server's disk is
    // lost), so the restarted follower, the only one with the whole log, is elected and
    // lists the jobs from its own stores.
    let lost = missing(&during, &listed_alone(&mut cluster, follower, leader).await);
    assert!(
        lost.is_empty(),
        "jobs created while it was down are missing: {lost:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_server_is_replaced_by_a_new_one_that_catches_up_from_a_snapshot() {
    // A snapshot every 10 entries, and no log kept behind it: a new server cannot catch up
    // from the log.
    let config = "[cluster]\nsnapshot_after_entries = 10\nentries_kept_after_snapshot = 0\n";
    let mut cluster = Cluster::start(3, config).await;
    let mut expected = names("first", 10);
    create_all(&cluster, 0, &expected).await;

    // Node 3 dies for good, and is removed.
    cluster.kill9(2);
    cluster.nodes[2].member = false;
    let leader = cluster.wait_for_leader().await;
    let (code, out, err) = cluster.cli(leader, &["remove-node", "3"]).await;
    assert_eq!(code, 0, "remove-node: {out}{err}\n{}", cluster.logs());
    let members: Value = serde_json::from_str(&out).expect("the cluster as JSON");
    let ids: Vec<u64> = members["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|node| node["id"].as_u64())
        .collect();
    assert_eq!(ids, [1, 2]);

    let more = names("second", 20);
    create_all(&cluster, leader, &more).await;
    expected.extend(more);
    wait_for(
        "the leader to drop the log behind a snapshot",
        Duration::from_secs(20),
        || async { status_number(&cluster, leader, "purgedIndex").await > Some(0) },
    )
    .await;
    let purged = status_number(&cluster, leader, "purgedIndex")
        .await
        .unwrap();

    // Node 4, empty, waits to be added; added through the other server (forwarded).
    let new = cluster.start_joining(4);
    wait_for("node 4 to answer", Duration::from_secs(20), || async {
        cluster.status(new).await.is_some()
    })
    .await;
    assert_eq!(cluster.status(new).await.unwrap()["leader"], Value::Null);
    let (health, body) = cluster.request(new, "GET", "/health", None).await.unwrap();
    assert_eq!(health, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("waits to be added"),
        "{body}"
    );
    let address = cluster.nodes[new].url("");
    let (code, out, err) = cluster.cli(1 - leader, &["add-node", "4", &address]).await;
    assert_eq!(code, 0, "add-node: {out}{err}\n{}", cluster.logs());
    cluster.nodes[new].member = true;
    let last = status_number(&cluster, leader, "lastApplied")
        .await
        .unwrap();
    applied(&cluster, new, last).await;
    // Entries up to `purged` were in no log any more: node 4 has them from a snapshot.
    let status = cluster.status(new).await.unwrap();
    assert!(
        status["snapshotIndex"].as_u64() >= Some(purged),
        "node 4 holds no snapshot of the purged entries: {status}"
    );
    assert_eq!(status["role"], "follower", "{status}");

    // The leader dies: nodes {the other, 4} are a majority of {1, 2, 4}, elect, and take writes.
    cluster.kill9(leader);
    cluster.nodes[leader].member = false;
    let elected = cluster.wait_for_leader().await;
    assert_ne!(elected, leader);
    let after = names("after", 3);
    create_all(&cluster, new, &after).await;
    expected.extend(after);
    let lost = missing(&expected, &listed(&cluster, new).await);
    assert!(
        lost.is_empty(),
        "jobs missing: {lost:?}\n{}",
        cluster.logs()
    );
    let last = status_number(&cluster, elected, "lastApplied")
        .await
        .unwrap();
    applied(&cluster, new, last).await;

    // Its last follower dies: the leader, cut off from the majority, says it leads no more.
    let follower = if elected == new { 1 - leader } else { new };
    cluster.kill9(follower);
    wait_for(
        "the cut-off leader to say so",
        Duration::from_secs(10),
        || async {
            cluster.status(elected).await.is_some_and(|s| {
                s["role"] == "cut-off" && s["leader"].is_null() && s["scheduling"] == false
            })
        },
    )
    .await;
    let (health, body) = cluster
        .request(elected, "GET", "/health", None)
        .await
        .unwrap();
    assert_eq!((health, &body["role"]), (503, &json!("cut-off")), "{body}");
}

/// A job whose command carries `bytes` of text that compresses badly (hex of a
/// pseudo-random sequence), so that a few hundred of them fill megabytes of RocksDB tables.
fn bulky_job(name: &str, bytes: usize) -> Value {
    let mut job = later_job(name);
    let mut seed = name.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let noise: String = (0..bytes / 16)
        .map(|_| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            format!("{seed:016x}")
        })
        .collect();
    job["command"] = json!(format!("true {noise}"));
    job
}

/// openraft's chunks are 1 MiB (`snapshot_max_chunk_size`).
const MORE_THAN_ONE_CHUNK: u64 = 3 << 19;

/// The largest file in a server's snapshots directory (the current snapshot, packed).
fn snapshot_file_bytes(cluster: &Cluster, index: usize) -> u64 {
    let dir = cluster.nodes[index].data.path().join("data/raft/snapshots");
    std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.metadata().ok())
                .filter(|meta| meta.is_file())
                .map(|meta| meta.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// openraft sends a snapshot in chunks of 1 MiB: a follower that
/// was down while megabytes of jobs were written, and the log behind them dropped, catches up
/// from a snapshot of several chunks, streamed from the leader's file into its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_catches_up_from_a_snapshot_of_several_chunks() {
    let config = "[cluster]\nsnapshot_after_entries = 50\nentries_kept_after_snapshot = 0\n";
    let mut cluster = Cluster::start(3, config).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let behind = status_number(&cluster, follower, "lastApplied")
        .await
        .expect("the follower's last applied entry");
    cluster.kill9(follower);
    let jobs = names("bulky", 800);
    for chunk in jobs.chunks(16) {
        let creates = chunk.iter().map(|name| {
            cluster.request(
                leader,
                "POST",
                "/scheduler/iso8601",
                Some(bulky_job(name, 3000)),
            )
        });
        for (name, answer) in chunk
            .iter()
            .zip(futures_util::future::join_all(creates).await)
        {
            assert!(
                matches!(answer, Ok((204, _))),
                "creating {name}: {answer:?}"
            );
        }
    }
    let last = status_number(&cluster, leader, "lastApplied")
        .await
        .expect("the leader's last applied entry");
    // Small writes until a snapshot covers every bulky job and the log behind it is dropped
    // (one entry each: snapshots come every 50 entries, and group commit put the bulky jobs
    // into fewer).
    let mut fillers = 0;
    while status_number(&cluster, leader, "purgedIndex").await < Some(last) {
        assert!(fillers < 500, "no snapshot after {fillers} more entries");
        create_all(&cluster, leader, &[format!("filler-{fillers}")]).await;
        fillers += 1;
    }
    let purged = status_number(&cluster, leader, "purgedIndex")
        .await
        .unwrap();
    assert!(purged > behind);
    let sent = snapshot_file_bytes(&cluster, leader);
    assert!(
        sent > MORE_THAN_ONE_CHUNK,
        "the leader's snapshot is {sent} bytes"
    );

    cluster.restart(follower);
    applied(&cluster, follower, last).await;
    let status = cluster.status(follower).await.unwrap();
    assert!(
        status["snapshotIndex"].as_u64() >= Some(purged),
        "the follower caught up without a snapshot: {status}"
    );
    let received = snapshot_file_bytes(&cluster, follower);
    assert!(
        received > MORE_THAN_ONE_CHUNK,
        "the follower keeps no received snapshot of several chunks ({received} bytes)"
    );

    // Its own copy answers: the leader dies and the other server's disk is lost, so the
    // follower, the only one with every entry, is elected and lists from its own stores.
    let lost = missing(&jobs, &listed_alone(&mut cluster, follower, leader).await);
    assert!(
        lost.is_empty(),
        "{} jobs missing after the snapshot, e.g. {:?}",
        lost.len(),
        lost.first()
    );
}

/// Sends a membership change to server `index`: its status and JSON body.
async fn change(
    cluster: &Cluster,
    index: usize,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    cluster
        .request(index, method, path, body)
        .await
        .expect("an answer")
}

/// `DELETE /api/cluster/nodes/{id}` through server `via`: its status and JSON body.
async fn remove(cluster: &Cluster, via: usize, id: impl std::fmt::Display) -> (u16, Value) {
    let path = format!("/api/cluster/nodes/{id}");
    change(cluster, via, "DELETE", &path, None).await
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_membership_changes_are_refused_and_a_removed_leader_stops_scheduling() {
    let mut cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let taken = cluster.nodes[follower].url("");
    let cases = [
        (
            json!({"id": 1, "address": "http://127.0.0.1:1"}),
            409,
            "already a voting member",
        ),
        (
            json!({"id": 9, "address": "not a url"}),
            400,
            "is not a URL",
        ),
        (
            json!({"id": 9, "address": "ftp://127.0.0.1:1"}),
            400,
            "http:// or https://",
        ),
        (
            json!({"id": 9, "address": "http://127.0.0.1:1/x"}),
            400,
            "no path",
        ),
        (
            json!({"id": 9, "address": taken}),
            409,
            "each node has an address of its own",
        ),
        (
            json!({"id": "four", "address": "http://127.0.0.1:1"}),
            400,
            "field 'id'",
        ),
        (
            json!({"address": "http://127.0.0.1:1"}),
            400,
            "missing field `id`",
        ),
    ];
    for (body, status, message) in cases {
        // Through a follower: forwarded to the leader as every write.
        let (got, answer) = change(
            &cluster,
            follower,
            "POST",
            "/api/cluster/nodes",
            Some(body.clone()),
        )
        .await;
        assert_eq!(got, status, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(message), "{body}: {answer}");
    }
    let (got, answer) = remove(&cluster, follower, "9").await;
    assert_eq!(got, 404, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("not a member"),
        "{answer}"
    );
    let (got, answer) = remove(&cluster, follower, "x").await;
    assert_eq!(got, 400, "{answer}");
    assert_eq!(answer["field"], "id", "{answer}");
    let (code, _, err) = cluster.cli(follower, &["remove-node", "9"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("not a member"), "{err}");

    // The leader removes itself: it stops scheduling and says so; the others elect.
    let id = cluster.nodes[leader].id;
    let (got, answer) = remove(&cluster, follower, id).await;
    assert_eq!(got, 200, "{answer}\n{}", cluster.logs());
    cluster.nodes[leader].member = false;
    wait_for(
        "the removed leader to say so",
        Duration::from_secs(10),
        || async {
            cluster.status(leader).await.is_some_and(|s| {
                s["role"] == "removed" && s["scheduling"] == false && s["leader"].is_null()
            })
        },
    )
    .await;
    let (health, body) = change(&cluster, leader, "GET", "/health", None).await;
    assert_eq!(health, 503, "{body}");
    assert_eq!(body["role"], "removed", "{body}");
    let elected = cluster.wait_for_leader().await;
    assert_ne!(elected, leader);
    create_all(&cluster, elected, &names("kept", 1)).await;
    cluster.kill9(leader);

    // Down to one voter, which cannot be removed.
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let second = if others[0] == elected {
        others[1]
    } else {
        others[0]
    };
    let second_id = cluster.nodes[second].id;
    let (got, answer) = remove(&cluster, elected, second_id).await;
    assert_eq!(got, 200, "{answer}");
    cluster.kill9(second);
    cluster.nodes[second].member = false;
    let last_id = cluster.nodes[elected].id;
    let (got, answer) = remove(&cluster, elected, last_id).await;
    assert_eq!(got, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("last voting member"),
        "{answer}"
    );
}
