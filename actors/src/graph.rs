//! The dependency graph as the UI draws it (`GET /api/graph`): jobs, the resources they wait
//! for, and the edges between them, read from each job's definition. A job's upstream is on
//! its own shard (its spec names it); its downstream is found by asking every shard which of
//! its jobs name it, one round per level, so a neighbourhood costs `depth + 1` rounds however
//! many jobs exist.

use std::collections::HashSet;

use dron_model::job::{JobRecord, JobSpec, Trigger};
use dron_model::resource::JOB_PREFIX;

use crate::views::{JobSummary, RunState};

/// Why a job runs after something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    /// Chronos `parents`.
    Parent,
    /// A `dependsOn` template.
    DependsOn,
    /// The `triggeredBy` pattern.
    TriggeredBy,
}

impl EdgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Parent => "parent",
            EdgeKind::DependsOn => "dependsOn",
            EdgeKind::TriggeredBy => "triggeredBy",
        }
    }
}

/// Where an edge into a job comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Job(String),
    /// Data announced from outside: the template or pattern as written in the job.
    Resource(String),
}

/// An edge into a job: from `from`, because of `label` (a parent's name, a template, a
/// pattern).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub from: Source,
    pub kind: EdgeKind,
    pub label: String,
}

/// Everything a job runs after. A `job:NAME@...` template or pattern with a literal name is an
/// edge from that job, whatever time it names (yesterday's run is still that job's output).
pub fn upstream_links(spec: &JobSpec) -> Vec<Link> {
    let mut links: Vec<Link> = spec
        .parents()
        .iter()
        .map(|parent| Link {
            from: Source::Job(parent.clone()),
            kind: EdgeKind::Parent,
            label: parent.clone(),
        })
        .collect();
    let templates = spec.depends_on.iter().map(|t| (t, EdgeKind::DependsOn));
    let pattern = match &spec.trigger {
        Trigger::Resource { pattern } => Some((pattern, EdgeKind::TriggeredBy)),
        _ => None,
    };
    for (text, kind) in templates.chain(pattern) {
        let from = match named_job(text) {
            Some(job) => Source::Job(job.to_string()),
            None => Source::Resource(text.clone()),
        };
        links.push(Link {
            from,
            kind,
            label: text.clone(),
        });
    }
    links
}

/// The jobs a job runs after.
pub fn upstream_jobs(spec: &JobSpec) -> impl Iterator<Item = String> {
    upstream_links(spec)
        .into_iter()
        .filter_map(|link| match link.from {
            Source::Job(name) => Some(name),
            Source::Resource(_) => None,
        })
}

/// `job:NAME@...` with a literal `NAME` (no placeholder or wildcard): that job.
fn named_job(text: &str) -> Option<&str> {
    let (name, _) = text.strip_prefix(JOB_PREFIX)?.split_once('@')?;
    let literal = !name.is_empty() && !name.contains(['{', '*']);
    literal.then_some(name)
}

/// What one shard answers for a round of the walk.
#[derive(Debug, Clone, Default)]
pub struct ShardNeighbours {
    /// Its jobs among those asked to describe.
    pub described: Vec<JobSummary>,
    /// Its jobs that run after one of those asked about.
    pub children: Vec<String>,
}

/// One pass over a shard's jobs: describes those in `describe` and finds those running after
/// one of `children_of`.
pub fn shard_neighbours<'a>(
    jobs: impl Iterator<Item = (&'a JobRecord, RunState)>,
    describe: &HashSet<String>,
    children_of: &HashSet<String>,
) -> ShardNeighbours {
    let mut answer = ShardNeighbours::default();
    for (record, run_state) in jobs {
        let name = &record.spec.name;
        if describe.contains(name) {
            answer.described.push(JobSummary {
                record: record.clone(),
                run_state,
            });
        }
        if !children_of.is_empty() && upstream_jobs(&record.spec).any(|u| children_of.contains(&u))
        {
            answer.children.push(name.clone());
        }
    }
    answer
}

/// The jobs of a graph to draw; edges and resources follow from their definitions.
#[derive(Debug, Clone, Default)]
pub struct Neighbourhood {
    pub jobs: Vec<JobSummary>,
    /// Some jobs were left out: the graph reached its size cap.
    pub truncated: bool,
}

/// The names of `candidates` not seen yet, while fewer than `cap` have been; records in
/// `truncated` when some had to be left out.
pub fn admit(
    candidates: impl IntoIterator<Item = String>,
    seen: &mut HashSet<String>,
    cap: usize,
    truncated: &mut bool,
) -> Vec<String> {
    let mut admitted = Vec::new();
    for name in candidates {
        if seen.contains(&name) {
            continue;
        }
        if seen.len() >= cap {
            *truncated = true;
            break;
        }
        seen.insert(name.clone());
        admitted.push(name);
    }
    admitted
}

#[cfg(test)]
mod tests {
    use super::*;
    use dron_model::job::{JobKind, JobRequest};

    fn spec(json: serde_json::Value, kind: JobKind) -> JobSpec {
        let request: JobRequest = serde_json::from_value(json).unwrap();
        request.validate(kind, chrono::Utc::now()).unwrap()
    }

    #[test]
    fn links_come_from_parents_templates_and_patterns() {
        let child = spec(
            serde_json::json!({"name": "c", "command": "x", "parents": ["a", "b"],
                "dependsOn": ["job:load@{TODAY-1}", "hive:users/ds={TODAY}", "job:{TODAY}@x"]}),
            JobKind::Dependent,
        );
        let links = upstream_links(&child);
        let froms: Vec<&Source> = links.iter().map(|l| &l.from).collect();
        assert_eq!(
            froms,
            [
                &Source::Job("a".into()),
                &Source::Job("b".into()),
                &Source::Job("load".into()),
                &Source::Resource("hive:users/ds={TODAY}".into()),
                &Source::Resource("job:{TODAY}@x".into()),
            ]
        );
        assert_eq!(links[2].kind, EdgeKind::DependsOn);
        assert_eq!(links[2].label, "job:load@{TODAY-1}");
        let triggered = spec(
            serde_json::json!({"name": "t", "command": "x", "triggeredBy": "job:c@*"}),
            JobKind::Scheduled,
        );
        assert_eq!(upstream_jobs(&triggered).collect::<Vec<_>>(), ["c"]);
        let by_data = spec(
            serde_json::json!({"name": "d", "command": "x", "triggeredBy": "products:*"}),
            JobKind::Scheduled,
        );
        let link = &upstream_links(&by_data)[0];
        assert_eq!(link.from, Source::Resource("products:*".into()));
        assert_eq!(link.kind, EdgeKind::TriggeredBy);
    }

    #[test]
    fn a_shard_describes_and_finds_children_in_one_pass() {
        let records: Vec<JobRecord> = [
            serde_json::json!({"name": "a", "command": "x", "schedule": "R//PT1H"}),
            serde_json::json!({"name": "b", "command": "x", "parents": ["a"]}),
            serde_json::json!({"name": "c", "command": "x", "schedule": "R//PT1H", "dependsOn": ["job:a@{TODAY}"]}),
        ]
        .into_iter()
        .map(|json| {
            let kind = match json.get("parents") {
                Some(_) => JobKind::Dependent,
                None => JobKind::Scheduled,
            };
            JobRecord {
                spec: spec(json, kind),
                state: Default::default(),
            }
        })
        .collect();
        let jobs = records.iter().map(|r| (r, RunState::Idle));
        let describe = HashSet::from(["a".to_string()]);
        let answer = shard_neighbours(jobs, &describe, &describe);
        assert_eq!(answer.described.len(), 1);
        assert_eq!(answer.children, ["b", "c"]);
    }

    #[test]
    fn admission_stops_at_the_cap() {
        let mut seen = HashSet::from(["a".to_string()]);
        let mut truncated = false;
        let names = ["a", "b", "c", "d"].map(String::from);
        let admitted = admit(names, &mut seen, 3, &mut truncated);
        assert_eq!(admitted, ["b", "c"]);
        assert!(truncated);
    }
}
