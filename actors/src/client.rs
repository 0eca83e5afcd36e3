//! The scheduler as the HTTP API and the CLI see it: one handle with an async method per
//! operation. Questions that span shards (does a parent exist, would a new edge close a
//! cycle, which jobs depend on this one) are answered here by asking the owning shards, so
//! the router stays a forwarder.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt;
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

mod backfill;
mod job_stream;
pub use job_stream::JobStream;

/// How long an API call waits for a shard. A durable write takes milliseconds; this bounds
/// a call that reached a shard just as it failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct SchedulerClient {
    router: ActorRef<RouterMsg>,
    bus: ActorRef<BusMsg>,
    notifier: Option<ActorRef<NotifierMsg>>,
    /// Targets one backfill may have, at most.
    backfill_max_targets: u64,
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
            backfill_max_targets: crate::backfill::DEFAULT_MAX_TARGETS,
        }
    }

    /// Sets how many targets one backfill may have (`[scheduler] backfill_max_targets`).
    pub fn with_backfill_max_targets(mut self, max_targets: u64) -> Self {
        self.backfill_max_targets = max_targets.max(1);
        self
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
        answer(
            Asked::to("listing notifications"),
            Callee::Notifier,
            asked.await,
        )
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
        let sending = Asked::to("sending a test notification");
        answered(sending, answer(sending, Callee::Notifier, asked.await)?)
    }

    /// Hands an event to the bus; answers once it is recorded and applied (or a duplicate).
    pub async fn ingest(
        &self,
        event: ResourceEvent,
        origin: Origin,
    ) -> Result<Ingested, CommandError> {
        let resource = event.resource.clone();
        let ingesting = Asked::about("ingesting an event of resource", &resource);
        let asked = self.bus.call(
            |reply| BusMsg::Ingest {
                event,
                origin,
                reply,
            },
            Some(CALL_TIMEOUT),
        );
        answered(ingesting, answer(ingesting, Callee::Bus, asked.await)?)
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
        let looking_up = Asked::about("looking up resource", resource);
        let record = answered(looking_up, answer(looking_up, Callee::Bus, asked.await)?)?;
        let answers = self
            .ask_all(looking_up, |reply| CoordinatorMsg::Lineage {
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
        self.ask_job(Asked::about("saving job", &job), &job, |reply| {
            CoordinatorMsg::PutJob {
                spec,
                received_ms,
                reply,
            }
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
        let deleting = Asked::about("deleting job", name);
        self.ask_job(deleting, name, |reply| CoordinatorMsg::DeleteJob {
            name: name.to_string(),
            reply,
        })
        .await
    }

    pub async fn job(&self, name: &str) -> Result<JobView, CommandError> {
        self.ask_job(Asked::about("reading job", name), name, |reply| {
            CoordinatorMsg::GetJob {
                name: name.to_string(),
                reply,
            }
        })
        .await
    }

    pub async fn run_now(&self, name: &str) -> Result<String, CommandError> {
        let starting = Asked::about("starting a run of job", name);
        self.ask_job(starting, name, |reply| CoordinatorMsg::RunNow {
            name: name.to_string(),
            reply,
        })
        .await
    }

    /// Counts a success of the job now and announces it to its children, on every shard.
    pub async fn mark_success(&self, name: &str) -> Result<(), CommandError> {
        let marking = Asked::about("marking a success of job", name);
        self.ask_job(marking, name, |reply| CoordinatorMsg::MarkSuccess {
            name: name.to_string(),
            reply,
        })
        .await
    }

    pub async fn kill_tasks(&self, name: &str) -> Result<usize, CommandError> {
        let killing = Asked::about("killing the tasks of job", name);
        self.ask_job(killing, name, |reply| CoordinatorMsg::KillTasks {
            name: name.to_string(),
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
        let id = dron_model::ids::task_id(&task.job, task.target_ms, task.attempt);
        let completing = Asked::about("completing task", &id);
        self.ask_job(completing, &job, |reply| CoordinatorMsg::CompleteAsync {
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
        let reading = Asked::about("reading the history of job", name);
        self.ask_job(reading, name, |reply| CoordinatorMsg::History {
            name: name.to_string(),
            limit,
            reply,
        })
        .await
    }

    /// Every job, sorted by name.
    pub async fn jobs(&self) -> Result<Vec<JobRecord>, CommandError> {
        let mut jobs: Vec<JobRecord> = self
            .ask_all(Asked::to("listing jobs"), |reply| {
                CoordinatorMsg::ListJobs { reply }
            })
            .await?
            .concat();
        jobs.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(jobs)
    }

    /// Every job in name order, read from the shards `batch` at a time: for lists too long to
    /// build in memory at once (see [`JobStream`]).
    pub async fn job_stream(&self, batch: usize) -> Result<JobStream, CommandError> {
        let listing = Asked::to("listing jobs");
        let shards = self.shards(listing).await?;
        let names = fanout::ask_each(&shards, |reply| CoordinatorMsg::JobNames { reply })
            .answers(CALL_TIMEOUT)
            .await
            .into_iter()
            .map(|each| answer(listing, Callee::Shards, Ok::<_, Infallible>(each)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(JobStream::new(shards, names, batch))
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
            .ask_all(Asked::to("querying jobs"), |reply| {
                CoordinatorMsg::QueryJobs {
                    query: query.clone(),
                    reply,
                }
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
                .ask_all(Asked::about("walking the graph around job", job), |reply| {
                    CoordinatorMsg::Neighbours {
                        describe: describe.clone(),
                        children_of: children_of.clone(),
                        reply,
                    }
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
            .ask_all(Asked::to("summarising jobs"), |reply| {
                CoordinatorMsg::Summaries { reply }
            })
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
        let reading = Asked::to("reading run durations");
        let answers = self
            .ask_all(reading, |reply| CoordinatorMsg::RunDurations {
                limit,
                reply,
            })
            .await?;
        let mut durations = Vec::new();
        for answer in answers {
            durations.extend(answered(reading, answer)?);
        }
        durations.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(durations)
    }

    pub async fn shard_stats(&self) -> Result<Vec<ShardStats>, CommandError> {
        let reading = Asked::to("reading shard statistics");
        self.ask_all(reading, |reply| CoordinatorMsg::Stats { reply })
            .await
    }

    pub async fn shard_count(&self) -> Result<u32, CommandError> {
        let asked = self
            .router
            .call(|reply| RouterMsg::ShardCount { reply }, Some(CALL_TIMEOUT));
        answer(
            Asked::to("reading the shard count"),
            Callee::Router,
            asked.await,
        )
    }

    pub async fn reshard(&self, count: u32) -> Result<u32, CommandError> {
        // Moving a million jobs takes a while: no timeout shorter than the move itself.
        let asked = self
            .router
            .call(|reply| RouterMsg::Reshard { count, reply }, None);
        let resharding = Asked::to("resharding");
        answered(resharding, answer(resharding, Callee::Router, asked.await)?)
    }

    pub async fn inject_panic(&self, shard: u32) -> Result<(), CommandError> {
        let asked = self.router.call(
            |reply| RouterMsg::InjectPanic { shard, reply },
            Some(CALL_TIMEOUT),
        );
        let injecting = Asked::to("injecting a panic");
        answered(injecting, answer(injecting, Callee::Router, asked.await)?)
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
            let names = vec![name.clone()];
            let reading = Asked::about("reading the parents of job", &name);
            let reply = self
                .ask_job_plain(reading, &name, |reply| CoordinatorMsg::ParentsOf {
                    names,
                    reply,
                })
                .await?;
            found.extend(reply);
        }
        Ok(found)
    }

    async fn children_of(&self, name: &str) -> Result<BTreeSet<String>, CommandError> {
        let finding = Asked::about("finding the children of job", name);
        let answers = self
            .ask_all(finding, |reply| CoordinatorMsg::ChildrenOf {
                name: name.to_string(),
                reply,
            })
            .await?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// Sends a message to the shard owning `job` and waits for its answer.
    async fn ask_job<T: Send + 'static>(
        &self,
        asked: Asked<'_>,
        job: &str,
        message: impl FnOnce(Reply<T>) -> CoordinatorMsg,
    ) -> Result<T, CommandError> {
        answered(asked, self.ask_job_plain(asked, job, message).await?)
    }

    async fn ask_job_plain<T: Send + 'static>(
        &self,
        asked: Asked<'_>,
        job: &str,
        message: impl FnOnce(RpcReplyPort<T>) -> CoordinatorMsg,
    ) -> Result<T, CommandError> {
        let job = job.to_string();
        let routed = |reply| RouterMsg::Route {
            job,
            message: message(reply),
        };
        let routing = self.router.call(routed, Some(CALL_TIMEOUT)).await;
        answer(asked, Callee::ItsShard, routing)
    }

    /// Every shard's coordinator, from the router.
    async fn shards(
        &self,
        asked: Asked<'_>,
    ) -> Result<Vec<ActorRef<CoordinatorMsg>>, CommandError> {
        let asking = self
            .router
            .call(|reply| RouterMsg::Shards { reply }, Some(CALL_TIMEOUT));
        answer(asked, Callee::Router, asking.await)
    }

    /// Asks every shard the same question, all at once.
    async fn ask_all<T: Send + 'static>(
        &self,
        asked: Asked<'_>,
        message: impl Fn(RpcReplyPort<T>) -> CoordinatorMsg,
    ) -> Result<Vec<T>, CommandError> {
        let shards = self.shards(asked).await?;
        let answers = fanout::ask_each(&shards, message)
            .answers(CALL_TIMEOUT)
            .await;
        answers
            .into_iter()
            .map(|each| answer(asked, Callee::Shards, Ok::<_, Infallible>(each)))
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

/// What a call asked, e.g. `"reading job"` about `"a"`: the start of the message of a call that
/// failed, formatted only then.
#[derive(Clone, Copy)]
struct Asked<'a> {
    doing: &'static str,
    about: Option<&'a str>,
}

impl<'a> Asked<'a> {
    fn to(doing: &'static str) -> Self {
        Asked { doing, about: None }
    }

    fn about(doing: &'static str, subject: &'a str) -> Self {
        let about = Some(subject);
        Asked { doing, about }
    }
}

impl fmt::Display for Asked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.about {
            Some(subject) => write!(f, "{} '{subject}'", self.doing),
            None => f.write_str(self.doing),
        }
    }
}

/// Whom a call was for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Callee {
    /// The shard owning the job asked about, through the router.
    ItsShard,
    /// Every shard, asked at once.
    Shards,
    Router,
    Bus,
    Notifier,
}

impl Callee {
    fn name(self) -> &'static str {
        match self {
            Callee::ItsShard => "its shard",
            Callee::Shards => "a shard",
            Callee::Router => "the router",
            Callee::Bus => "the event bus",
            Callee::Notifier => "the notifier",
        }
    }

    /// What it means that the callee dropped the call's reply port.
    fn stopped(self) -> &'static str {
        match self {
            // A coordinator that fails is rebuilt by the router (see docs/operations.md).
            Callee::ItsShard | Callee::Shards => "is restarting (it stopped before answering)",
            Callee::Router | Callee::Bus | Callee::Notifier => "stopped before answering",
        }
    }
}

/// A call's answer, or an error saying what was asked and what happened: the callee did not
/// answer in time, stopped, or could not be reached. All are 503s: retrying may work.
fn answer<T, E: fmt::Display>(
    asked: Asked<'_>,
    callee: Callee,
    result: Result<CallResult<T>, E>,
) -> Result<T, CommandError> {
    let happened = match result {
        Ok(CallResult::Success(value)) => return Ok(value),
        Ok(CallResult::Timeout) => format!("{} did not answer in time", callee.name()),
        Ok(CallResult::SenderError) => format!("{} {}", callee.name(), callee.stopped()),
        // Shards are reached through the router: it is the one not running.
        Err(error) => match callee {
            Callee::ItsShard | Callee::Shards => format!("the router is not running ({error})"),
            _ => format!("{} is not running ({error})", callee.name()),
        },
    };
    Err(CommandError::Unavailable(format!(
        "{asked}: {happened}; retry shortly"
    )))
}

/// A callee's own answer, its 503s prefixed with what was asked (a storage failure names its
/// cause, but not which request met it). Other errors are the caller's and say so already.
fn answered<T>(asked: Asked<'_>, answer: Result<T, CommandError>) -> Result<T, CommandError> {
    answer.map_err(|error| match error {
        CommandError::Unavailable(why) => CommandError::Unavailable(format!("{asked}: {why}")),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use std::marker::PhantomData;

    use ractor::Actor;

    use super::*;
    use crate::testkit::Null;

    /// Spawns an actor that drops every message, and so every call's reply port.
    async fn dropping<M: ractor::Message>() -> ActorRef<M> {
        let (actor, _) = Actor::spawn(None, Null(PhantomData), ()).await.unwrap();
        actor
    }

    fn unavailable<T: fmt::Debug>(result: Result<T, CommandError>) -> String {
        match result {
            Err(CommandError::Unavailable(message)) => message,
            other => panic!("expected a 503, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_failed_call_names_what_was_asked_and_which_actor_failed_how() {
        let client = SchedulerClient::new(dropping().await, dropping().await)
            .with_notifier(dropping().await);
        assert_eq!(
            unavailable(client.job("a").await),
            "reading job 'a': its shard is restarting (it stopped before answering); retry shortly"
        );
        let event = ResourceEvent::ready("hive:t", None);
        assert_eq!(
            unavailable(client.ingest(event, Origin::Api).await),
            "ingesting an event of resource 'hive:t': the event bus stopped before answering; \
             retry shortly"
        );
        assert_eq!(
            unavailable(client.notifications(5).await),
            "listing notifications: the notifier stopped before answering; retry shortly"
        );
        client.router.stop(None);
        while client.router.get_status() != ractor::ActorStatus::Stopped {
            tokio::task::yield_now().await;
        }
        let message = unavailable(client.jobs().await);
        assert!(
            message.starts_with("listing jobs: the router is not running ("),
            "{message}"
        );
    }

    #[test]
    fn a_timeout_says_so_and_the_callees_own_503s_say_what_was_asked() {
        let asked = Asked::about("saving job", "a");
        let timeout: Result<CallResult<()>, Infallible> = Ok(CallResult::Timeout);
        assert_eq!(
            unavailable(answer(asked, Callee::ItsShard, timeout)),
            "saving job 'a': its shard did not answer in time; retry shortly"
        );
        let storage = CommandError::Unavailable("storage failed reading history: I/O".into());
        assert_eq!(
            unavailable(answered::<()>(asked, Err(storage))),
            "saving job 'a': storage failed reading history: I/O"
        );
        // The caller's own mistakes keep their status and message.
        let missing = answered::<()>(asked, Err(CommandError::JobNotFound("a".into())));
        assert!(matches!(missing, Err(CommandError::JobNotFound(name)) if name == "a"));
    }
}
