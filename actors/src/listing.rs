//! The jobs table (`GET /api/jobs`): search, filter, sort and one page of rows, computed where
//! the jobs live. Each shard answers its own best `offset + limit` rows and its match count;
//! [`JobQuery::merge`] cuts the page from those. So the first page of 100,000 jobs costs each
//! shard one pass over its jobs and a partial sort, and only a page's worth of rows travels.

use std::cmp::Ordering;

use dron_model::job::{JobRecord, Trigger};

use crate::views::RunState;

/// Rows per page when the client gives no `limit`, and the most it may ask for.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobFilter {
    /// The newer of the last success and the last error is an error.
    Failing,
    /// An instance is running now.
    Running,
    Disabled,
}

impl JobFilter {
    pub const ALL: [JobFilter; 3] = [JobFilter::Failing, JobFilter::Running, JobFilter::Disabled];

    pub fn as_str(self) -> &'static str {
        match self {
            JobFilter::Failing => "failing",
            JobFilter::Running => "running",
            JobFilter::Disabled => "disabled",
        }
    }

    pub fn parse(text: &str) -> Option<JobFilter> {
        Self::ALL.into_iter().find(|f| f.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    #[default]
    Name,
    NextFire,
    LastSuccess,
    LastError,
    Owner,
}

impl SortKey {
    pub const ALL: [SortKey; 5] = [
        SortKey::Name,
        SortKey::NextFire,
        SortKey::LastSuccess,
        SortKey::LastError,
        SortKey::Owner,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::NextFire => "nextFire",
            SortKey::LastSuccess => "lastSuccess",
            SortKey::LastError => "lastError",
            SortKey::Owner => "owner",
        }
    }

    pub fn parse(text: &str) -> Option<SortKey> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One request for a page of the jobs table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobQuery {
    /// Case-insensitive substring of the name, command or owner; empty matches every job.
    pub q: String,
    /// Every filter must hold.
    pub filters: Vec<JobFilter>,
    pub sort: SortKey,
    pub descending: bool,
    pub offset: usize,
    pub limit: usize,
}

impl Default for JobQuery {
    fn default() -> Self {
        JobQuery {
            q: String::new(),
            filters: Vec::new(),
            sort: SortKey::Name,
            descending: false,
            offset: 0,
            limit: DEFAULT_LIMIT,
        }
    }
}

/// A job as the table shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    pub name: String,
    pub command: String,
    pub owner: String,
    pub trigger: Trigger,
    /// The next target of an enabled scheduled job.
    pub next_fire_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    pub last_error_ms: Option<i64>,
    pub success_count: u64,
    pub error_count: u64,
    pub disabled: bool,
    pub run_state: RunState,
}

impl JobRow {
    pub fn new(record: &JobRecord, run_state: RunState) -> JobRow {
        let (spec, state) = (&record.spec, &record.state);
        let scheduled = matches!(spec.trigger, Trigger::Schedule { .. }) && !spec.disabled;
        JobRow {
            name: spec.name.clone(),
            command: spec.command.clone(),
            owner: spec.owner.clone(),
            trigger: spec.trigger.clone(),
            next_fire_ms: state.next_target_ms.filter(|_| scheduled),
            last_success_ms: state.last_success_ms,
            last_error_ms: state.last_error_ms,
            success_count: state.success_count,
            error_count: state.error_count,
            disabled: spec.disabled,
            run_state,
        }
    }

    pub fn last_result(&self) -> &'static str {
        last_result(self.last_success_ms, self.last_error_ms)
    }
}

/// Chronos's "last state": `fresh` before any result, else the newer of success and failure
/// (a tie counts as failure, as in Chronos).
pub fn last_result(last_success: Option<i64>, last_error: Option<i64>) -> &'static str {
    match (last_success, last_error) {
        (None, None) => "fresh",
        (_, None) => "success",
        (None, Some(_)) => "failure",
        (Some(success), Some(error)) if success > error => "success",
        _ => "failure",
    }
}

fn is_failing(last_success: Option<i64>, last_error: Option<i64>) -> bool {
    last_result(last_success, last_error) == "failure"
}

/// What a shard answers: its matching jobs' count and its best `offset + limit` rows, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobPage {
    pub total: usize,
    pub rows: Vec<JobRow>,
}

impl JobQuery {
    /// Whether a job passes the search and every filter.
    pub fn matches(&self, record: &JobRecord, run_state: RunState) -> bool {
        let (spec, state) = (&record.spec, &record.state);
        let found = self.q.is_empty()
            || [&spec.name, &spec.command, &spec.owner]
                .iter()
                .any(|field| contains_ignore_case(field, &self.q));
        found
            && self.filters.iter().all(|filter| match filter {
                JobFilter::Failing => is_failing(state.last_success_ms, state.last_error_ms),
                JobFilter::Running => run_state == RunState::Running,
                JobFilter::Disabled => spec.disabled,
            })
    }

    /// One shard's answer: filters `jobs`, then keeps the first `offset + limit` in order.
    /// Sorting references and building rows only for the kept ones keeps a large shard cheap.
    pub fn page<'a>(&self, jobs: impl Iterator<Item = (&'a JobRecord, RunState)>) -> JobPage {
        let mut matching: Vec<(&JobRecord, RunState)> = jobs
            .filter(|(record, run_state)| self.matches(record, *run_state))
            .collect();
        let total = matching.len();
        let keep = self.offset.saturating_add(self.limit).min(total);
        let order = |a: &(&JobRecord, RunState), b: &(&JobRecord, RunState)| {
            self.compare(&sort_fields(a.0), &sort_fields(b.0))
        };
        if keep < total && keep > 0 {
            matching.select_nth_unstable_by(keep - 1, order);
        }
        matching.truncate(keep);
        matching.sort_unstable_by(order);
        let rows = matching.iter().map(|(r, s)| JobRow::new(r, *s)).collect();
        JobPage { total, rows }
    }

    /// Cuts the page from every shard's answer.
    pub fn merge(&self, pages: Vec<JobPage>) -> JobPage {
        let total = pages.iter().map(|p| p.total).sum();
        let mut rows: Vec<JobRow> = pages.into_iter().flat_map(|p| p.rows).collect();
        rows.sort_unstable_by(|a, b| self.compare(&row_fields(a), &row_fields(b)));
        let rows = rows
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect();
        JobPage { total, rows }
    }

    /// Orders by the sort key (jobs without a value last, whichever the order), then by name.
    fn compare(&self, a: &SortFields, b: &SortFields) -> Ordering {
        let directed = |ordering: Ordering| match self.descending {
            true => ordering.reverse(),
            false => ordering,
        };
        let by_key = match self.sort {
            SortKey::Name => directed(a.name.cmp(b.name)),
            SortKey::Owner => directed(a.owner.cmp(b.owner)),
            SortKey::NextFire => present_first(a.next_fire, b.next_fire, directed),
            SortKey::LastSuccess => present_first(a.last_success, b.last_success, directed),
            SortKey::LastError => present_first(a.last_error, b.last_error, directed),
        };
        by_key.then_with(|| a.name.cmp(b.name))
    }
}

/// What a row is sorted by, borrowed from a record or a row alike.
struct SortFields<'a> {
    name: &'a str,
    owner: &'a str,
    next_fire: Option<i64>,
    last_success: Option<i64>,
    last_error: Option<i64>,
}

fn sort_fields(record: &JobRecord) -> SortFields<'_> {
    let scheduled = matches!(record.spec.trigger, Trigger::Schedule { .. });
    SortFields {
        name: &record.spec.name,
        owner: &record.spec.owner,
        next_fire: record
            .state
            .next_target_ms
            .filter(|_| scheduled && !record.spec.disabled),
        last_success: record.state.last_success_ms,
        last_error: record.state.last_error_ms,
    }
}

fn row_fields(row: &JobRow) -> SortFields<'_> {
    SortFields {
        name: &row.name,
        owner: &row.owner,
        next_fire: row.next_fire_ms,
        last_success: row.last_success_ms,
        last_error: row.last_error_ms,
    }
}

/// Values in the asked order, and absent ones after them in either order.
fn present_first(
    a: Option<i64>,
    b: Option<i64>,
    directed: impl Fn(Ordering) -> Ordering,
) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => directed(a.cmp(&b)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Substring search ignoring case, without allocating for ASCII needles: it runs once per
/// job per field for every keystroke in the search box.
pub fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if !needle.is_ascii() {
        return haystack.to_lowercase().contains(&needle.to_lowercase());
    }
    let (hay, needle) = (haystack.as_bytes(), needle.as_bytes());
    hay.windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dron_model::job::{JobKind, JobRequest};

    fn record(name: &str, owner: &str, next: Option<i64>, success: Option<i64>) -> JobRecord {
        let request: JobRequest = serde_json::from_value(serde_json::json!({
            "name": name, "command": format!("run {name}"), "schedule": "R//PT1H", "owner": owner,
        }))
        .unwrap();
        let spec = request
            .validate(JobKind::Scheduled, chrono::Utc::now())
            .unwrap();
        let mut record = JobRecord {
            spec,
            state: Default::default(),
        };
        record.state.next_target_ms = next;
        record.state.last_success_ms = success;
        record
    }

    fn names(page: &JobPage) -> Vec<&str> {
        page.rows.iter().map(|r| r.name.as_str()).collect()
    }

    fn shard_pages(query: &JobQuery, shards: &[Vec<JobRecord>]) -> JobPage {
        let pages = shards
            .iter()
            .map(|jobs| query.page(jobs.iter().map(|r| (r, RunState::Idle))))
            .collect();
        query.merge(pages)
    }

    #[test]
    fn pages_merged_from_shards_equal_one_sorted_list() {
        let shards: Vec<Vec<JobRecord>> = (0..3)
            .map(|shard| {
                (0..40)
                    .map(|i| {
                        let n = shard * 40 + i;
                        let next = (n % 7 != 0).then_some(1000 - n as i64);
                        record(&format!("job-{n:03}"), &format!("o{}", n % 5), next, None)
                    })
                    .collect()
            })
            .collect();
        let all: Vec<JobRecord> = shards.concat();
        for sort in SortKey::ALL {
            for descending in [false, true] {
                for offset in [0, 5, 37, 119, 200] {
                    let query = JobQuery {
                        sort,
                        descending,
                        offset,
                        limit: 10,
                        ..JobQuery::default()
                    };
                    let merged = shard_pages(&query, &shards);
                    let single = shard_pages(&query, std::slice::from_ref(&all));
                    assert_eq!(merged, single, "{sort:?} {descending} {offset}");
                    assert_eq!(merged.total, 120);
                }
            }
        }
    }

    #[test]
    fn jobs_without_a_value_sort_last_in_either_order() {
        let jobs = vec![
            record("a", "", None, None),
            record("b", "", Some(20), None),
            record("c", "", Some(10), None),
        ];
        let mut query = JobQuery {
            sort: SortKey::NextFire,
            ..JobQuery::default()
        };
        let shards = [jobs];
        assert_eq!(names(&shard_pages(&query, &shards)), ["c", "b", "a"]);
        query.descending = true;
        assert_eq!(names(&shard_pages(&query, &shards)), ["b", "c", "a"]);
    }

    #[test]
    fn search_and_filters_all_apply() {
        let mut failing = record("Nightly-Export", "data@example.com", None, Some(5));
        failing.state.last_error_ms = Some(6);
        let mut disabled = record("hourly", "ops@example.com", None, None);
        disabled.spec.disabled = true;
        let jobs = vec![failing, disabled, record("other", "", None, None)];
        let query = |q: &str, filters: Vec<JobFilter>| JobQuery {
            q: q.into(),
            filters,
            ..JobQuery::default()
        };
        let found = |q| shard_pages(&q, std::slice::from_ref(&jobs));
        assert_eq!(names(&found(query("EXPORT", vec![]))), ["Nightly-Export"]);
        assert_eq!(names(&found(query("ops@", vec![]))), ["hourly"]);
        assert_eq!(names(&found(query("run ", vec![]))).len(), 3);
        let failing_only = found(query("", vec![JobFilter::Failing]));
        assert_eq!(names(&failing_only), ["Nightly-Export"]);
        assert_eq!(failing_only.total, 1);
        assert_eq!(
            names(&found(query("", vec![JobFilter::Disabled]))),
            ["hourly"]
        );
        assert!(found(query("", vec![JobFilter::Running])).rows.is_empty());
        assert!(
            found(query("hourly", vec![JobFilter::Failing]))
                .rows
                .is_empty()
        );
    }

    #[test]
    fn case_is_ignored_for_ascii_and_other_needles() {
        assert!(contains_ignore_case("Nightly-ETL", "etl"));
        assert!(contains_ignore_case("ÉTÉ-job", "été"));
        assert!(!contains_ignore_case("abc", "abcd"));
        assert!(contains_ignore_case("abc", ""));
    }
}
