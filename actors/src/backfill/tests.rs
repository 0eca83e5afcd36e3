use super::*;
use dron_model::instance::{InstanceRecord, RunCause};

const DAY: i64 = 86_400_000;
const NOV_10: i64 = 1_794_268_800_000;

fn request(from_ms: i64, to_ms: i64) -> BackfillRequest {
    BackfillRequest {
        job: "daily".into(),
        from_ms,
        to_ms,
        downstream: false,
        parallel: 1,
        rerun_succeeded: false,
    }
}

fn daily() -> Schedule {
    let epoch = chrono::DateTime::UNIX_EPOCH;
    Schedule::parse("R/2026-11-01T00:00:00Z/P1D", None, epoch).unwrap()
}

#[test]
fn a_range_is_checked_against_the_schedule() {
    let schedule = daily();
    let ten_days = request(NOV_10, NOV_10 + 9 * DAY);
    assert_eq!(
        check_range(&ten_days, Some(&schedule), 10),
        Ok((NOV_10, 10))
    );
    let inverted = check_range(&request(NOV_10 + DAY, NOV_10), Some(&schedule), 10);
    assert!(matches!(inverted, Err(e) if e.field == "to" && e.message.contains("inverted")));
    let empty = check_range(&request(NOV_10 + 1, NOV_10 + 2), Some(&schedule), 10);
    assert!(matches!(empty, Err(e) if e.field == "from" && e.message.contains("empty")));
    let too_many = check_range(&request(NOV_10, NOV_10 + 10 * DAY), Some(&schedule), 10);
    assert!(matches!(too_many, Err(e) if e.field == "to" && e.message.contains("more than 10")));
    let unscheduled = check_range(&ten_days, None, 10);
    assert!(matches!(unscheduled, Err(e) if e.field == "job"));
    let mut parallel = ten_days.clone();
    parallel.parallel = 0;
    assert!(matches!(check_range(&parallel, Some(&schedule), 10), Err(e) if e.field == "parallel"));
}

#[test]
fn only_the_ranges_scheduled_successes_are_left_alone() {
    let run = |target, state| {
        let mut run = InstanceRecord::new("daily", target, RunCause::Schedule, target);
        run.state = state;
        HistoryEntry::Run(run)
    };
    let history = vec![
        run(NOV_10, InstanceState::Succeeded),
        run(NOV_10 + DAY, InstanceState::Failed),
        run(NOV_10 + 2 * DAY + 5, InstanceState::Succeeded), // a manual run
        run(NOV_10 + 20 * DAY, InstanceState::Succeeded),    // out of the range
    ];
    let left = succeeded_targets(&history, Some(&daily()), NOV_10, NOV_10 + 9 * DAY);
    assert_eq!(left, [NOV_10]);
}

#[test]
fn downstream_jobs_come_after_their_upstream_and_a_cycle_is_refused() {
    let upstream = BTreeMap::from([
        ("root".to_string(), vec![]),
        ("b".to_string(), vec!["a".to_string()]),
        ("a".to_string(), vec!["root".to_string()]),
    ]);
    assert_eq!(
        order_downstream("root", &upstream).unwrap(),
        ["root", "a", "b"]
    );
    let mut cycle = upstream.clone();
    cycle.insert("a".into(), vec!["root".into(), "b".into()]);
    let refused = order_downstream("root", &cycle).unwrap_err();
    assert_eq!(refused.field, "downstream");
    assert!(refused.message.contains("a, b"), "{}", refused.message);
}

fn part(job: &str, upstream: &[&str], targets: &[(i64, TargetState)]) -> BackfillPart {
    BackfillPart {
        plan: BackfillPlan {
            id: "bf-1".into(),
            job: job.into(),
            root: "root".into(),
            upstream: upstream.iter().map(|u| u.to_string()).collect(),
            from_ms: 0,
            to_ms: 9,
            parallel: 1,
            rerun_succeeded: true,
            downstream: true,
            next_ms: None,
            total: 4,
            created_ms: 0,
            cancelled: false,
            first_attempt: 1,
        },
        targets: targets.iter().cloned().collect(),
    }
}

#[test]
fn a_summary_counts_downstream_times_an_upstream_failed_apart() {
    use TargetState::*;
    let parts = vec![
        part("b", &["a"], &[(1, Succeeded)]),
        part("root", &[], &[(1, Succeeded), (2, Failed), (3, Running)]),
        part("a", &["root"], &[(1, Succeeded)]),
    ];
    let summary = &summarize(parts)[0];
    assert_eq!(summary.state, "running");
    let jobs: Vec<&str> = summary.jobs.iter().map(|j| j.job.as_str()).collect();
    assert_eq!(jobs, ["root", "a", "b"]);
    let root = &summary.jobs[0];
    let counts = root.counts;
    let progress = (
        counts.succeeded,
        counts.failed,
        counts.running,
        counts.waiting,
    );
    assert_eq!(progress, (1, 1, 1, 1));
    assert_eq!(root.failed_targets, [2]);
    for downstream in &summary.jobs[1..] {
        assert_eq!(
            downstream.counts.upstream_failed, 1,
            "day 2, through the root"
        );
        assert_eq!(downstream.counts.waiting, 2, "days 3 and 4");
    }
    let all = summary.counts;
    assert_eq!((all.total, all.succeeded, all.waiting), (12, 3, 5));
}

#[test]
fn a_backfill_is_finished_once_nothing_waits_or_runs_and_hidden_without_its_root() {
    use TargetState::*;
    let done = [(1, Succeeded), (2, Failed), (3, Succeeded), (4, Succeeded)];
    let parts = vec![part("root", &[], &done), part("a", &["root"], &done)];
    assert_eq!(summarize(parts)[0].state, "finished");
    let mut cancelled = part("root", &[], &[(1, Running)]);
    cancelled.plan.cancelled = true;
    assert_eq!(summarize(vec![cancelled])[0].state, "cancelled");
    assert!(summarize(vec![part("a", &["root"], &done)]).is_empty());
}
