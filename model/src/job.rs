//! Jobs: the Chronos job JSON as clients send it, the validated definition dron stores, and
//! the counters and scheduling state kept beside it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Invalid;
use crate::name::{truncate, validate_job_name};
use crate::resource::{Granularity, MAX_EXPANSION, Template, validate_resource_id};
use crate::schedule::Schedule;

/// Chronos's default epsilon: a target may start up to a minute late.
pub const DEFAULT_EPSILON_MS: i64 = 60_000;
/// Chronos's default number of retries after a failed attempt.
pub const DEFAULT_RETRIES: u32 = 2;
/// How long an instance of a job without a schedule period waits for its resources.
pub const DEFAULT_WAIT_TIMEOUT_MS: i64 = 24 * 3_600_000;
/// The job fields dron acts on: what a validation error's `field` can name.
pub const JOB_FIELDS: [&str; 25] = [
    "name",
    "command",
    "shell",
    "arguments",
    "schedule",
    "scheduleTimeZone",
    "parents",
    "epsilon",
    "retries",
    "async",
    "disabled",
    "concurrent",
    "owner",
    "environmentVariables",
    "maxCompletionTime",
    "dependsOn",
    "waitTimeout",
    "triggeredBy",
    "builtinSleepMs",
    "notifyWebhooks",
    "cpus",
    "mem",
    "disk",
    "constraints",
    "container",
];
/// Fields that are read-only counters in answers; ignored when a client sends them back.
const OUTPUT_ONLY_FIELDS: [&str; 4] = ["successCount", "errorCount", "lastSuccess", "lastError"];

/// A job as a Chronos client submits it (`POST /scheduler/iso8601` or `/dependency`).
/// Fields dron does not act on are kept in `extra` and returned unchanged.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRequest {
    pub name: String,
    #[serde(default)]
    pub command: String,
    #[serde(default = "yes")]
    pub shell: bool,
    #[serde(default)]
    pub arguments: Vec<String>,
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub schedule_time_zone: Option<String>,
    #[serde(default)]
    pub parents: Option<Vec<String>>,
    #[serde(default)]
    pub epsilon: Option<String>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default, rename = "async")]
    pub is_async: bool,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub concurrent: bool,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub environment_variables: Vec<EnvironmentVariable>,
    /// Chronos 3: the longest a run may take, in milliseconds; dron kills it after that.
    /// 0 means no limit, as in Chronos (whose serializer writes 0 on every job without one).
    #[serde(default)]
    pub max_completion_time: Option<u64>,
    /// Resource templates each instance waits for (Dron's dependency language).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// How long an instance may wait for its resources (ISO 8601 duration).
    #[serde(default)]
    pub wait_timeout: Option<String>,
    /// A resource pattern (`*` wildcards): each matching event runs the job.
    #[serde(default)]
    pub triggered_by: Option<String>,
    /// Instead of a command, a built-in task the agent completes after this many
    /// milliseconds without starting a process (load tests measure the scheduler with it).
    #[serde(default)]
    pub builtin_sleep_ms: Option<u64>,
    /// Webhook URLs told of this job's failures (beside the server's own webhooks).
    #[serde(default)]
    pub notify_webhooks: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn yes() -> bool {
    true
}

/// A job's environment variable. A secret one (`"secret": true`) is given to the job's runs
/// but never shown: answers carry [`SECRET_PLACEHOLDER`] in place of its value, and sending
/// that placeholder back (or no value) keeps the value the server holds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentVariable {
    pub name: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub secret: bool,
}

/// What answers show in place of a secret variable's value.
pub const SECRET_PLACEHOLDER: &str = "<secret>";

impl EnvironmentVariable {
    /// A secret sent without a value of its own: the job keeps the value it has.
    pub fn keeps_stored_value(&self) -> bool {
        self.secret && (self.value.is_empty() || self.value == SECRET_PLACEHOLDER)
    }

    /// The variable as answers show it: a secret's value replaced by the placeholder.
    pub fn shown(&self) -> Value {
        match self.secret {
            true => serde_json::json!({
                "name": self.name, "value": SECRET_PLACEHOLDER, "secret": true
            }),
            false => serde_json::json!({"name": self.name, "value": self.value}),
        }
    }
}

/// Debug output reaches logs: a secret's value never does.
impl std::fmt::Debug for EnvironmentVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = match self.secret {
            true => SECRET_PLACEHOLDER,
            false => self.value.as_str(),
        };
        f.debug_struct("EnvironmentVariable")
            .field("name", &self.name)
            .field("value", &value)
            .field("secret", &self.secret)
            .finish()
    }
}

/// Which endpoint a job arrived on: Chronos keeps scheduled and dependent jobs apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Scheduled,
    Dependent,
}

/// What makes a job run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// A schedule in its canonical text (start made explicit) and its IANA time zone.
    Schedule { schedule: String, time_zone: String },
    /// Chronos parents: runs once every parent has succeeded since this job's last run.
    Parents(Vec<String>),
    /// `triggeredBy`: each event for a resource matching the pattern (`*` wildcards) makes an
    /// instance whose logical time is the event's.
    Resource { pattern: String },
}

/// A validated job definition: what dron stores and acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub command: String,
    pub shell: bool,
    pub arguments: Vec<String>,
    pub trigger: Trigger,
    pub epsilon_ms: i64,
    pub retries: u32,
    pub is_async: bool,
    pub disabled: bool,
    pub concurrent: bool,
    pub owner: String,
    pub environment: Vec<EnvironmentVariable>,
    pub timeout_ms: Option<u64>,
    /// `builtinSleepMs`: run the built-in sleep task instead of `command`.
    pub builtin_sleep_ms: Option<u64>,
    /// `dependsOn` templates, validated.
    pub depends_on: Vec<String>,
    /// `waitTimeout`; None: the schedule's period, or [`DEFAULT_WAIT_TIMEOUT_MS`].
    pub wait_timeout_ms: Option<i64>,
    /// The IANA zone templates expand in: the schedule's, or `scheduleTimeZone` for jobs
    /// without a schedule (UTC by default).
    pub time_zone: String,
    /// The Chronos fields dron stores without acting on them, as a JSON object.
    pub extra_json: String,
    /// `notifyWebhooks`: URLs told of this job's failures, validated.
    pub notify_webhooks: Vec<String>,
}

/// What dron keeps about a job beside its definition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    pub success_count: u64,
    pub error_count: u64,
    pub last_success_ms: Option<i64>,
    pub last_error_ms: Option<i64>,
    /// The next target not yet turned into an instance (scheduled jobs only).
    pub next_target_ms: Option<i64>,
    /// Parents that have succeeded since this job last ran (dependent jobs only). Persisted:
    /// Chronos kept this in memory and forgot it on fail-over.
    pub parents_succeeded: BTreeSet<String>,
    /// The logical time of the newest successful run (`{LAST_RUN}` in templates).
    pub last_success_target_ms: Option<i64>,
    /// Event times that already triggered an instance (`triggeredBy` jobs; the newest few
    /// hundred), so that a replayed event runs nothing twice.
    pub triggered_targets: BTreeSet<i64>,
    /// Per parent, the times of its newest successes counted (the times of the
    /// `job:PARENT@TIME` announcements that told of them; dependent jobs only), so that an
    /// announcement applied twice counts once. Kept across this job's own runs.
    pub parent_success_times: BTreeMap<String, BTreeSet<i64>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub spec: JobSpec,
    pub state: JobState,
}

impl JobRequest {
    /// Validates the request into a job definition. `now` resolves an empty schedule start.
    pub fn validate(self, kind: JobKind, now: DateTime<Utc>) -> Result<JobSpec, Invalid> {
        validate_job_name("name", &self.name)?;
        let trigger = self.trigger(kind, now)?;
        if self.command.trim().is_empty() && self.builtin_sleep_ms.is_none() {
            return Err(Invalid::new(
                "command",
                "command must not be empty (or give builtinSleepMs for the built-in task)",
            ));
        }
        let epsilon_ms = match &self.epsilon {
            None => DEFAULT_EPSILON_MS,
            Some(text) => parse_duration_ms(text).map_err(|m| Invalid::new("epsilon", m))?,
        };
        validate_environment(&self.environment_variables)?;
        validate_templates(&self.depends_on)?;
        validate_webhooks(&self.notify_webhooks)?;
        // Kept with the pass-through fields, where Chronos clients send them; checked here.
        crate::demand::TaskDemand::from_fields(&self.extra)?;
        let wait_timeout_ms = match &self.wait_timeout {
            None => None,
            Some(text) => {
                Some(parse_duration_ms(text).map_err(|m| Invalid::new("waitTimeout", m))?)
            }
        };
        let time_zone = match &trigger {
            Trigger::Schedule { time_zone, .. } => time_zone.clone(),
            _ => parse_zone(self.schedule_time_zone.as_deref())?,
        };
        let owner = self.owner.unwrap_or_default();
        Ok(JobSpec {
            name: self.name,
            command: self.command,
            shell: self.shell,
            arguments: self.arguments,
            trigger,
            epsilon_ms,
            retries: self.retries.unwrap_or(DEFAULT_RETRIES),
            is_async: self.is_async,
            disabled: self.disabled,
            concurrent: self.concurrent,
            owner,
            environment: self.environment_variables,
            // Chronos writes 0 on every job that has no limit: 0 is "none", as there.
            timeout_ms: self.max_completion_time.filter(|ms| *ms > 0),
            builtin_sleep_ms: self.builtin_sleep_ms,
            depends_on: self.depends_on,
            wait_timeout_ms,
            time_zone,
            extra_json: extra_fields_json(self.extra),
            notify_webhooks: self.notify_webhooks,
        })
    }

    fn trigger(&self, kind: JobKind, now: DateTime<Utc>) -> Result<Trigger, Invalid> {
        if let Some(pattern) = &self.triggered_by {
            return self.resource_trigger(pattern);
        }
        match kind {
            JobKind::Scheduled => {
                let text = self.schedule.as_deref().unwrap_or_default();
                if text.trim().is_empty() {
                    return Err(Invalid::new(
                        "schedule",
                        "a scheduled job needs a schedule, e.g. \"R/2026-11-23T05:00:00Z/PT1H\"",
                    ));
                }
                let zone = self.schedule_time_zone.as_deref();
                let schedule = Schedule::parse(text, zone, now)
                    .map_err(|e| Invalid::new(e.field(), e.to_string()))?;
                Ok(Trigger::Schedule {
                    schedule: schedule.canonical(),
                    time_zone: schedule.time_zone().name().to_string(),
                })
            }
            JobKind::Dependent => self.parents_trigger(),
        }
    }

    /// `triggeredBy` replaces a schedule or parents, on either Chronos endpoint.
    fn resource_trigger(&self, pattern: &str) -> Result<Trigger, Invalid> {
        let has_schedule = self
            .schedule
            .as_deref()
            .is_some_and(|s| !s.trim().is_empty());
        let has_parents = self.parents.as_ref().is_some_and(|p| !p.is_empty());
        if has_schedule || has_parents {
            return Err(Invalid::new(
                "triggeredBy",
                "a job runs on a schedule, after parents, or on triggeredBy events: give only one",
            ));
        }
        validate_resource_id("triggeredBy", pattern)?;
        Ok(Trigger::Resource {
            pattern: pattern.to_string(),
        })
    }

    fn parents_trigger(&self) -> Result<Trigger, Invalid> {
        let parents = self.parents.clone().unwrap_or_default();
        if parents.is_empty() {
            return Err(Invalid::new(
                "parents",
                "a dependent job needs at least one parent",
            ));
        }
        for parent in &parents {
            validate_job_name("parents", parent)?;
            if parent == &self.name {
                return Err(Invalid::new(
                    "parents",
                    format!("job '{parent}' cannot be its own parent"),
                ));
            }
        }
        let unique: BTreeSet<&String> = parents.iter().collect();
        if unique.len() != parents.len() {
            return Err(Invalid::new("parents", "parents lists a job twice"));
        }
        Ok(Trigger::Parents(parents))
    }
}

fn validate_templates(templates: &[String]) -> Result<(), Invalid> {
    let mut total = 0usize;
    for template in templates {
        let parsed = Template::parse("dependsOn", template)?;
        total += parsed.expansion_count();
    }
    if total > MAX_EXPANSION {
        return Err(Invalid::new(
            "dependsOn",
            format!("dependsOn expands to more than {MAX_EXPANSION} resources per instance"),
        ));
    }
    Ok(())
}

/// The most webhook URLs one job may list.
pub const MAX_JOB_WEBHOOKS: usize = 10;

fn validate_webhooks(urls: &[String]) -> Result<(), Invalid> {
    if urls.len() > MAX_JOB_WEBHOOKS {
        return Err(Invalid::new(
            "notifyWebhooks",
            format!("notifyWebhooks lists more than {MAX_JOB_WEBHOOKS} URLs"),
        ));
    }
    for url in urls {
        crate::notice::validate_webhook_url("notifyWebhooks", url)?;
    }
    Ok(())
}

fn parse_zone(zone: Option<&str>) -> Result<String, Invalid> {
    let zone = zone
        .map(str::trim)
        .filter(|z| !z.is_empty())
        .unwrap_or("UTC");
    zone.parse::<chrono_tz::Tz>()
        .map(|tz| tz.name().to_string())
        .map_err(|_| {
            Invalid::new(
                "scheduleTimeZone",
                format!("'{}' is not an IANA time zone", truncate(zone)),
            )
        })
}

fn validate_environment(variables: &[EnvironmentVariable]) -> Result<(), Invalid> {
    for variable in variables {
        let name_ok = !variable.name.is_empty()
            && !variable.name.contains(['=', '\0'])
            && !variable.value.contains('\0');
        if !name_ok {
            let shown = truncate(&variable.name);
            return Err(Invalid::new(
                "environmentVariables",
                format!("environment variable '{shown}' is not a valid name=value pair"),
            ));
        }
        // A secret sent without its value is found again by name: one of each.
        let same_name = variables.iter().filter(|v| v.name == variable.name);
        if variable.secret && same_name.count() > 1 {
            let shown = truncate(&variable.name);
            return Err(Invalid::new(
                "environmentVariables",
                format!("secret environment variable '{shown}' is listed twice"),
            ));
        }
    }
    Ok(())
}

fn extra_fields_json(mut extra: Map<String, Value>) -> String {
    for field in OUTPUT_ONLY_FIELDS {
        extra.remove(field);
    }
    Value::Object(extra).to_string()
}

impl JobSpec {
    /// Whether a secret variable was sent without its value (to keep the stored one).
    pub fn keeps_secrets(&self) -> bool {
        self.environment
            .iter()
            .any(EnvironmentVariable::keeps_stored_value)
    }

    /// Gives the secrets sent without a value the values of the same secrets in `stored`, the
    /// job as the server holds it, so that a job read, changed and sent back keeps its
    /// secrets. A secret with no stored value is an error, never an empty variable: a job
    /// exported from one server and imported into another must be given its secrets again.
    pub fn keep_secrets(&mut self, stored: Option<&JobSpec>) -> Result<(), Invalid> {
        for variable in &mut self.environment {
            if !variable.keeps_stored_value() {
                continue;
            }
            let kept = stored.into_iter().flat_map(|spec| &spec.environment);
            let kept = kept
                .filter(|old| old.secret && old.name == variable.name)
                .find(|old| !old.keeps_stored_value());
            match kept {
                Some(old) => variable.value = old.value.clone(),
                None => {
                    let shown = truncate(&variable.name);
                    return Err(Invalid::new(
                        "environmentVariables",
                        format!(
                            "secret environment variable '{shown}' has no value: this server \
                             holds none to keep, send its value"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn parents(&self) -> &[String] {
        match &self.trigger {
            Trigger::Parents(parents) => parents,
            _ => &[],
        }
    }

    /// The `triggeredBy` pattern, for event-triggered jobs.
    pub fn trigger_pattern(&self) -> Option<&str> {
        match &self.trigger {
            Trigger::Resource { pattern } => Some(pattern),
            _ => None,
        }
    }

    /// The parsed `dependsOn` templates (validated on submission).
    pub fn templates(&self) -> Vec<Template> {
        let parsed = self.depends_on.iter();
        parsed
            .filter_map(|t| Template::parse("dependsOn", t).ok())
            .collect()
    }

    pub fn zone(&self) -> chrono_tz::Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::UTC)
    }

    /// How finely this job's logical times are written in resources.
    pub fn granularity(&self) -> Granularity {
        Granularity::of_period(self.schedule().and_then(|s| s.nominal_period()))
    }

    /// How long an instance may wait for its resources before it expires.
    pub fn wait_timeout_ms(&self) -> i64 {
        let period = self.schedule().and_then(|s| s.nominal_period());
        let period_ms = period.map(|p| p.num_milliseconds()).filter(|ms| *ms > 0);
        self.wait_timeout_ms
            .or(period_ms)
            .unwrap_or(DEFAULT_WAIT_TIMEOUT_MS)
    }

    /// Jobs this one waits on for the same logical time: its parents, the jobs named by its
    /// `job:` templates (see [`Template::upstream_job`]) and by a literal `job:NAME@` trigger.
    /// A cycle through these edges could never run.
    pub fn upstream_jobs(&self) -> Vec<String> {
        let mut upstream: Vec<String> = self.parents().to_vec();
        let templates = self.templates();
        let from_templates = templates.iter().filter_map(|t| t.upstream_job());
        let from_trigger = self.trigger_pattern().and_then(|pattern| {
            let (name, _) = pattern
                .strip_prefix(crate::resource::JOB_PREFIX)?
                .split_once('@')?;
            (!name.contains('*') && !name.is_empty()).then_some(name)
        });
        for name in from_templates.chain(from_trigger) {
            if !upstream.iter().any(|u| u == name) {
                upstream.push(name.to_string());
            }
        }
        upstream
    }

    /// The parsed schedule, for scheduled jobs. The stored text was validated on submission,
    /// so a parse failure here means a corrupt record.
    pub fn schedule(&self) -> Option<Schedule> {
        match &self.trigger {
            Trigger::Schedule {
                schedule,
                time_zone,
            } => {
                // The canonical text carries an explicit start, so `now` is not used.
                Schedule::parse(schedule, Some(time_zone), DateTime::UNIX_EPOCH).ok()
            }
            _ => None,
        }
    }
}

impl JobRecord {
    /// The job in Chronos's JSON shape, counters included.
    pub fn to_chronos_json(&self) -> Value {
        let spec = &self.spec;
        let mut json: Map<String, Value> =
            serde_json::from_str(&spec.extra_json).unwrap_or_default();
        let mut set = |key: &str, value: Value| {
            json.insert(key.to_string(), value);
        };
        set("name", spec.name.clone().into());
        set("command", spec.command.clone().into());
        set("shell", spec.shell.into());
        set("arguments", spec.arguments.clone().into());
        match &spec.trigger {
            Trigger::Schedule {
                schedule,
                time_zone,
            } => {
                set("schedule", schedule.clone().into());
                set("scheduleTimeZone", time_zone.clone().into());
                set("parents", Value::Array(vec![]));
            }
            Trigger::Parents(parents) => set("parents", parents.clone().into()),
            Trigger::Resource { pattern } => {
                set("triggeredBy", pattern.clone().into());
                set("parents", Value::Array(vec![]));
            }
        }
        if !matches!(spec.trigger, Trigger::Schedule { .. }) && spec.time_zone != "UTC" {
            set("scheduleTimeZone", spec.time_zone.clone().into());
        }
        if !spec.depends_on.is_empty() {
            set("dependsOn", spec.depends_on.clone().into());
        }
        if let Some(wait) = spec.wait_timeout_ms {
            set("waitTimeout", format_duration_ms(wait).into());
        }
        if let Some(sleep) = spec.builtin_sleep_ms {
            set("builtinSleepMs", sleep.into());
        }
        set("epsilon", format_duration_ms(spec.epsilon_ms).into());
        set("retries", spec.retries.into());
        set("async", spec.is_async.into());
        set("disabled", spec.disabled.into());
        set("concurrent", spec.concurrent.into());
        set("owner", spec.owner.clone().into());
        let environment = spec.environment.iter().map(EnvironmentVariable::shown);
        set("environmentVariables", environment.collect());
        if let Some(timeout) = spec.timeout_ms {
            set("maxCompletionTime", timeout.into());
        }
        if !spec.notify_webhooks.is_empty() {
            set("notifyWebhooks", spec.notify_webhooks.clone().into());
        }
        set("successCount", self.state.success_count.into());
        set("errorCount", self.state.error_count.into());
        set(
            "lastSuccess",
            chronos_time(self.state.last_success_ms).into(),
        );
        set("lastError", chronos_time(self.state.last_error_ms).into());
        Value::Object(json)
    }
}

impl crate::codec::Stored for JobRecord {
    fn decode_older(version: u8, body: &[u8]) -> Result<Self, crate::codec::CodecError> {
        // Version 7 changed instances only.
        if version == 6 {
            return Ok(postcard::from_bytes(body)?);
        }
        if version == 5 {
            let old: legacy::JobRecordV5 = postcard::from_bytes(body)?;
            return Ok(old.into());
        }
        // Versions 3 and 4 changed instances only: their jobs differ from version 5's only
        // by the state's `parent_success_times`.
        if version >= 3 {
            let old: legacy::JobRecordV4 = postcard::from_bytes(body)?;
            return Ok(old.into());
        }
        let old: legacy::JobRecordV2 = postcard::from_bytes(body)?;
        Ok(old.into())
    }
}

/// Job records as format versions 2 (before `notifyWebhooks`), 3 to 4 (before
/// `parent_success_times`) and 5 (before secret variables) wrote them.
mod legacy {
    use super::*;

    /// An environment variable before `secret`: none was.
    #[derive(Serialize, Deserialize)]
    pub struct PlainVariable {
        pub name: String,
        pub value: String,
    }

    fn plain(variables: Vec<PlainVariable>) -> Vec<EnvironmentVariable> {
        let variables = variables.into_iter();
        variables
            .map(|v| EnvironmentVariable {
                name: v.name,
                value: v.value,
                secret: false,
            })
            .collect()
    }

    /// A job's definition as versions 3 to 5 wrote it.
    #[derive(Serialize, Deserialize)]
    pub struct JobSpecV5 {
        pub name: String,
        pub command: String,
        pub shell: bool,
        pub arguments: Vec<String>,
        pub trigger: Trigger,
        pub epsilon_ms: i64,
        pub retries: u32,
        pub is_async: bool,
        pub disabled: bool,
        pub concurrent: bool,
        pub owner: String,
        pub environment: Vec<PlainVariable>,
        pub timeout_ms: Option<u64>,
        pub builtin_sleep_ms: Option<u64>,
        pub depends_on: Vec<String>,
        pub wait_timeout_ms: Option<i64>,
        pub time_zone: String,
        pub extra_json: String,
        pub notify_webhooks: Vec<String>,
    }

    impl From<JobSpecV5> for JobSpec {
        fn from(s: JobSpecV5) -> JobSpec {
            JobSpec {
                name: s.name,
                command: s.command,
                shell: s.shell,
                arguments: s.arguments,
                trigger: s.trigger,
                epsilon_ms: s.epsilon_ms,
                retries: s.retries,
                is_async: s.is_async,
                disabled: s.disabled,
                concurrent: s.concurrent,
                owner: s.owner,
                environment: plain(s.environment),
                timeout_ms: s.timeout_ms,
                builtin_sleep_ms: s.builtin_sleep_ms,
                depends_on: s.depends_on,
                wait_timeout_ms: s.wait_timeout_ms,
                time_zone: s.time_zone,
                extra_json: s.extra_json,
                notify_webhooks: s.notify_webhooks,
            }
        }
    }

    #[derive(Deserialize)]
    pub struct JobRecordV5 {
        spec: JobSpecV5,
        state: JobState,
    }

    impl From<JobRecordV5> for JobRecord {
        fn from(old: JobRecordV5) -> JobRecord {
            JobRecord {
                spec: old.spec.into(),
                state: old.state,
            }
        }
    }

    #[derive(Deserialize)]
    pub struct JobRecordV4 {
        spec: JobSpecV5,
        state: JobStateV4,
    }

    #[derive(Serialize, Deserialize)]
    pub struct JobStateV4 {
        pub success_count: u64,
        pub error_count: u64,
        pub last_success_ms: Option<i64>,
        pub last_error_ms: Option<i64>,
        pub next_target_ms: Option<i64>,
        pub parents_succeeded: BTreeSet<String>,
        pub last_success_target_ms: Option<i64>,
        pub triggered_targets: BTreeSet<i64>,
    }

    impl From<JobStateV4> for JobState {
        fn from(old: JobStateV4) -> JobState {
            JobState {
                success_count: old.success_count,
                error_count: old.error_count,
                last_success_ms: old.last_success_ms,
                last_error_ms: old.last_error_ms,
                next_target_ms: old.next_target_ms,
                parents_succeeded: old.parents_succeeded,
                last_success_target_ms: old.last_success_target_ms,
                triggered_targets: old.triggered_targets,
                // Before these were kept, the success of a parent was not announced twice.
                parent_success_times: BTreeMap::new(),
            }
        }
    }

    impl From<JobRecordV4> for JobRecord {
        fn from(old: JobRecordV4) -> JobRecord {
            JobRecord {
                spec: old.spec.into(),
                state: old.state.into(),
            }
        }
    }

    #[derive(Deserialize)]
    pub struct JobRecordV2 {
        spec: JobSpecV2,
        state: JobStateV4,
    }

    #[derive(Deserialize)]
    struct JobSpecV2 {
        name: String,
        command: String,
        shell: bool,
        arguments: Vec<String>,
        trigger: Trigger,
        epsilon_ms: i64,
        retries: u32,
        is_async: bool,
        disabled: bool,
        concurrent: bool,
        owner: String,
        environment: Vec<PlainVariable>,
        timeout_ms: Option<u64>,
        depends_on: Vec<String>,
        wait_timeout_ms: Option<i64>,
        time_zone: String,
        extra_json: String,
    }

    impl From<JobRecordV2> for JobRecord {
        fn from(old: JobRecordV2) -> JobRecord {
            let s = old.spec;
            let spec = JobSpec {
                name: s.name,
                command: s.command,
                shell: s.shell,
                arguments: s.arguments,
                trigger: s.trigger,
                epsilon_ms: s.epsilon_ms,
                retries: s.retries,
                is_async: s.is_async,
                disabled: s.disabled,
                concurrent: s.concurrent,
                owner: s.owner,
                environment: plain(s.environment),
                timeout_ms: s.timeout_ms,
                builtin_sleep_ms: None,
                depends_on: s.depends_on,
                wait_timeout_ms: s.wait_timeout_ms,
                time_zone: s.time_zone,
                extra_json: s.extra_json,
                notify_webhooks: Vec::new(),
            };
            JobRecord {
                spec,
                state: old.state.into(),
            }
        }
    }
}

/// Chronos answers an absent time as "".
fn chronos_time(ms: Option<i64>) -> String {
    ms.and_then(DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// A fixed-length ISO 8601 duration in milliseconds, with the error worded for a job field.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    crate::schedule::parse_fixed_duration_ms(text).map_err(|error| error.to_string())
}

/// Formats milliseconds as an ISO 8601 duration (`PT60S`, `PT0.5S`).
pub fn format_duration_ms(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("PT{}S", ms / 1000)
    } else {
        format!("PT{}S", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: Value) -> JobRequest {
        serde_json::from_value(json).unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2026-11-23T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_ms("PT60S"), Ok(60_000));
        assert_eq!(parse_duration_ms("PT1M30S"), Ok(90_000));
        assert_eq!(parse_duration_ms("P1DT1H"), Ok(90_000_000));
        assert_eq!(parse_duration_ms("PT0.5S"), Ok(500));
        assert_eq!(parse_duration_ms("P1W"), Ok(604_800_000));
        for bad in [
            "", "P", "PT", "60", "PT-1S", "PT0S", "PT1X", "P1M", "PT1S1M", "PTS",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_scheduled_job_validates_with_chronos_defaults() {
        let spec = request(serde_json::json!({
            "name": "export", "command": "echo hi", "schedule": "R/2026-11-23T10:00:00Z/PT1H",
            "cpus": 0.5, "successCount": 9
        }))
        .validate(JobKind::Scheduled, now())
        .unwrap();
        assert_eq!(spec.epsilon_ms, DEFAULT_EPSILON_MS);
        assert_eq!(spec.retries, DEFAULT_RETRIES);
        assert!(spec.shell);
        // Unknown Chronos fields round-trip; output-only counters are dropped.
        assert_eq!(spec.extra_json, r#"{"cpus":0.5}"#);
    }

    #[test]
    fn errors_name_their_field() {
        let cases = [
            (
                serde_json::json!({"name": "a b", "command": "x", "schedule": "R//PT1S"}),
                JobKind::Scheduled,
                "name",
            ),
            (
                serde_json::json!({"name": "a", "command": "", "schedule": "R//PT1S"}),
                JobKind::Scheduled,
                "command",
            ),
            (
                serde_json::json!({"name": "a", "command": "x"}),
                JobKind::Scheduled,
                "schedule",
            ),
            (
                serde_json::json!({"name": "a", "command": "x", "schedule": "R//PT1S", "epsilon": "soon"}),
                JobKind::Scheduled,
                "epsilon",
            ),
            (
                serde_json::json!({"name": "a", "command": "x", "parents": []}),
                JobKind::Dependent,
                "parents",
            ),
            (
                serde_json::json!({"name": "a", "command": "x", "parents": ["a"]}),
                JobKind::Dependent,
                "parents",
            ),
            (
                serde_json::json!({"name": "a", "command": "x", "schedule": "R//PT1S", "scheduleTimeZone": "Mars/Base"}),
                JobKind::Scheduled,
                "scheduleTimeZone",
            ),
            (
                serde_json::json!({"name": "a", "command": "x", "schedule": "R//PT1S", "dependsOn": ["t/{YESTERDAY}"]}),
                JobKind::Scheduled,
                "dependsOn",
            ),
            (
                serde_json::json!({"name": "a", "command": "x", "schedule": "R//PT1S", "waitTimeout": "long"}),
                JobKind::Scheduled,
                "waitTimeout",
            ),
            (
                serde_json::json!({"name": "a", "command": "x", "schedule": "R//PT1S", "triggeredBy": "p:*"}),
                JobKind::Scheduled,
                "triggeredBy",
            ),
            (
                serde_json::json!({"name": "a", "command": "x", "triggeredBy": ""}),
                JobKind::Dependent,
                "triggeredBy",
            ),
        ];
        for (json, kind, field) in cases {
            let err = request(json.clone()).validate(kind, now()).unwrap_err();
            assert_eq!(err.field, field, "{json}: {err}");
        }
    }

    #[test]
    fn resource_fields_validate_and_round_trip() {
        let spec = request(serde_json::json!({
            "name": "rebuild", "command": "true", "triggeredBy": "products:*",
            "dependsOn": ["job:daily@{TODAY}", "hive:t/ds={TODAY-1}"], "waitTimeout": "PT2H",
            "scheduleTimeZone": "Europe/Paris"
        }))
        .validate(JobKind::Dependent, now())
        .unwrap();
        assert_eq!(spec.trigger_pattern(), Some("products:*"));
        assert_eq!(spec.wait_timeout_ms(), 7_200_000);
        assert_eq!(spec.time_zone, "Europe/Paris");
        assert_eq!(spec.upstream_jobs(), ["daily"]);
        let json = JobRecord {
            spec,
            state: JobState::default(),
        }
        .to_chronos_json();
        assert_eq!(json["triggeredBy"], "products:*");
        assert_eq!(json["waitTimeout"], "PT7200S");
        assert_eq!(json["scheduleTimeZone"], "Europe/Paris");
        assert_eq!(json["dependsOn"][1], "hive:t/ds={TODAY-1}");
        // The default wait is the schedule's period.
        let daily = request(serde_json::json!({
            "name": "d", "command": "true", "schedule": "R/2026-11-23T00:00:00Z/P1D",
            "dependsOn": ["x/{TODAY}"]
        }))
        .validate(JobKind::Scheduled, now())
        .unwrap();
        assert_eq!(daily.wait_timeout_ms(), 86_400_000);
        assert_eq!(daily.granularity(), Granularity::Day);
    }

    #[test]
    fn chronos_json_round_trips_extra_fields() {
        let spec = request(serde_json::json!({
            "name": "child", "command": "true", "parents": ["a", "b"], "mem": 256, "description": "d"
        }))
        .validate(JobKind::Dependent, now())
        .unwrap();
        let record = JobRecord {
            spec,
            state: JobState::default(),
        };
        let json = record.to_chronos_json();
        assert_eq!(json["mem"], 256);
        assert_eq!(json["description"], "d");
        assert_eq!(json["parents"], serde_json::json!(["a", "b"]));
        assert_eq!(json["lastSuccess"], "");
        assert_eq!(json["epsilon"], "PT60S");
    }

    #[test]
    fn records_survive_the_codec() {
        let spec =
            request(serde_json::json!({"name": "a", "command": "x", "schedule": "R5//PT2S"}))
                .validate(JobKind::Scheduled, now())
                .unwrap();
        let record = JobRecord {
            spec,
            state: JobState {
                success_count: 3,
                ..Default::default()
            },
        };
        let bytes = crate::codec::encode(&record);
        assert_eq!(crate::codec::decode::<JobRecord>(&bytes).unwrap(), record);
    }

    #[test]
    fn version_4_job_records_still_decode_without_parent_success_times() {
        let spec = request(serde_json::json!({"name": "c", "command": "x", "parents": ["p"]}))
            .validate(JobKind::Dependent, now())
            .unwrap();
        let state = legacy::JobStateV4 {
            success_count: 2,
            error_count: 1,
            last_success_ms: Some(7),
            last_error_ms: None,
            next_target_ms: None,
            parents_succeeded: ["p".to_string()].into(),
            last_success_target_ms: Some(5),
            triggered_targets: BTreeSet::new(),
        };
        for version in [3, 4] {
            let bytes = postcard::to_extend(&(&spec, &state), vec![version]).unwrap();
            let record: JobRecord = crate::codec::decode(&bytes).unwrap();
            assert_eq!(record.spec, spec);
            assert_eq!(record.state.success_count, 2);
            assert_eq!(record.state.parents_succeeded, state.parents_succeeded);
            assert!(record.state.parent_success_times.is_empty());
        }
    }

    #[test]
    fn version_5_job_records_decode_with_plain_variables() {
        let spec = request(serde_json::json!({
            "name": "c", "command": "x", "parents": ["p"],
            "environmentVariables": [{"name": "A", "value": "1"}]
        }))
        .validate(JobKind::Dependent, now())
        .unwrap();
        let v5: legacy::JobSpecV5 =
            serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
        let state = JobState {
            success_count: 3,
            ..Default::default()
        };
        let bytes = postcard::to_extend(&(&v5, &state), vec![5]).unwrap();
        let record: JobRecord = crate::codec::decode(&bytes).unwrap();
        assert_eq!(record.spec, spec);
        assert!(!record.spec.environment[0].secret);
        assert_eq!(record.state.success_count, 3);
    }

    fn with_secret(value: Option<&str>) -> JobSpec {
        let mut variable = serde_json::json!({"name": "TOKEN", "secret": true});
        if let Some(value) = value {
            variable["value"] = value.into();
        }
        request(serde_json::json!({
            "name": "s", "command": "x", "schedule": "R//PT1S",
            "environmentVariables": [{"name": "PLAIN", "value": "p"}, variable]
        }))
        .validate(JobKind::Scheduled, now())
        .unwrap()
    }

    #[test]
    fn secret_variables_are_never_shown() {
        let spec = with_secret(Some("hunter2"));
        let record = JobRecord {
            spec: spec.clone(),
            state: JobState::default(),
        };
        let json = record.to_chronos_json();
        assert!(!json.to_string().contains("hunter2"), "{json}");
        assert_eq!(json["environmentVariables"][1]["value"], SECRET_PLACEHOLDER);
        assert_eq!(json["environmentVariables"][1]["secret"], true);
        assert_eq!(json["environmentVariables"][0]["value"], "p");
        assert!(!format!("{spec:?}").contains("hunter2"));
        // Stored, the value is kept.
        let decoded: JobRecord = crate::codec::decode(&crate::codec::encode(&record)).unwrap();
        assert_eq!(decoded.spec.environment[1].value, "hunter2");
    }

    #[test]
    fn a_secret_sent_back_without_its_value_keeps_the_stored_one() {
        let stored = with_secret(Some("hunter2"));
        for sent in [None, Some(""), Some(SECRET_PLACEHOLDER)] {
            let mut spec = with_secret(sent);
            assert!(spec.keeps_secrets());
            spec.keep_secrets(Some(&stored)).unwrap();
            assert_eq!(spec.environment[1].value, "hunter2", "{sent:?}");
            // Nothing to keep from: refused, never an empty variable.
            let err = with_secret(sent).keep_secrets(None).unwrap_err();
            assert_eq!(err.field, "environmentVariables");
            assert!(err.message.contains("TOKEN"), "{err}");
        }
        // A new value replaces the stored one.
        let mut spec = with_secret(Some("new"));
        assert!(!spec.keeps_secrets());
        spec.keep_secrets(Some(&stored)).unwrap();
        assert_eq!(spec.environment[1].value, "new");
        // Twice the same secret name: which to keep would be a guess.
        let twice = request(serde_json::json!({
            "name": "s", "command": "x", "schedule": "R//PT1S",
            "environmentVariables": [
                {"name": "T", "value": "a", "secret": true}, {"name": "T", "value": "b"}
            ]
        }))
        .validate(JobKind::Scheduled, now())
        .unwrap_err();
        assert_eq!(twice.field, "environmentVariables");
    }

    #[test]
    fn version_2_job_records_still_decode() {
        #[derive(Serialize)]
        struct SpecV2<'a> {
            name: &'a str,
            command: &'a str,
            shell: bool,
            arguments: Vec<String>,
            trigger: Trigger,
            epsilon_ms: i64,
            retries: u32,
            is_async: bool,
            disabled: bool,
            concurrent: bool,
            owner: &'a str,
            environment: Vec<EnvironmentVariable>,
            timeout_ms: Option<u64>,
            depends_on: Vec<String>,
            wait_timeout_ms: Option<i64>,
            time_zone: &'a str,
            extra_json: &'a str,
        }
        let spec = SpecV2 {
            name: "old",
            command: "true",
            shell: true,
            arguments: vec![],
            trigger: Trigger::Parents(vec!["a".into()]),
            epsilon_ms: 60_000,
            retries: 2,
            is_async: false,
            disabled: false,
            concurrent: false,
            owner: "ops@example.com",
            environment: vec![],
            timeout_ms: Some(5),
            depends_on: vec!["x/{TODAY}".into()],
            wait_timeout_ms: None,
            time_zone: "UTC",
            extra_json: "{}",
        };
        let state = JobState {
            error_count: 4,
            ..Default::default()
        };
        let bytes = postcard::to_extend(&(spec, state), vec![2]).unwrap();
        let record: JobRecord = crate::codec::decode(&bytes).unwrap();
        assert_eq!(record.spec.owner, "ops@example.com");
        assert_eq!(record.spec.timeout_ms, Some(5));
        assert!(record.spec.notify_webhooks.is_empty());
        assert_eq!(record.state.error_count, 4);
        assert!(crate::codec::decode::<JobRecord>(&[1, 0]).is_err());
    }

    #[test]
    fn notify_webhooks_validate_and_round_trip() {
        let spec = request(serde_json::json!({
            "name": "a", "command": "x", "schedule": "R//PT1S",
            "notifyWebhooks": ["https://hooks.example.com/T1"]
        }))
        .validate(JobKind::Scheduled, now())
        .unwrap();
        assert_eq!(spec.notify_webhooks, ["https://hooks.example.com/T1"]);
        let json = JobRecord {
            spec,
            state: JobState::default(),
        }
        .to_chronos_json();
        assert_eq!(json["notifyWebhooks"][0], "https://hooks.example.com/T1");
        for bad in ["ftp://x", "http://", "https://a b", "hooks.example.com"] {
            let err = request(serde_json::json!({
                "name": "a", "command": "x", "schedule": "R//PT1S", "notifyWebhooks": [bad]
            }))
            .validate(JobKind::Scheduled, now())
            .unwrap_err();
            assert_eq!(err.field, "notifyWebhooks", "{bad}");
        }
    }

    /// A job exactly as Chronos 3's `JobSerializer` writes it in `GET /scheduler/jobs`
    /// (every field, in its order, with the values its deserializer fills in: `runAsUser` the
    /// server's user, `cpus`/`disk`/`mem` its defaults), then `parents` for a dependent job or
    /// `schedule` and `scheduleTimeZone` for a scheduled one. `maxCompletionTime` is written by
    /// builds after 3.0.2 only; 3.0.x releases leave it out.
    fn chronos3_job(name: &str, tail: Value) -> Value {
        let mut job = serde_json::json!({
            "name": name, "command": "echo hi", "shell": true, "executor": "",
            "executorFlags": "", "taskInfoData": "", "retries": 2, "owner": "",
            "ownerName": "", "description": "", "successCount": 0, "errorCount": 0,
            "lastSuccess": "", "lastError": "", "cpus": 0.1, "disk": 256.0, "mem": 128.0,
            "disabled": false, "softError": false, "dataProcessingJobType": false,
            "errorsSinceLastSuccess": 0, "fetch": [], "uris": [], "environmentVariables": [],
            "arguments": [], "highPriority": false, "runAsUser": "root", "concurrent": false,
            "maxCompletionTime": 0, "constraints": []
        });
        let fields = job.as_object_mut().unwrap();
        for (key, value) in tail.as_object().unwrap() {
            fields.insert(key.clone(), value.clone());
        }
        job
    }

    /// Validates `json`, answers it as dron does, and checks that the answer validates to the
    /// same definition and keeps every Chronos field dron does not act on as sent.
    fn round_trip(json: &Value, kind: JobKind) -> (JobSpec, Value) {
        let spec = request(json.clone())
            .validate(kind, now())
            .unwrap_or_else(|e| panic!("{json}: {e} ({})", e.field));
        let answer = JobRecord {
            spec: spec.clone(),
            state: JobState::default(),
        }
        .to_chronos_json();
        let again = request(answer.clone()).validate(kind, now()).unwrap();
        assert_eq!(again, spec, "the answer re-validates to the same job");
        for (field, value) in json.as_object().unwrap() {
            let acted_on = JOB_FIELDS.contains(&field.as_str()) && !is_demand(field);
            if acted_on || OUTPUT_ONLY_FIELDS.contains(&field.as_str()) {
                continue;
            }
            assert_eq!(&answer[field], value, "{field} comes back unchanged");
        }
        (spec, answer)
    }

    fn is_demand(field: &str) -> bool {
        matches!(field, "cpus" | "mem" | "disk" | "constraints" | "container")
    }

    #[test]
    fn chronos_3_scheduled_jobs_are_accepted_unchanged() {
        let json = chronos3_job(
            "nightly",
            serde_json::json!({
                "owner": "ops@example.com", "successCount": 12, "errorCount": 1,
                "lastSuccess": "2017-03-01T12:00:05.123Z", "errorsSinceLastSuccess": 0,
                "environmentVariables": [{"name": "FOO", "value": "bar"}],
                "schedule": "R/2017-03-02T12:00:00.000Z/PT24H", "scheduleTimeZone": ""
            }),
        );
        let (spec, answer) = round_trip(&json, JobKind::Scheduled);
        assert_eq!(spec.timeout_ms, None, "maxCompletionTime 0 is no limit");
        assert_eq!(spec.time_zone, "UTC", "an empty scheduleTimeZone is UTC");
        assert_eq!(spec.epsilon_ms, DEFAULT_EPSILON_MS);
        assert_eq!(spec.retries, 2);
        assert_eq!(spec.owner, "ops@example.com");
        assert_eq!(
            spec.trigger,
            Trigger::Schedule {
                schedule: "R/2017-03-02T12:00:00Z/PT24H".into(),
                time_zone: "UTC".into()
            }
        );
        let demand = crate::demand::TaskDemand::from_json(&spec.extra_json).unwrap();
        assert_eq!(demand, crate::demand::TaskDemand::default());
        // No limit is answered as no field (Chronos 3.0.x's shape); counters are dron's own.
        assert!(answer.get("maxCompletionTime").is_none(), "{answer}");
        assert_eq!(answer["successCount"], 0);
        assert_eq!(answer["lastSuccess"], "");
        assert_eq!(answer["scheduleTimeZone"], "UTC");

        // A 3.0.x export (no maxCompletionTime), a limit in milliseconds, and an exhausted
        // job (Chronos disables a job whose count reaches R0).
        let mut released = json.clone();
        released
            .as_object_mut()
            .unwrap()
            .remove("maxCompletionTime");
        assert_eq!(round_trip(&released, JobKind::Scheduled).0, spec);
        let mut limited = json.clone();
        limited["maxCompletionTime"] = 5000.into();
        assert_eq!(
            round_trip(&limited, JobKind::Scheduled).0.timeout_ms,
            Some(5000)
        );
        let mut exhausted = json.clone();
        exhausted["schedule"] = "R0/2017-03-02T12:00:00.000Z/PT24H".into();
        exhausted["disabled"] = true.into();
        let (spec, _) = round_trip(&exhausted, JobKind::Scheduled);
        assert!(spec.disabled);
        assert_eq!(spec.schedule().unwrap().first_at_or_after(now()), None);
    }

    #[test]
    fn chronos_3_zoned_schedules_keep_their_wall_clock() {
        // Chronos writes the next start with the zone's offset once it has run.
        let json = chronos3_job(
            "paris",
            serde_json::json!({
                "schedule": "R/2026-11-24T02:30:00.000+01:00/P1D",
                "scheduleTimeZone": "Europe/Paris"
            }),
        );
        let (spec, answer) = round_trip(&json, JobKind::Scheduled);
        assert_eq!(spec.time_zone, "Europe/Paris");
        assert_eq!(answer["schedule"], "R/2026-11-24T02:30:00/P1D");
        let first = spec.schedule().unwrap().first_at_or_after(now()).unwrap();
        assert_eq!(first.to_rfc3339(), "2026-11-24T01:30:00+00:00");
    }

    #[test]
    fn chronos_3_dependent_and_container_jobs_are_accepted_unchanged() {
        let json = chronos3_job(
            "report",
            serde_json::json!({
                "fetch": [{"uri": "https://example.com/run.sh", "executable": true,
                           "cache": false, "extract": true}],
                "uris": ["https://example.com/run.sh"],
                "constraints": [["rack", "EQUALS", "r1"], ["hostname", "LIKE", "worker-.*"]],
                "parents": ["nightly", "extract"]
            }),
        );
        let (spec, answer) = round_trip(&json, JobKind::Dependent);
        assert_eq!(spec.parents(), ["nightly", "extract"]);
        assert_eq!(spec.timeout_ms, None);
        assert!(answer.get("schedule").is_none());
        let demand = crate::demand::TaskDemand::from_json(&spec.extra_json).unwrap();
        assert_eq!(demand.constraints.len(), 2);

        // A Docker job, its container as Chronos 3 writes it (absent when the job has none).
        let docker = chronos3_job(
            "in-docker",
            serde_json::json!({
                "container": {
                    "type": "DOCKER", "image": "busybox:1.36", "network": "HOST",
                    "networkInfos": [], "forcePullImage": false, "parameters": [],
                    "volumes": [{"hostPath": "/srv/data", "containerPath": "/data", "mode": "RW"}]
                },
                "parents": ["nightly"]
            }),
        );
        let (_, answer) = round_trip(&docker, JobKind::Dependent);
        assert_eq!(answer["container"], docker["container"]);
        // Other writers say "no container" with null: stored and returned as such.
        let mut null = docker.clone();
        null["container"] = Value::Null;
        assert_eq!(
            round_trip(&null, JobKind::Dependent).1["container"],
            Value::Null
        );
    }

    #[test]
    fn a_negative_or_non_numeric_max_completion_time_is_still_refused() {
        for bad in [
            serde_json::json!(-1),
            serde_json::json!("PT1M"),
            serde_json::json!(1.5),
        ] {
            let json = chronos3_job("a", serde_json::json!({"maxCompletionTime": bad}));
            let error = serde_json::from_value::<JobRequest>(json).unwrap_err();
            assert!(error.to_string().contains("invalid"), "{bad}: {error}");
        }
    }

    mod arbitrary_json {
        use super::*;
        use proptest::prelude::*;

        /// The fields a validation error may name.
        const FIELDS: [&str; 25] = JOB_FIELDS;
        /// Chronos fields kept with the pass-through ones (the first three are checked too).
        const MORE_FIELDS: [&str; 4] = ["mem", "cpus", "constraints", "successCount"];

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "[a-z.\\-_ ]{0,12}",
                Just("R/2026-11-23T10:00:00Z/PT1H".to_string()),
                Just("R//PT1S".to_string()),
                Just("R0/2026-11-23T10:00:00Z/P1M".to_string()),
                Just("*/5 * * * *".to_string()),
                Just("Europe/Paris".to_string()),
                Just("PT30S".to_string()),
                "R[0-9]{0,3}/[0-9T:Z-]{0,22}/P[0-9TDHMSW.]{0,8}",
            ]
        }

        fn leaf() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u32>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                text().prop_map(Value::from),
            ]
        }

        fn value() -> impl Strategy<Value = Value> {
            leaf().prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    prop::collection::vec(text(), 0..4).prop_map(Value::from),
                    prop::collection::vec((text(), text()), 0..3).prop_map(|pairs| {
                        let vars = pairs
                            .into_iter()
                            .map(|(name, value)| serde_json::json!({"name": name, "value": value}));
                        Value::Array(vars.collect())
                    }),
                    prop::collection::btree_map(text(), inner, 0..3)
                        .prop_map(|map| Value::Object(map.into_iter().collect())),
                ]
            })
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => prop::sample::select(FIELDS.to_vec()).prop_map(str::to_string),
                1 => prop::sample::select(MORE_FIELDS.to_vec()).prop_map(str::to_string),
                1 => text(),
            ]
        }

        fn job_json() -> impl Strategy<Value = Value> {
            prop_oneof![
                4 => prop::collection::btree_map(key(), value(), 0..10)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
                // Mostly well-typed name and command, so validation gets past them.
                8 => (text(), text(), prop::collection::btree_map(key(), value(), 0..8))
                    .prop_map(|(name, command, mut map)| {
                        map.insert("name".to_string(), Value::from(name));
                        map.entry("command".to_string()).or_insert(Value::from(command));
                        Value::Object(map.into_iter().collect())
                    }),
                1 => value(),
                1 => text().prop_map(Value::from),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]

            #[test]
            fn arbitrary_json_never_panics_and_errors_name_a_known_field(json in job_json()) {
                let Ok(request) = serde_json::from_value::<JobRequest>(json.clone()) else {
                    return Ok(());
                };
                for kind in [JobKind::Scheduled, JobKind::Dependent] {
                    if let Err(err) = request.clone().validate(kind, now()) {
                        prop_assert!(
                            FIELDS.contains(&err.field),
                            "{json}: {err} names {}", err.field
                        );
                    }
                }
            }
        }
    }
}
