//! `dron cluster`: who leads, in which term, and each server's role and lag, as the server
//! asked sees it (`GET /api/cluster`; any server answers, a follower with what it knows).
//! `dron cluster add-node ID ADDRESS` and `dron cluster remove-node ID` change the membership
//! (`POST /api/cluster/nodes`, `DELETE /api/cluster/nodes/ID`, made by the leader), and print
//! the cluster as it is afterwards.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Client, Outcome};
use super::table::{cell, pretty, render};

#[derive(Subcommand)]
pub enum ClusterAction {
    /// Add a server: it must be running with `--join` (and the cluster's secret). It becomes
    /// a voter once it has caught up (from a snapshot if the log behind has been dropped).
    AddNode {
        /// The new server's node id (its --node-id).
        id: u64,
        /// Its HTTP base address, as the other servers reach it, e.g. http://10.0.0.4:4400.
        address: String,
    },
    /// Remove a server (dead or alive) from the cluster; stop it afterwards.
    RemoveNode {
        /// The server's node id.
        id: u64,
    },
}

pub async fn cluster(client: &Client, action: Option<ClusterAction>, json: bool) -> Outcome {
    let answer = match action {
        None => client.call(Method::GET, "/api/cluster", None).await?,
        Some(ClusterAction::AddNode { id, address }) => {
            let body = json!({ "id": id, "address": address });
            let answer = client
                .call(Method::POST, "/api/cluster/nodes", Some(&body))
                .await?;
            eprintln!("node {id} added at {address}");
            answer
        }
        Some(ClusterAction::RemoveNode { id }) => {
            let path = format!("/api/cluster/nodes/{id}");
            let answer = client.call(Method::DELETE, &path, None).await?;
            eprintln!("node {id} removed");
            answer
        }
    };
    if json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    print!("{}", summary(&answer));
    Ok(())
}

/// The leader and term, the server asked, then one row per server.
fn summary(status: &Value) -> String {
    let leader = match (&status["leader"], &status["leaderAddress"]) {
        (Value::Null, _) => "none elected yet".to_string(),
        (id, Value::String(address)) => format!("node {} at {address}", cell(id)),
        (id, _) => format!("node {}", cell(id)),
    };
    let scheduling = match status["scheduling"].as_bool() {
        Some(true) => "scheduling",
        _ => "not scheduling",
    };
    let mut out = format!(
        "leader: {leader}, term {}\nasked:  node {} ({}, {scheduling})\n\n",
        cell(&status["term"]),
        cell(&status["thisNode"]),
        cell(&status["role"]),
    );
    let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|node| {
            let this = node["id"] == status["thisNode"];
            vec![
                format!("{}{}", cell(&node["id"]), if this { " *" } else { "" }),
                cell(&node["address"]),
                cell(&node["role"]),
                cell(&node["matchedIndex"]),
                cell(&node["lagMs"]),
            ]
        })
        .collect();
    let headers = ["ID", "ADDRESS", "ROLE", "MATCHED INDEX", "LAG MS"];
    out.push_str(&render(&headers, &rows));
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_cluster_prints_as_a_table() {
        let status = json!({
            "leader": 2, "leaderAddress": "http://127.0.0.1:4402", "term": 7,
            "thisNode": 1, "role": "follower", "scheduling": false,
            "lastLogIndex": 1042, "lastApplied": 1042,
            "nodes": [
                {"id": 1, "address": "http://127.0.0.1:4401", "role": "follower", "matchedIndex": null, "lagMs": null},
                {"id": 2, "address": "http://127.0.0.1:4402", "role": "leader", "matchedIndex": 1042, "lagMs": 0},
            ],
        });
        let text = super::summary(&status);
        let expected = "leader: node 2 at http://127.0.0.1:4402, term 7\n\
            asked:  node 1 (follower, not scheduling)\n\n\
            ID   ADDRESS                ROLE      MATCHED INDEX  LAG MS\n\
            1 *  http://127.0.0.1:4401  follower  -              -\n\
            2    http://127.0.0.1:4402  leader    1042           0\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn no_leader_says_so() {
        let status = json!({"leader": null, "term": 3, "thisNode": 3, "role": "candidate",
            "scheduling": false, "nodes": []});
        assert!(super::summary(&status).starts_with("leader: none elected yet, term 3\n"));
    }
}
