//! Resources and Dron's dependency language.
//!
//! A **resource** is a string id naming some data, e.g. `hive:warehouse.users/ds=2026-11-23`
//! or `hdfs:/logs/clicks/2026-11-23T05`. An **event** says a resource is ready (or, for
//! `job:` resources dron announces, that a run failed for good).
//!
//! A job's `dependsOn` lists **templates**: resource ids with placeholders expanded from an
//! instance's logical time in the job's time zone:
//!
//! | placeholder | expands to (logical time t, in the job's zone) |
//! |---|---|
//! | `{TODAY}`, `{TODAY-N}`, `{TODAY+N}` | the local date of t, N calendar days earlier/later: `2026-11-23` |
//! | `{HOUR}`, `{HOUR-N}` | t (N hours earlier) to the hour: `2026-11-23T05` |
//! | `{MINUTE}`, `{MINUTE-N}` | t (N minutes earlier) to the minute: `2026-11-23T05:07` |
//! | `{LOGICAL_TIME}` | t at the job's granularity (see [`Granularity`]) |
//! | `{LAST_RUN}` | the logical time of the job's last successful run, at its granularity |
//! | `{TODAY-6:TODAY}` (any unit) | a range: one resource per step, the instance waits for all |
//!
//! When an instance of job J for logical time t succeeds, dron announces `job:J@{LOGICAL_TIME}`,
//! so `job:daily_users@{TODAY-1}` waits for yesterday's run of `daily_users`.

use chrono::{DateTime, Days, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Invalid;
use crate::name::truncate;

/// The longest accepted resource id or template, in bytes.
pub const MAX_RESOURCE_LEN: usize = 1024;
/// The most resources one instance may wait for (ranges included).
pub const MAX_EXPANSION: usize = 1000;
/// Prefix of the resources dron announces for job runs: `job:NAME@TIME`.
pub const JOB_PREFIX: &str = "job:";

/// Whether an event says its resource is ready, or that the run producing it failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum EventStatus {
    #[default]
    Ready,
    Failed,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Ready => "ready",
            EventStatus::Failed => "failed",
        }
    }
}

/// One event about one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceEvent {
    pub resource: String,
    /// The event's own time (the logical time of the instances it triggers); None: the time
    /// dron records it.
    pub at_ms: Option<i64>,
    /// Free-form metadata from the publisher, as JSON text ("" when none).
    pub meta_json: String,
    pub status: EventStatus,
}

/// The wire format of an event: what a framework publishes to the `dron.resources` exchange
/// or POSTs to `/resources`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMessage {
    pub resource: String,
    /// RFC 3339 time, or Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
    /// "ready" (the default) or "failed".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// The largest `meta` of an event, as JSON text: it is kept with the resource, and shown.
pub const MAX_META_BYTES: usize = 16 * 1024;

impl EventMessage {
    /// Parses and validates a JSON body; errors name the field.
    pub fn parse(body: &[u8]) -> Result<ResourceEvent, Invalid> {
        let message: EventMessage = serde_json::from_slice(body).map_err(not_an_event)?;
        message.validate()
    }

    /// As [`EventMessage::parse`], from JSON already parsed.
    pub fn from_value(value: Value) -> Result<ResourceEvent, Invalid> {
        let message: EventMessage = serde_json::from_value(value).map_err(not_an_event)?;
        message.validate()
    }

    pub fn validate(self) -> Result<ResourceEvent, Invalid> {
        validate_resource_id("resource", &self.resource)?;
        let at_ms = match self.at {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.as_i64().ok_or_else(|| {
                Invalid::new(
                    "at",
                    "at must be whole Unix milliseconds or an RFC 3339 time",
                )
            })?),
            Some(Value::String(text)) => Some(
                DateTime::parse_from_rfc3339(&text)
                    .map_err(|e| {
                        Invalid::new(
                            "at",
                            format!("at '{}' is not RFC 3339: {e}", truncate(&text)),
                        )
                    })?
                    .timestamp_millis(),
            ),
            Some(_) => {
                return Err(Invalid::new(
                    "at",
                    "at must be an RFC 3339 time or Unix milliseconds",
                ));
            }
        };
        let status = match self.status.as_deref() {
            None | Some("ready") => EventStatus::Ready,
            Some("failed") => EventStatus::Failed,
            Some(other) => {
                return Err(Invalid::new(
                    "status",
                    format!(
                        "status '{}' is not \"ready\" or \"failed\"",
                        truncate(other)
                    ),
                ));
            }
        };
        let meta_json = match self.meta {
            None | Some(Value::Null) => String::new(),
            Some(meta) => meta.to_string(),
        };
        if meta_json.len() > MAX_META_BYTES {
            return Err(Invalid::new(
                "meta",
                format!("meta is larger than {MAX_META_BYTES} bytes as JSON"),
            ));
        }
        Ok(ResourceEvent {
            resource: self.resource,
            at_ms,
            meta_json,
            status,
        })
    }
}

/// A JSON error as the field it is about (`body` when it names none).
fn not_an_event(error: serde_json::Error) -> Invalid {
    let text = error.to_string();
    let named = ["resource", "at", "meta", "status"]
        .into_iter()
        .find(|f| text.contains(&format!("`{f}`")));
    let field = match named {
        Some(field) if !text.starts_with("unknown field") => field,
        _ => "body",
    };
    Invalid::new(field, format!("not a resource event: {error}"))
}

impl ResourceEvent {
    pub fn ready(resource: impl Into<String>, at_ms: Option<i64>) -> Self {
        ResourceEvent {
            resource: resource.into(),
            at_ms,
            meta_json: String::new(),
            status: EventStatus::Ready,
        }
    }

    /// The event in its wire format.
    pub fn to_message(&self) -> EventMessage {
        EventMessage {
            resource: self.resource.clone(),
            at: self
                .at_ms
                .and_then(DateTime::from_timestamp_millis)
                .map(|t| Value::from(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))),
            meta: serde_json::from_str(&self.meta_json).ok(),
            status: Some(self.status.as_str().to_string()),
        }
    }

    /// A key for this event that a redelivery repeats: resource, status and time.
    pub fn key(&self) -> String {
        let at = self.at_ms.map(|t| t.to_string()).unwrap_or_default();
        format!("{}|{}|{at}", self.status.as_str(), self.resource)
    }
}

/// A satisfied resource as dron keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRecord {
    pub resource: String,
    /// The event's time, or when dron recorded it.
    pub at_ms: i64,
    pub recorded_ms: i64,
    pub meta_json: String,
}

/// An event the bus has recorded but not yet applied to every coordinator, or not yet
/// published to the message broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEvent {
    /// With `at_ms` resolved.
    pub event: ResourceEvent,
    pub apply: bool,
    pub publish: bool,
}

impl crate::codec::Stored for ResourceEvent {}
impl crate::codec::Stored for ResourceRecord {}
impl crate::codec::Stored for PendingEvent {}

pub fn validate_resource_id(field: &'static str, id: &str) -> Result<(), Invalid> {
    if id.trim().is_empty() || id.len() > MAX_RESOURCE_LEN {
        return Err(Invalid::new(
            field,
            format!("a resource id must be 1 to {MAX_RESOURCE_LEN} bytes long"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(Invalid::new(
            field,
            format!(
                "resource id '{}' contains a control character",
                truncate(id)
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Logical times at a job's granularity
// ---------------------------------------------------------------------------------------------

/// How finely a job's logical times are written in the resources it announces: a date for
/// daily (and longer) schedules, an hour for hourly ones, and so on. Jobs without a schedule
/// write seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Day,
    Hour,
    Minute,
    Second,
    Millisecond,
}

impl Granularity {
    /// The granularity of a schedule whose targets are `period` apart.
    pub fn of_period(period: Option<TimeDelta>) -> Granularity {
        let Some(period) = period else {
            return Granularity::Second;
        };
        match period.num_milliseconds() {
            ms if ms >= 86_400_000 => Granularity::Day,
            ms if ms >= 3_600_000 => Granularity::Hour,
            ms if ms >= 60_000 => Granularity::Minute,
            ms if ms >= 1_000 => Granularity::Second,
            _ => Granularity::Millisecond,
        }
    }

    /// `at` written in `zone` to this granularity.
    pub fn format(self, at: DateTime<Utc>, zone: Tz) -> String {
        let local = at.with_timezone(&zone);
        let pattern = match self {
            Granularity::Day => "%Y-%m-%d",
            Granularity::Hour => "%Y-%m-%dT%H",
            Granularity::Minute => "%Y-%m-%dT%H:%M",
            Granularity::Second => "%Y-%m-%dT%H:%M:%S",
            Granularity::Millisecond => "%Y-%m-%dT%H:%M:%S%.3f",
        };
        local.format(pattern).to_string()
    }
}

/// The resource dron announces when job `job`'s instance for `logical` ends.
pub fn job_resource(
    job: &str,
    logical: DateTime<Utc>,
    zone: Tz,
    granularity: Granularity,
) -> String {
    format!("{JOB_PREFIX}{job}@{}", granularity.format(logical, zone))
}

// ---------------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------------

/// What a template is expanded for: one instance of one job.
#[derive(Debug, Clone, Copy)]
pub struct Expansion {
    pub logical: DateTime<Utc>,
    pub zone: Tz,
    pub granularity: Granularity,
    /// The logical time of the job's last successful run, if any.
    pub last_run: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Day,
    Hour,
    Minute,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Placeholder {
    /// Offsets `from..=to` in `unit` (a single offset when equal).
    Range {
        unit: Unit,
        from: i64,
        to: i64,
    },
    LogicalTime,
    LastRun,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Placeholder(Placeholder),
}

/// A parsed `dependsOn` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

const PLACEHOLDERS: &str = "{TODAY}, {TODAY-N}, {TODAY+N}, {HOUR}, {HOUR-N}, {MINUTE}, {MINUTE-N}, {LOGICAL_TIME}, {LAST_RUN}, or a range such as {TODAY-6:TODAY}";

impl Template {
    /// Parses a template; `field` is the job field it came from, for errors.
    pub fn parse(field: &'static str, text: &str) -> Result<Template, Invalid> {
        validate_resource_id(field, text)?;
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(unbalanced(field, text));
            }
            let close = rest[open..]
                .find('}')
                .map(|i| open + i)
                .ok_or_else(|| unbalanced(field, text))?;
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let inner = &rest[open + 1..close];
            let placeholder = parse_placeholder(inner).ok_or_else(|| {
                Invalid::new(
                    field,
                    format!(
                        "'{}' has an unknown placeholder {{{}}}: use {PLACEHOLDERS}",
                        truncate(text),
                        truncate(inner)
                    ),
                )
            })?;
            parts.push(Part::Placeholder(placeholder));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        let template = Template { parts };
        if template.expansion_count() > MAX_EXPANSION {
            return Err(Invalid::new(
                field,
                format!(
                    "'{}' expands to more than {MAX_EXPANSION} resources",
                    truncate(text)
                ),
            ));
        }
        Ok(template)
    }

    pub(crate) fn expansion_count(&self) -> usize {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Placeholder(Placeholder::Range { from, to, .. }) => {
                    (to - from + 1).clamp(1, MAX_EXPANSION as i64 + 1) as usize
                }
                _ => 1,
            })
            .fold(1usize, |product, n| product.saturating_mul(n))
    }

    /// Every resource id the template names for one instance. A template using `{LAST_RUN}`
    /// names nothing before the job's first successful run.
    pub fn expand(&self, at: &Expansion) -> Vec<String> {
        let mut ids = vec![String::new()];
        for part in &self.parts {
            let pieces: Vec<String> = match part {
                Part::Text(text) => vec![text.clone()],
                Part::Placeholder(Placeholder::LogicalTime) => {
                    vec![at.granularity.format(at.logical, at.zone)]
                }
                Part::Placeholder(Placeholder::LastRun) => match at.last_run {
                    Some(last) => vec![at.granularity.format(last, at.zone)],
                    None => return Vec::new(),
                },
                Part::Placeholder(Placeholder::Range { unit, from, to }) => (*from..=*to)
                    .filter_map(|offset| format_offset(*unit, offset, at))
                    .collect(),
            };
            ids = ids
                .iter()
                .flat_map(|prefix| pieces.iter().map(move |piece| format!("{prefix}{piece}")))
                .collect();
        }
        ids
    }

    /// The template with each placeholder as `*`: a pattern every expansion matches.
    pub fn as_pattern(&self) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.as_str(),
                Part::Placeholder(_) => "*",
            })
            .collect()
    }

    /// For a `job:NAME@...` template with a literal name: the job it waits on, when it may wait
    /// on that job's run for the same or a later logical time. Waiting only on strictly
    /// earlier runs (`{TODAY-1}`, `{LAST_RUN}`) closes no cycle: yesterday's run is done.
    pub fn upstream_job(&self) -> Option<&str> {
        let Some(Part::Text(first)) = self.parts.first() else {
            return None;
        };
        let (name, _) = first.strip_prefix(JOB_PREFIX)?.split_once('@')?;
        let only_past = self.parts.iter().all(|part| match part {
            Part::Text(_) => true,
            Part::Placeholder(Placeholder::Range { to, .. }) => *to < 0,
            Part::Placeholder(Placeholder::LastRun) => true,
            Part::Placeholder(Placeholder::LogicalTime) => false,
        });
        let has_placeholder = self.parts.len() > 1;
        let waits_on_past_only = only_past && has_placeholder;
        (!name.is_empty() && !waits_on_past_only).then_some(name)
    }
}

fn unbalanced(field: &'static str, text: &str) -> Invalid {
    Invalid::new(
        field,
        format!("'{}' has an unbalanced '{{' or '}}'", truncate(text)),
    )
}

fn parse_placeholder(inner: &str) -> Option<Placeholder> {
    match inner {
        "LOGICAL_TIME" => return Some(Placeholder::LogicalTime),
        "LAST_RUN" => return Some(Placeholder::LastRun),
        _ => {}
    }
    let (first, last) = match inner.split_once(':') {
        Some((a, b)) => (parse_offset(a)?, parse_offset(b)?),
        None => {
            let single = parse_offset(inner)?;
            (single, single)
        }
    };
    let ((unit, from), (last_unit, to)) = (first, last);
    (unit == last_unit && from <= to).then_some(Placeholder::Range { unit, from, to })
}

/// `TODAY`, `TODAY-3`, `HOUR+1`... as (unit, offset).
fn parse_offset(text: &str) -> Option<(Unit, i64)> {
    let (name, offset) = match text.find(['+', '-']) {
        Some(at) => {
            let digits = &text[at + 1..];
            if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let n: i64 = digits.parse().ok()?;
            (&text[..at], if &text[at..at + 1] == "-" { -n } else { n })
        }
        None => (text, 0),
    };
    let unit = match name {
        "TODAY" => Unit::Day,
        "HOUR" => Unit::Hour,
        "MINUTE" => Unit::Minute,
        _ => return None,
    };
    Some((unit, offset))
}

fn format_offset(unit: Unit, offset: i64, at: &Expansion) -> Option<String> {
    match unit {
        // Calendar days in the zone: the day before 2026-03-29 is 2026-03-28 even across DST.
        Unit::Day => {
            let date = at.logical.with_timezone(&at.zone).date_naive();
            let shifted = shift_days(date, offset)?;
            Some(shifted.format("%Y-%m-%d").to_string())
        }
        // Hours and minutes are elapsed time, written on the zone's clock.
        Unit::Hour => {
            let shifted = at
                .logical
                .checked_add_signed(TimeDelta::try_hours(offset)?)?;
            Some(Granularity::Hour.format(shifted, at.zone))
        }
        Unit::Minute => {
            let shifted = at
                .logical
                .checked_add_signed(TimeDelta::try_minutes(offset)?)?;
            Some(Granularity::Minute.format(shifted, at.zone))
        }
    }
}

fn shift_days(date: NaiveDate, offset: i64) -> Option<NaiveDate> {
    let days = Days::new(offset.unsigned_abs());
    if offset < 0 {
        date.checked_sub_days(days)
    } else {
        date.checked_add_days(days)
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters (none included)
/// and every other character matches itself.
pub fn pattern_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and where in `text` it is currently made to end.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star_p, star_t)) = star {
            pi = star_p + 1;
            ti = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A UTC instant from a zone's wall-clock time.
    fn local_time(zone: Tz, y: i32, m: u32, d: u32, h: u32, min: u32) -> Option<DateTime<Utc>> {
        zone.with_ymd_and_hms(y, m, d, h, min, 0)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    }

    fn at(zone: Tz, logical: DateTime<Utc>, granularity: Granularity) -> Expansion {
        Expansion {
            logical,
            zone,
            granularity,
            last_run: None,
        }
    }

    fn expand(template: &str, expansion: &Expansion) -> Vec<String> {
        Template::parse("dependsOn", template)
            .unwrap()
            .expand(expansion)
    }

    #[test]
    fn dates_follow_the_jobs_zone() {
        // 2026-11-23T02:00Z is still the 22nd in Los Angeles and already the 23rd in Tokyo.
        let logical: DateTime<Utc> = "2026-11-23T02:00:00Z".parse().unwrap();
        let la = at(chrono_tz::America::Los_Angeles, logical, Granularity::Day);
        let tokyo = at(chrono_tz::Asia::Tokyo, logical, Granularity::Day);
        assert_eq!(expand("t/ds={TODAY}", &la), ["t/ds=2026-11-22"]);
        assert_eq!(expand("t/ds={TODAY}", &tokyo), ["t/ds=2026-11-23"]);
        assert_eq!(
            expand("x/{TODAY-1}/{TODAY+1}", &tokyo),
            ["x/2026-11-22/2026-11-24"]
        );
        assert_eq!(expand("h:{HOUR}", &tokyo), ["h:2026-11-23T11"]);
        assert_eq!(expand("m:{MINUTE-5}", &tokyo), ["m:2026-11-23T10:55"]);
        assert_eq!(expand("job:a@{LOGICAL_TIME}", &tokyo), ["job:a@2026-11-23"]);
    }

    #[test]
    fn days_are_calendar_days_across_dst() {
        // Europe/Paris springs forward on 2026-03-29 (a 23-hour day) and falls back on
        // 2026-10-25 (a 25-hour day): the day before is still the calendar day before.
        let paris = chrono_tz::Europe::Paris;
        let spring = local_time(paris, 2026, 3, 30, 0, 30).unwrap();
        let e = at(paris, spring, Granularity::Day);
        assert_eq!(expand("{TODAY-1}", &e), ["2026-03-29"]);
        assert_eq!(
            expand("{TODAY-2:TODAY}", &e),
            ["2026-03-28", "2026-03-29", "2026-03-30"]
        );
        let fall = local_time(paris, 2026, 10, 26, 0, 30).unwrap();
        assert_eq!(
            expand("{TODAY-1}", &at(paris, fall, Granularity::Day)),
            ["2026-10-25"]
        );
        // Hours are elapsed: an hour before 03:30 CEST on spring-forward day is 01:30 CET.
        let after_gap = local_time(paris, 2026, 3, 29, 3, 30).unwrap();
        let e = at(paris, after_gap, Granularity::Hour);
        assert_eq!(
            expand("{HOUR-1:HOUR}", &e),
            ["2026-03-29T01", "2026-03-29T03"]
        );
    }

    #[test]
    fn ranges_expand_to_every_step() {
        let logical: DateTime<Utc> = "2026-11-23T05:00:00Z".parse().unwrap();
        let e = at(chrono_tz::UTC, logical, Granularity::Day);
        let week = expand("logs/{TODAY-6:TODAY}", &e);
        assert_eq!(week.len(), 7);
        assert_eq!(week[0], "logs/2026-11-17");
        assert_eq!(week[6], "logs/2026-11-23");
        // Two ranges: every combination.
        assert_eq!(expand("{TODAY-1:TODAY}/{HOUR-1:HOUR}", &e).len(), 4);
    }

    #[test]
    fn last_run_waits_only_once_the_job_has_run() {
        let logical: DateTime<Utc> = "2026-11-23T05:00:00Z".parse().unwrap();
        let mut e = at(chrono_tz::UTC, logical, Granularity::Hour);
        assert!(expand("since/{LAST_RUN}", &e).is_empty());
        e.last_run = Some("2026-11-23T03:00:00Z".parse().unwrap());
        assert_eq!(expand("since/{LAST_RUN}", &e), ["since/2026-11-23T03"]);
    }

    #[test]
    fn bad_templates_are_refused_with_the_field() {
        for bad in [
            "{TOMORROW}",
            "x/{TODAY",
            "x/TODAY}",
            "{TODAY-}",
            "{TODAY:HOUR}",
            "{TODAY:TODAY-3}",
            "{HOUR-1x}",
            "",
            "{TODAY-999:TODAY}/{TODAY-999:TODAY}",
        ] {
            let error = Template::parse("dependsOn", bad).unwrap_err();
            assert_eq!(error.field, "dependsOn", "{bad}");
        }
        assert!(Template::parse("dependsOn", "{TODAY-999:TODAY}").is_ok());
    }

    #[test]
    fn granularity_follows_the_period() {
        let of = |s: i64| Granularity::of_period(Some(TimeDelta::seconds(s)));
        assert_eq!(of(86_400), Granularity::Day);
        assert_eq!(of(7 * 86_400), Granularity::Day);
        assert_eq!(of(3600), Granularity::Hour);
        assert_eq!(of(60), Granularity::Minute);
        assert_eq!(of(1), Granularity::Second);
        assert_eq!(Granularity::of_period(None), Granularity::Second);
        let t: DateTime<Utc> = "2026-11-23T05:07:09.250Z".parse().unwrap();
        let paris = chrono_tz::Europe::Paris;
        assert_eq!(Granularity::Minute.format(t, paris), "2026-11-23T06:07");
        assert_eq!(
            Granularity::Millisecond.format(t, paris),
            "2026-11-23T06:07:09.250"
        );
        assert_eq!(
            job_resource("a", t, paris, Granularity::Day),
            "job:a@2026-11-23"
        );
    }

    #[test]
    fn upstream_jobs_skip_strictly_earlier_runs() {
        let upstream = |t: &str| {
            Template::parse("dependsOn", t)
                .unwrap()
                .upstream_job()
                .map(str::to_string)
        };
        assert_eq!(upstream("job:a@{TODAY}").as_deref(), Some("a"));
        assert_eq!(upstream("job:a@{TODAY-6:TODAY}").as_deref(), Some("a"));
        assert_eq!(upstream("job:a@2026-11-23").as_deref(), Some("a"));
        assert_eq!(upstream("job:a@{TODAY-1}"), None);
        assert_eq!(upstream("job:a@{LAST_RUN}"), None);
        assert_eq!(upstream("hive:t/{TODAY}"), None);
        assert_eq!(upstream("job:{TODAY}@x"), None);
    }

    #[test]
    fn patterns_match_with_stars() {
        assert!(pattern_matches("products:*", "products:2026-11-23"));
        assert!(pattern_matches("*", ""));
        assert!(pattern_matches("a*b*c", "aXXbYYc"));
        assert!(pattern_matches("a*b*c", "abc"));
        assert!(!pattern_matches("a*b*c", "aXXbYY"));
        assert!(!pattern_matches("products:*", "product:x"));
        assert!(pattern_matches("hdfs:/logs/*/x", "hdfs:/logs/a/b/x"));
        let t = Template::parse("dependsOn", "hive:t/ds={TODAY}/h={HOUR}").unwrap();
        assert_eq!(t.as_pattern(), "hive:t/ds=*/h=*");
    }

    #[test]
    fn events_parse_and_explain_errors() {
        let event = EventMessage::parse(
            br#"{"resource": "hive:t/ds=2026-11-23", "at": "2026-11-23T05:00:00+01:00", "meta": {"rows": 3}}"#,
        )
        .unwrap();
        assert_eq!(event.resource, "hive:t/ds=2026-11-23");
        assert_eq!(
            event.at_ms,
            Some(
                "2026-11-23T04:00:00Z"
                    .parse::<DateTime<Utc>>()
                    .unwrap()
                    .timestamp_millis()
            )
        );
        assert_eq!(event.meta_json, r#"{"rows":3}"#);
        assert_eq!(event.status, EventStatus::Ready);
        let cases: [(&[u8], &str); 7] = [
            (b"{}", "resource"),
            (br#"{"resource": ""}"#, "resource"),
            (br#"{"resource": "a", "at": "yesterday"}"#, "at"),
            (br#"{"resource": "a", "at": true}"#, "at"),
            (br#"{"resource": "a", "status": "maybe"}"#, "status"),
            (b"not json", "body"),
            (br#"{"resource": "a", "extra": 1}"#, "body"),
        ];
        for (body, field) in cases {
            let error = EventMessage::parse(body).unwrap_err();
            assert_eq!(error.field, field, "{}", String::from_utf8_lossy(body));
        }
        let round_trip = EventMessage::parse(
            serde_json::to_string(&event.to_message())
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(round_trip, event);
    }
}
