//! The checker's oracle: when a scheduled job is owed a run, worked out by the load test itself.
//! dron's own schedule code is what the load test examines, so it must not also be the judge: a
//! bug there (in the arithmetic, in time zones, in daylight saving) would then agree with itself
//! and never show as a missed target.
//!
//! The oracle covers what the workloads send: ISO 8601 repeating intervals `R[n]/start/period`
//! in UTC whose period has a fixed length (see `iso8601`). With the meaning Chronos gives them,
//! which dron follows:
//!
//! - target `k` is `start + k × period`, for `k = 0, 1, ...`: the start is the first target;
//! - `Rn` has exactly `n` targets (`R1` runs once, `R0` never), `R` has no end;
//! - with `scheduleTimeZone` given, the start's written offset is ignored and its wall clock read
//!   in that zone (Chronos: the zone takes precedence); without one, the offset fixes the instant
//!   and a start with no offset is UTC.
//!
//! Anything else is [`Unchecked`], with the reason: cron expressions, zones other than UTC (their
//! daylight saving is exactly what must not be taken on trust), months and years, a start left
//! empty (the server's "now", unknown here). The checker reports such jobs as not judged.

use chrono::{DateTime, NaiveDateTime};

use crate::iso8601::{DurationError, parse_duration_ms};

/// Zone names that are UTC by definition, whatever the time zone database says.
const UTC_NAMES: [&str; 4] = ["UTC", "Etc/UTC", "GMT", "Etc/GMT"];

/// A schedule the oracle can expand: `repetitions` targets (None: no end), `period_ms` apart,
/// the first at `start_ms` (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub start_ms: i64,
    pub period_ms: i64,
    pub repetitions: Option<u64>,
}

/// Why a schedule is not judged. Each message says what was met and what is covered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unchecked {
    #[error(
        "schedule '{0}' is not an ISO 8601 repeating interval (a cron expression?): only R[n]/start/period is computed"
    )]
    NotInterval(String),
    #[error("time zone {0}: only UTC schedules are computed")]
    Zone(String),
    #[error("schedule '{schedule}': {period}")]
    Period {
        schedule: String,
        period: DurationError,
    },
    #[error(
        "schedule '{0}' has no start (the server's time of reading): only a written start is computed"
    )]
    NoStart(String),
    #[error("schedule '{schedule}': {reason}")]
    Unreadable { schedule: String, reason: String },
}

impl Interval {
    /// Target `k`; None past the last one or beyond i64 milliseconds.
    pub fn target(&self, k: u64) -> Option<i64> {
        if self.repetitions.is_some_and(|count| k >= count) {
            return None;
        }
        let offset = i64::try_from(k).ok()?.checked_mul(self.period_ms)?;
        self.start_ms.checked_add(offset)
    }

    /// The smallest `k` whose target (ignoring the repetitions) is at or after `at`.
    fn first_index_at_or_after(&self, at: i64) -> u64 {
        if at <= self.start_ms {
            return 0;
        }
        let elapsed = i128::from(at) - i128::from(self.start_ms);
        let period = i128::from(self.period_ms);
        u64::try_from((elapsed + period - 1) / period).unwrap_or(u64::MAX)
    }

    /// The targets `t` with `from <= t <= to`, in order, at most `max` of them; the flag says
    /// that there were more (a runaway window must not exhaust memory).
    pub fn targets_between(&self, from: i64, to: i64, max: usize) -> (Vec<i64>, bool) {
        let mut targets = Vec::new();
        let mut k = self.first_index_at_or_after(from);
        while let Some(target) = self.target(k).filter(|&t| t <= to) {
            if targets.len() == max {
                return (targets, true);
            }
            targets.push(target);
            k += 1;
        }
        (targets, false)
    }
}

/// Reads a job's `schedule` and `scheduleTimeZone` (None or blank: none given).
pub fn parse_schedule(schedule: &str, zone: Option<&str>) -> Result<Interval, Unchecked> {
    let zone = zone.map(str::trim).filter(|zone| !zone.is_empty());
    if let Some(zone) = zone.filter(|zone| !UTC_NAMES.contains(zone)) {
        return Err(Unchecked::Zone(zone.to_string()));
    }
    let schedule = schedule.trim();
    let unreadable = |reason: &str| Unchecked::Unreadable {
        schedule: schedule.to_string(),
        reason: reason.to_string(),
    };
    let Some(after_r) = schedule.strip_prefix('R') else {
        return Err(Unchecked::NotInterval(schedule.to_string()));
    };
    let [count, start, period] = after_r.split('/').collect::<Vec<_>>()[..] else {
        return Err(unreadable("expected R[n]/start/period"));
    };
    let repetitions = match count {
        "" => None,
        digits if digits.bytes().all(|byte| byte.is_ascii_digit()) => Some(
            digits
                .parse()
                .map_err(|_| unreadable("too many repetitions"))?,
        ),
        _ => {
            return Err(unreadable(
                "the repetitions are not R or R followed by a number",
            ));
        }
    };
    if start.is_empty() {
        return Err(Unchecked::NoStart(schedule.to_string()));
    }
    let start_ms = parse_start(start, zone.is_some()).ok_or_else(|| {
        unreadable("the start is not a date-time such as 2026-01-01T00:00:00Z or 2026-01-01T00:00:00.5+01:00")
    })?;
    let period_ms = parse_duration_ms(period).map_err(|period| Unchecked::Period {
        schedule: schedule.to_string(),
        period,
    })?;
    Ok(Interval {
        start_ms,
        period_ms,
        repetitions,
    })
}

/// An RFC 3339 date-time, or one without an offset (then UTC). With a zone given (always UTC
/// here), a written offset is ignored: the wall clock counts, as in Chronos.
fn parse_start(text: &str, zone_given: bool) -> Option<i64> {
    let wall_clock = match DateTime::parse_from_rfc3339(text) {
        Ok(instant) if !zone_given => return Some(instant.timestamp_millis()),
        Ok(instant) => instant.naive_local(),
        Err(_) => NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").ok()?,
    };
    Some(wall_clock.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    fn all_targets(schedule: &str) -> Vec<i64> {
        let interval = parse_schedule(schedule, None).unwrap();
        interval.targets_between(i64::MIN, i64::MAX, 1_000).0
    }

    #[test]
    fn r3_every_ten_seconds_is_three_targets() {
        assert_eq!(
            all_targets("R3/2026-01-01T00:00:00Z/PT10S"),
            vec![
                ms("2026-01-01T00:00:00Z"),
                ms("2026-01-01T00:00:10Z"),
                ms("2026-01-01T00:00:20Z"),
            ]
        );
    }

    #[test]
    fn r1_is_once_and_r0_never() {
        assert_eq!(
            all_targets("R1/2026-03-01T00:00:00Z/P1D"),
            vec![ms("2026-03-01T00:00:00Z")]
        );
        assert_eq!(
            all_targets("R0/2026-03-01T00:00:00Z/P1D"),
            Vec::<i64>::new()
        );
    }

    #[test]
    fn an_endless_schedule_is_bounded_by_the_window_both_ends_included() {
        let interval = parse_schedule("R/2026-01-01T00:00:00Z/PT10S", None).unwrap();
        let (targets, more) =
            interval.targets_between(ms("2026-01-01T00:00:15Z"), ms("2026-01-01T00:00:40Z"), 100);
        assert_eq!(
            targets,
            vec![
                ms("2026-01-01T00:00:20Z"),
                ms("2026-01-01T00:00:30Z"),
                ms("2026-01-01T00:00:40Z"),
            ]
        );
        assert!(!more);
        // A window opening on a target includes it.
        let (targets, _) =
            interval.targets_between(ms("2026-01-01T00:00:20Z"), ms("2026-01-01T00:00:20Z"), 100);
        assert_eq!(targets, vec![ms("2026-01-01T00:00:20Z")]);
        // A window before the start begins at the start.
        let (targets, _) =
            interval.targets_between(ms("2025-12-31T00:00:00Z"), ms("2026-01-01T00:00:05Z"), 100);
        assert_eq!(targets, vec![ms("2026-01-01T00:00:00Z")]);
        // An empty window, and one wholly before the start.
        assert!(interval.targets_between(10, 5, 100).0.is_empty());
        assert!(interval.targets_between(0, 1_000, 100).0.is_empty());
    }

    #[test]
    fn a_finite_schedule_stops_inside_a_window() {
        let interval = parse_schedule("R3/2026-01-01T00:00:00Z/PT10S", None).unwrap();
        let (targets, more) =
            interval.targets_between(ms("2026-01-01T00:00:05Z"), ms("2026-01-01T01:00:00Z"), 100);
        assert_eq!(
            targets,
            vec![ms("2026-01-01T00:00:10Z"), ms("2026-01-01T00:00:20Z")]
        );
        assert!(!more);
    }

    #[test]
    fn too_many_targets_are_cut_and_flagged() {
        let interval = parse_schedule("R/2026-01-01T00:00:00Z/PT1S", None).unwrap();
        let (targets, more) = interval.targets_between(i64::MIN, i64::MAX, 3);
        assert_eq!(targets.len(), 3);
        assert!(more);
        // Exactly `max` targets is no cut.
        let finite = parse_schedule("R3/2026-01-01T00:00:00Z/PT1S", None).unwrap();
        assert!(!finite.targets_between(i64::MIN, i64::MAX, 3).1);
    }

    #[test]
    fn hours_minutes_seconds_and_days_are_exact() {
        let targets = all_targets("R3/2026-01-01T00:00:00Z/PT1H2M3S");
        assert_eq!(
            targets,
            vec![
                ms("2026-01-01T00:00:00Z"),
                ms("2026-01-01T01:02:03Z"),
                ms("2026-01-01T02:04:06Z"),
            ]
        );
        // UTC days are 24 hours, across a month's end and a leap day.
        assert_eq!(
            all_targets("R3/2028-02-28T12:00:00Z/P1D"),
            vec![
                ms("2028-02-28T12:00:00Z"),
                ms("2028-02-29T12:00:00Z"),
                ms("2028-03-01T12:00:00Z"),
            ]
        );
        assert_eq!(
            all_targets("R2/2026-01-01T00:00:00Z/P1DT1H"),
            vec![ms("2026-01-01T00:00:00Z"), ms("2026-01-02T01:00:00Z")]
        );
        assert_eq!(
            all_targets("R2/2026-01-01T00:00:00Z/P1W"),
            vec![ms("2026-01-01T00:00:00Z"), ms("2026-01-08T00:00:00Z")]
        );
    }

    #[test]
    fn milliseconds_of_the_start_and_the_period_are_kept() {
        assert_eq!(
            all_targets("R3/2026-01-01T00:00:00.250Z/PT0.5S"),
            vec![
                ms("2026-01-01T00:00:00.250Z"),
                ms("2026-01-01T00:00:00.750Z"),
                ms("2026-01-01T00:00:01.250Z"),
            ]
        );
    }

    #[test]
    fn without_a_zone_the_offset_fixes_the_instant() {
        assert_eq!(
            all_targets("R1/2026-03-01T02:30:00+01:00/PT1S"),
            vec![ms("2026-03-01T01:30:00Z")]
        );
        // No offset at all: UTC.
        assert_eq!(
            all_targets("R1/2026-03-01T02:30:00/PT1S"),
            vec![ms("2026-03-01T02:30:00Z")]
        );
    }

    #[test]
    fn a_utc_zone_reads_the_wall_clock_and_ignores_the_offset() {
        for zone in ["UTC", " Etc/UTC ", "GMT"] {
            let interval = parse_schedule("R1/2026-03-01T02:30:00+01:00/PT1S", Some(zone));
            assert_eq!(
                interval.map(|i| i.start_ms),
                Ok(ms("2026-03-01T02:30:00Z")),
                "{zone}"
            );
        }
        // A blank zone is no zone.
        let blank = parse_schedule("R1/2026-03-01T02:30:00+01:00/PT1S", Some(" "));
        assert_eq!(blank.map(|i| i.start_ms), Ok(ms("2026-03-01T01:30:00Z")));
    }

    #[test]
    fn what_it_cannot_compute_is_named_unchecked() {
        let every_second = "R/2026-01-01T00:00:00Z/PT1S";
        assert_eq!(
            parse_schedule(every_second, Some("Europe/Paris")),
            Err(Unchecked::Zone("Europe/Paris".into()))
        );
        assert_eq!(
            parse_schedule("* * * * * *", None),
            Err(Unchecked::NotInterval("* * * * * *".into()))
        );
        assert_eq!(
            parse_schedule("R/2026-01-31T00:00:00Z/P1M", None),
            Err(Unchecked::Period {
                schedule: "R/2026-01-31T00:00:00Z/P1M".into(),
                period: DurationError::Calendar("P1M".into()),
            })
        );
        assert!(matches!(
            parse_schedule("R/2026-01-01T00:00:00Z/P1Y", None),
            Err(Unchecked::Period { .. })
        ));
        assert_eq!(
            parse_schedule("R//PT1S", None),
            Err(Unchecked::NoStart("R//PT1S".into()))
        );
        for unreadable in [
            "R/2026-01-01T00:00:00Z",
            "R/a/b/c",
            "Rx/2026-01-01T00:00:00Z/PT1S",
            "R-1/2026-01-01T00:00:00Z/PT1S",
            "R/2026-01-01/PT1S",
            "R/2026-13-01T00:00:00Z/PT1S",
            "R/2026-01-01T00:00:00Z/PT0S",
            "R99999999999999999999/2026-01-01T00:00:00Z/PT1S",
        ] {
            assert!(
                matches!(
                    parse_schedule(unreadable, None),
                    Err(Unchecked::Unreadable { .. } | Unchecked::Period { .. })
                ),
                "{unreadable}: {:?}",
                parse_schedule(unreadable, None)
            );
        }
    }

    #[test]
    fn unchecked_messages_say_what_is_covered() {
        let zone = parse_schedule("R/2026-01-01T00:00:00Z/PT1S", Some("America/New_York"));
        assert_eq!(
            zone.unwrap_err().to_string(),
            "time zone America/New_York: only UTC schedules are computed"
        );
        let cron = parse_schedule("30 2 * * *", None).unwrap_err().to_string();
        assert!(
            cron.contains("'30 2 * * *'") && cron.contains("cron"),
            "{cron}"
        );
        let month = parse_schedule("R/2026-01-31T00:00:00Z/P1M", None)
            .unwrap_err()
            .to_string();
        assert!(
            month.contains("P1M") && month.contains("calendar"),
            "{month}"
        );
    }

    #[test]
    fn far_targets_end_instead_of_overflowing() {
        let interval = parse_schedule("R/2026-01-01T00:00:00Z/P999999W", None).unwrap();
        let (targets, more) = interval.targets_between(i64::MIN, i64::MAX, 1_000_000);
        assert!(!more);
        assert!(targets.len() < 1_000_000);
        assert!(targets.windows(2).all(|pair| pair[0] < pair[1]));
    }
}
