//! `GET /api/graph`: the dependency graph the UI draws, as nodes (jobs with their last result,
//! and the resources they wait for) and edges. With `job`, that job's neighbourhood `depth`
//! levels up and down; without, every job, unless there are more than `limit`.

use std::collections::{BTreeMap, HashSet};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use dron_actors::coordinator::JobSummary;
use dron_actors::graph::{Source, upstream_links};
use dron_actors::listing::last_result;
use dron_model::name::validate_job_name;
use serde::Deserialize;
use serde_json::{Value, json};

use super::time;
use crate::http::AppState;
use crate::http::chronos_extra::count_param;
use crate::http::error::{ApiError, ApiResult};

const DEFAULT_DEPTH: usize = 2;
const MAX_DEPTH: usize = 10;
/// Jobs drawn at most: a browser lays out a few thousand nodes in a second or two.
const DEFAULT_LIMIT: usize = 500;
const MAX_LIMIT: usize = 5000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphParams {
    job: Option<String>,
    depth: Option<String>,
    limit: Option<String>,
}

pub async fn graph(
    State(state): State<AppState>,
    params: Result<Query<GraphParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(params) =
        params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let depth = count_param("depth", params.depth.as_deref())?.unwrap_or(DEFAULT_DEPTH);
    let depth = depth.min(MAX_DEPTH);
    let limit = count_param("limit", params.limit.as_deref())?.unwrap_or(DEFAULT_LIMIT);
    let limit = limit.clamp(1, MAX_LIMIT);
    let client = state.client()?;
    let job = params.job.filter(|j| !j.is_empty());
    let graph = match &job {
        Some(job) => {
            validate_job_name("job", job)?;
            client.neighbourhood(job, depth, limit).await?
        }
        None => client.whole_graph(limit).await?,
    };
    let (nodes, edges) = nodes_and_edges(&graph.jobs);
    Ok(Json(json!({
        "job": job,
        "depth": job.as_ref().map(|_| depth),
        "truncated": graph.truncated,
        "nodes": nodes,
        "edges": edges,
    })))
}

/// Job nodes (`j:NAME`), resource nodes (`r:TEXT`) for the data the jobs wait for, and every
/// edge whose two ends are drawn.
fn nodes_and_edges(jobs: &[JobSummary]) -> (Vec<Value>, Vec<Value>) {
    let drawn: HashSet<&str> = jobs.iter().map(|j| j.record.spec.name.as_str()).collect();
    let mut nodes: Vec<Value> = jobs.iter().map(job_node).collect();
    let mut resources: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut edges = Vec::new();
    for job in jobs {
        let name = &job.record.spec.name;
        for link in upstream_links(&job.record.spec) {
            let from = match &link.from {
                Source::Job(parent) if drawn.contains(parent.as_str()) => format!("j:{parent}"),
                Source::Job(_) => continue,
                Source::Resource(text) => {
                    resources.entry(text.clone()).or_default().push(name);
                    format!("r:{text}")
                }
            };
            edges.push(json!({
                "from": from,
                "to": format!("j:{name}"),
                "kind": link.kind.as_str(),
                "label": link.label,
            }));
        }
    }
    for (text, consumers) in resources {
        nodes.push(json!({
            "id": format!("r:{text}"),
            "kind": "resource",
            "name": text,
            "consumers": consumers,
        }));
    }
    (nodes, edges)
}

fn job_node(job: &JobSummary) -> Value {
    let (spec, state) = (&job.record.spec, &job.record.state);
    json!({
        "id": format!("j:{}", spec.name),
        "kind": "job",
        "name": spec.name,
        "status": last_result(state.last_success_ms, state.last_error_ms),
        "runState": job.run_state.as_str(),
        "disabled": spec.disabled,
        "lastSuccess": time(state.last_success_ms),
        "lastError": time(state.last_error_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dron_actors::coordinator::RunState;
    use dron_model::job::{JobKind, JobRecord, JobRequest};

    fn summary(json: Value, kind: JobKind) -> JobSummary {
        let request: JobRequest = serde_json::from_value(json).unwrap();
        let spec = request.validate(kind, chrono::Utc::now()).unwrap();
        JobSummary {
            record: JobRecord {
                spec,
                state: Default::default(),
            },
            run_state: RunState::Idle,
        }
    }

    #[test]
    fn edges_join_drawn_jobs_and_the_resources_they_wait_for() {
        let jobs = [
            summary(
                json!({"name": "a", "command": "x", "schedule": "R//PT1H", "dependsOn": ["hive:t/{TODAY}"]}),
                JobKind::Scheduled,
            ),
            summary(
                json!({"name": "b", "command": "x", "parents": ["a", "outside"]}),
                JobKind::Dependent,
            ),
        ];
        let (nodes, edges) = nodes_and_edges(&jobs);
        let ids: Vec<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["j:a", "j:b", "r:hive:t/{TODAY}"]);
        let pairs: Vec<(&str, &str)> = edges
            .iter()
            .map(|e| (e["from"].as_str().unwrap(), e["to"].as_str().unwrap()))
            .collect();
        assert_eq!(pairs, [("r:hive:t/{TODAY}", "j:a"), ("j:a", "j:b")]);
        assert_eq!(nodes[0]["status"], "fresh");
    }
}
