//! The scheduler as the HTTP API and the CLI see it: one handle with an async method per
//! operation. Questions that span shards (does a parent exist, would a new edge close a
//! cycle, which jobs depend on this one) are answered here by asking the owning shards, so
//! the router stays a forwarder.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use dron_model::error::Invalid;
use dron_model::ids::TaskRef;
use dron_model::instance::HistoryEntry;
use dron_model::job::{JobRecord, JobSpec, Trigger};
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};

use dron_model::resource::{ResourceEvent, ResourceRecord};

use crate::bus::{BusMsg, Ingested, Origin};
use crate::coordinator::{
    CoordinatorMsg, JobSummary, JobView, PutOutcome, Reply, ShardLineage, ShardStats,
};
use crate::error::CommandError;
use crate::graph::{self, Neighbourhood};
use crate::listing::{JobPage, JobQuery};
use crate::notify::{NotifierMsg, TestRequest};
use crate::router::{RouterMsg, fanout};
use crate::search::JobSearch;
use dron_model::notice::NoticeRecord;

/// How long an API call waits for a shard. A durable write takes milliseconds; this bounds
/// a call that reached a shard just as it failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct SchedulerClient {
    router: ActorRef<RouterMsg>,
    bus: ActorRef<BusMsg>,
    notifier: Option<ActorRef<NotifierMsg>>,
}

/// Everything known of one resource, across shards.
#[derive(Debug, Clone, Default)]
pub struct Lineage {
    /// Set when the resource is satisfied.
    pub record: Option<ResourceRecord>,
    pub shards: ShardLineage,
}

impl SchedulerClient {
    pub fn new(router: ActorRef<RouterMsg>, bus: ActorRef<BusMsg>) -> Self {
        SchedulerClient {
            router,
            bus,
            notifier: None,
        }
    }

    pub fn with_notifier(mut self, notifier: ActorRef<NotifierMsg>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    fn notifier(&self) -> Result<&ActorRef<NotifierMsg>, CommandError> {
        self.notifier
            .as_ref()
            .ok_or_else(|| CommandError::Unavailable("notifications are not running".into()))
    }

    /// The newest `limit` notices with how each delivery fared, newest first.
    pub async fn notifications(&self, limit: usize) -> Result<Vec<NoticeRecord>, CommandError> {
        let asked = self.notifier()?.call(
            |reply| NotifierMsg::List { limit, reply },
            Some(CALL_TIMEOUT),
        );
        answer(asked.await)
    }

    /// Sends a test notice; answers it once each channel has been tried.
    pub async fn test_notification(
        &self,
        request: TestRequest,
    ) -> Result<NoticeRecord, CommandError> {
        let asked = self.notifier()?.call(
            |reply| NotifierMsg::Test { request, reply },
            // Each transport gives up on its own well before this.
            Some(CALL_TIMEOUT * 2),
        );
        answer(asked.await)?
    }

    /// Hands an event to the bus; answers once it is recorded and applied (or a duplicate).
    pub async fn ingest(
        &self,
        event: ResourceEvent,
        origin: Origin,
    ) -> Result<Ingested, CommandError> {
        let asked = self.bus.call(
            |reply| BusMsg::Ingest {
                event,
                origin,
                reply,
            },
            Some(CALL_TIMEOUT),
        );
        answer(asked.await)?
    }

    /// Whether a resource is satisfied, who produces it, who waits for it.
    pub async fn lineage(&self, resource: &str) -> Result<Lineage, CommandError> {
        let id = resource.to_string();
        let asked = self.bus.call(
            |reply| BusMsg::Lookup {
                resource: id,
                reply,
            },
            Some(CALL_TIMEOUT),
        );
        let record = answer(asked.await)??;
        let answers = self
            .ask_all(|reply| CoordinatorMsg::Lineage {
                resource: resource.to_string(),
                reply,
            })
            .await?;
        let mut shards = ShardLineage::default();
        for answer in answers {
            shards.producers.extend(answer.producers);
            shards.consumers.extend(answer.consumers);
            shards.triggered.extend(answer.triggered);
            shards.waiting.extend(answer.waiting);
        }
        for names in [
            &mut shards.producers,
            &mut shards.consumers,
            &mut shards.triggered,
            &mut shards.waiting,
        ] {
            names.sort();
        }
        Ok(Lineage { record, shards })
    }

    /// Creates or replaces a job, after checking its parents exist and that it closes no cycle.
    pub async fn put_job(
        &self,
        spec: JobSpec,
        received_ms: i64,
    ) -> Result<PutOutcome, CommandError> {
        self.check_parents(&spec).await?;
        let job = spec.name.clone();
        self.ask_job(&job, |reply| CoordinatorMsg::PutJob {
            spec,
            received_ms,
            reply,
        })
        .await
    }

    /// Deletes a job as Chronos does, re-wiring its children first: each child takes the
    /// deleted job's parents in its place (keeping its other parents, without duplicates).
    /// A child left with no parent at all (the deleted job was scheduled) takes the deleted
    /// job's schedule and time zone, as Chronos turns it into a scheduled job. Counters,
    /// `disabled` and everything else of each child are kept. `received_ms` is when the
    /// request arrived (the first target of a child that becomes scheduled).
    pub async fn delete_job(&self, name: &str, received_ms: i64) -> Result<(), CommandError> {
        let deleted = self.job(name).await?.record.spec;
        for child in self.children_of(name).await? {
            let spec = self.job(&child).await?.record.spec;
            let spec = rewired(spec, &deleted);
            self.put_job(spec, received_ms).await?;
        }
        let name = name.to_string();
        self.ask_job(&name.clone(), |reply| CoordinatorMsg::DeleteJob {
            name,
            reply,
        })
        .await
    }

    pub async fn job(&self, name: &str) -> Result<JobView, CommandError> {
        let name = name.to_string();
        self.ask_job(&name.clone(), |reply| CoordinatorMsg::GetJob {
            name,
            reply,
        })
        .await
    }

    pub async fn run_now(&self, name: &str) -> Result<String, CommandError> {
        let name = name.to_string();
        self.ask_job(&name.clone(), |reply| CoordinatorMsg::RunNow {
            name,
            reply,
        })
        .await
    }

    /// Counts a success of the job now and announces it to its children, on every shard.
    pub async fn mark_success(&self, name: &str) -> Result<(), CommandError> {
        let name = name.to_string();
        self.ask_job(&name.clone(), |reply| CoordinatorMsg::MarkSuccess {
            name,
            reply,
        })
        .await
    }

    pub async fn kill_tasks(&self, name: &str) -> Result<usize, CommandError> {
        let name = name.to_string();
        self.ask_job(&name.clone(), |reply| CoordinatorMsg::KillTasks {
            name,
            reply,
        })
        .await
    }

    pub async fn complete_async(
        &self,
        task: TaskRef,
        status_code: i32,
    ) -> Result<(), CommandError> {
        let job = task.job.clone();
        self.ask_job(&job, |reply| CoordinatorMsg::CompleteAsync {
            task,
            status_code,
            reply,
        })
        .await
    }

    pub async fn history(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, CommandError> {
        let name = name.to_string();
        self.ask_job(&name.clone(), |reply| CoordinatorMsg::History {
            name,
            limit,
            reply,
        })
        .await
    }

    /// Every job, sorted by name.
    pub async fn jobs(&self) -> Result<Vec<JobRecord>, CommandError> {
        let mut jobs: Vec<JobRecord> = self
            .ask_all(|reply| CoordinatorMsg::ListJobs { reply })
            .await?
            .concat();
        jobs.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(jobs)
    }

    /// The page `search.offset .. + search.limit` of the jobs matching `search`, by name.
    pub async fn search_jobs(&self, search: &JobSearch) -> Result<Vec<JobRecord>, CommandError> {
        let jobs = self.jobs().await?.into_iter();
        let matching = jobs.filter(|job| search.matches(&job.spec));
        Ok(matching.skip(search.offset).take(search.limit).collect())
    }

    /// One page of the jobs table, searched, filtered and sorted on every shard at once.
    pub async fn query_jobs(&self, query: &JobQuery) -> Result<JobPage, CommandError> {
        let pages = self
            .ask_all(|reply| CoordinatorMsg::QueryJobs {
                query: query.clone(),
                reply,
            })
            .await?;
        Ok(query.merge(pages))
    }

    /// The jobs `depth` levels upstream and downstream of `job` (itself included), at most
    /// `max_jobs` of them: one round over the shards per level.
    pub async fn neighbourhood(
        &self,
        job: &str,
        depth: usize,
        max_jobs: usize,
    ) -> Result<Neighbourhood, CommandError> {
        let mut found: BTreeMap<String, JobSummary> = BTreeMap::new();
        let mut seen = HashSet::from([job.to_string()]);
        let mut truncated = false;
        let (mut up, mut down) = (vec![job.to_string()], vec![job.to_string()]);
        for level in 0..=depth {
            let describe: HashSet<String> = up.iter().chain(&down).cloned().collect();
            let children_of: HashSet<String> = match level < depth {
                true => down.iter().cloned().collect(),
                false => HashSet::new(),
            };
            if describe.is_empty() {
                break;
            }
            let answers = self
                .ask_all(|reply| CoordinatorMsg::Neighbours {
                    describe: describe.clone(),
                    children_of: children_of.clone(),
                    reply,
                })
                .await?;
            let mut children = Vec::new();
            for answer in answers {
                for summary in answer.described {
                    found.insert(summary.record.spec.name.clone(), summary);
                }
                children.extend(answer.children);
            }
            if !found.contains_key(job) {
                return Err(CommandError::JobNotFound(job.to_string()));
            }
            if level == depth {
                break;
            }
            let parents = up.iter().filter_map(|name| found.get(name));
            let parents: Vec<String> = parents
                .flat_map(|summary| graph::upstream_jobs(&summary.record.spec))
                .collect();
            up = graph::admit(parents, &mut seen, max_jobs, &mut truncated);
            children.sort();
            down = graph::admit(children, &mut seen, max_jobs, &mut truncated);
        }
        let jobs = found.into_values().collect();
        Ok(Neighbourhood { jobs, truncated })
    }

    /// Every job, when there are at most `max_jobs`; else none, marked truncated (the caller
    /// then shows a job's neighbourhood instead of the whole world).
    pub async fn whole_graph(&self, max_jobs: usize) -> Result<Neighbourhood, CommandError> {
        let stats = self.shard_stats().await?;
        if stats.iter().map(|s| s.jobs).sum::<usize>() > max_jobs {
            let jobs = Vec::new();
            return Ok(Neighbourhood {
                jobs,
                truncated: true,
            });
        }
        let jobs = self.job_summaries().await?;
        Ok(Neighbourhood {
            jobs,
            truncated: false,
        })
    }

    /// Every job with what its live instances are doing, sorted by name.
    pub async fn job_summaries(&self) -> Result<Vec<JobSummary>, CommandError> {
        let mut jobs: Vec<JobSummary> = self
            .ask_all(|reply| CoordinatorMsg::Summaries { reply })
            .await?
            .concat();
        jobs.sort_by(|a, b| a.record.spec.name.cmp(&b.record.spec.name));
        Ok(jobs)
    }

    /// Run durations (ms) of each job's newest `limit` history entries, sorted by job name.
    pub async fn run_durations(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, Vec<i64>)>, CommandError> {
        let answers = self
            .ask_all(|reply| CoordinatorMsg::RunDurations { limit, reply })
            .await?;
        let mut durations = Vec::new();
        for answer in answers {
            durations.extend(answer?);
        }
        durations.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(durations)
    }

    pub async fn shard_stats(&self) -> Result<Vec<ShardStats>, CommandError> {
        self.ask_all(|reply| CoordinatorMsg::Stats { reply }).await
    }

    pub async fn shard_count(&self) -> Result<u32, CommandError> {
        answer(
            self.router
                .call(|reply| RouterMsg::ShardCount { reply }, Some(CALL_TIMEOUT))
                .await,
        )
    }

    pub async fn reshard(&self, count: u32) -> Result<u32, CommandError> {
        // Moving a million jobs takes a while: no timeout shorter than the move itself.
        answer(
            self.router
                .call(|reply| RouterMsg::Reshard { count, reply }, None)
                .await,
        )?
    }

    pub async fn inject_panic(&self, shard: u32) -> Result<(), CommandError> {
        answer(
            self.router
                .call(
                    |reply| RouterMsg::InjectPanic { shard, reply },
                    Some(CALL_TIMEOUT),
                )
                .await,
        )?
    }

    /// Rejects unknown parents, and jobs upstream (parents, or jobs whose runs a `job:`
    /// resource waits for) that (transitively) wait on the job itself.
    async fn check_parents(&self, spec: &JobSpec) -> Result<(), CommandError> {
        let parents = spec.parents();
        let upstream = spec.upstream_jobs();
        if upstream.is_empty() {
            return Ok(());
        }
        if upstream.contains(&spec.name) {
            let message = format!(
                "job '{0}' would wait for its own run of the same time: job:{0}@... with an earlier time ({{TODAY-1}}, {{LAST_RUN}}) is allowed",
                spec.name
            );
            return Err(Invalid::new(cycle_field(spec, &spec.name), message).into());
        }
        let known = self.parents_of(upstream.clone()).await?;
        let missing: Vec<&String> = parents
            .iter()
            .filter(|p| !known.iter().any(|(n, _)| n == *p))
            .collect();
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            let message = format!("parent job(s) {} do not exist", names.join(", "));
            return Err(Invalid::new("parents", message).into());
        }
        if let Some(cycle) = self.find_cycle(&spec.name, known).await? {
            let field = cycle_field(spec, &cycle[1]);
            let message = format!(
                "{field} would close a dependency cycle: {}",
                cycle.join(" -> ")
            );
            return Err(Invalid::new(field, message).into());
        }
        Ok(())
    }

    /// Walks up from the new job's parents; reaching the job itself means a cycle. Answers
    /// the cycle as `job -> parent -> ... -> job`.
    async fn find_cycle(
        &self,
        job: &str,
        start: Vec<(String, Vec<String>)>,
    ) -> Result<Option<Vec<String>>, CommandError> {
        let mut came_from: std::collections::HashMap<String, String> = Default::default();
        let mut seen: HashSet<String> = HashSet::new();
        let mut frontier: VecDeque<(String, Vec<String>)> = start.into();
        for (name, _) in &frontier {
            came_from.insert(name.clone(), job.to_string());
            seen.insert(name.clone());
        }
        while let Some((name, parents)) = frontier.pop_front() {
            let mut next = Vec::new();
            for parent in parents {
                if parent == job {
                    return Ok(Some(cycle_path(job, &name, &came_from)));
                }
                if seen.insert(parent.clone()) {
                    came_from.insert(parent.clone(), name.clone());
                    next.push(parent);
                }
            }
            if !next.is_empty() {
                frontier.extend(self.parents_of(next).await?);
            }
        }
        Ok(None)
    }

    /// The parents of each of `names` that exists.
    async fn parents_of(
        &self,
        names: Vec<String>,
    ) -> Result<Vec<(String, Vec<String>)>, CommandError> {
        let mut found = Vec::new();
        for name in names {
            let asked = vec![name.clone()];
            let reply = self
                .ask_job_plain(&name, |reply| CoordinatorMsg::ParentsOf {
                    names: asked,
                    reply,
                })
                .await?;
            found.extend(reply);
        }
        Ok(found)
    }

    async fn children_of(&self, name: &str) -> Result<BTreeSet<String>, CommandError> {
        let name = name.to_string();
        let answers = self
            .ask_all(|reply| CoordinatorMsg::ChildrenOf {
                name: name.clone(),
                reply,
            })
            .await?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// Sends a message to the shard owning `job` and waits for its answer.
    async fn ask_job<T: Send + 'static>(
        &self,
        job: &str,
        message: impl FnOnce(Reply<T>) -> CoordinatorMsg,
    ) -> Result<T, CommandError> {
        self.ask_job_plain(job, message).await?
    }

    async fn ask_job_plain<T: Send + 'static>(
        &self,
        job: &str,
        message: impl FnOnce(RpcReplyPort<T>) -> CoordinatorMsg,
    ) -> Result<T, CommandError> {
        let job = job.to_string();
        let routed = |reply| RouterMsg::Route {
            job,
            message: message(reply),
        };
        answer(self.router.call(routed, Some(CALL_TIMEOUT)).await)
    }

    /// Asks every shard the same question, all at once.
    async fn ask_all<T: Send + 'static>(
        &self,
        message: impl Fn(RpcReplyPort<T>) -> CoordinatorMsg,
    ) -> Result<Vec<T>, CommandError> {
        let shards: Vec<ActorRef<CoordinatorMsg>> = answer(
            self.router
                .call(|reply| RouterMsg::Shards { reply }, Some(CALL_TIMEOUT))
                .await,
        )?;
        let asked = fanout::ask_each(&shards, message);
        let answers = asked.answers(CALL_TIMEOUT).await;
        answers
            .into_iter()
            .map(|asked| answer(Ok::<_, Infallible>(asked)))
            .collect()
    }
}

/// The field that brought `upstream` into the job's dependencies.
fn cycle_field(spec: &JobSpec, upstream: &str) -> &'static str {
    if spec.parents().iter().any(|p| p == upstream) {
        "parents"
    } else if spec
        .trigger_pattern()
        .is_some_and(|p| p.contains(&format!(":{upstream}@")))
    {
        "triggeredBy"
    } else {
        "dependsOn"
    }
}

/// `child` with `deleted` taken out of its parents and replaced by `deleted`'s own trigger:
/// its parents (deduplicated), or its schedule when the child is left with no parent.
fn rewired(mut child: JobSpec, deleted: &JobSpec) -> JobSpec {
    let mut parents: Vec<String> = child
        .parents()
        .iter()
        .filter(|p| p.as_str() != deleted.name)
        .cloned()
        .collect();
    for parent in deleted.parents() {
        if !parents.contains(parent) && parent != &child.name {
            parents.push(parent.clone());
        }
    }
    child.trigger = if parents.is_empty() {
        deleted.trigger.clone()
    } else {
        Trigger::Parents(parents)
    };
    child
}

fn cycle_path(
    job: &str,
    last: &str,
    came_from: &std::collections::HashMap<String, String>,
) -> Vec<String> {
    let mut path = vec![job.to_string()];
    let mut chain = vec![last.to_string()];
    let mut at = last;
    while let Some(previous) = came_from.get(at).filter(|p| p.as_str() != job) {
        chain.push(previous.clone());
        at = previous;
    }
    chain.reverse();
    path.extend(chain);
    path.push(job.to_string());
    path
}

fn answer<T, E: std::fmt::Display>(result: Result<CallResult<T>, E>) -> Result<T, CommandError> {
    match result {
        Ok(CallResult::Success(value)) => Ok(value),
        Ok(CallResult::Timeout) => Err(CommandError::Unavailable(
            "the shard did not answer in time".into(),
        )),
        Ok(CallResult::SenderError) | Err(_) => Err(CommandError::Unavailable(
            "the shard is restarting; retry shortly".into(),
        )),
    }
}
