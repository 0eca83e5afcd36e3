//! When a job runs: Chronos's ISO 8601 repeating intervals and cron expressions, in a time zone.
//!
//! A schedule is a set of *targets*: the instants at which a job should run. Two syntaxes
//! describe it:
//!
//! - ISO 8601 repeating intervals as Chronos accepts them, `R[n]/[start]/period`. Target `k` is
//!   `start + k × period`, anchored at the start rather than accumulated: the period's date part
//!   (years, months, weeks, days) is calendar arithmetic on the start's wall clock in the time
//!   zone (Jan 31 + P1M is Feb 28, + P2M is Mar 31), and its time part (hours, minutes, seconds)
//!   is then added as an exact duration.
//! - Cron expressions (5 fields `m h dom mon dow`, or 6 with seconds first), matched against the
//!   wall clock of the time zone by croner.
//!
//! Both map wall-clock times to instants with the same daylight-saving rule: a wall-clock time in
//! a spring-forward gap runs at the transition instant (the first instant whose wall clock is at
//! or past it), and a wall-clock time repeated by a fall-back overlap runs once, at its earlier
//! instant. Targets keep millisecond precision.

use std::fmt::Write as _;

use chrono::{
    DateTime, Datelike, Days, FixedOffset, LocalResult, Months, NaiveDate, NaiveDateTime,
    NaiveTime, Offset, TimeDelta, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Why a schedule or its time zone was rejected. Messages quote the user's input (shortened when
/// long) and say what was expected.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ScheduleError {
    #[error(
        "schedule is empty: expected an ISO 8601 repeating interval such as R/2026-03-01T02:30:00Z/P1D, or a cron expression"
    )]
    Empty,
    #[error(
        "schedule '{0}' is not an ISO 8601 repeating interval: expected R[n]/[start]/period, such as R/2026-03-01T02:30:00Z/P1D"
    )]
    NotRepeatingInterval(String),
    #[error(
        "repetition count '{0}' is invalid: expected R (repeat forever) or R followed by a count, such as R5"
    )]
    InvalidRepetitions(String),
    #[error(
        "start '{0}' is not an ISO 8601 date-time: expected a date and time such as 2026-03-01T02:30:00Z, 2026-03-01T02:30:00.500+01:00 or 2026-03-01T02:30:00"
    )]
    InvalidStart(String),
    #[error(
        "period '{0}' is not an ISO 8601 duration: expected P[nY][nM][nW][nD][T[nH][nM][nS]], such as P1D, PT30M or PT0.5S"
    )]
    InvalidPeriod(String),
    #[error("period '{0}' must be longer than zero")]
    NonPositivePeriod(String),
    #[error("period '{period}' is not supported: {reason}")]
    UnsupportedPeriod { period: String, reason: String },
    #[error("cron expression '{expression}' is invalid: {reason}")]
    InvalidCron { expression: String, reason: String },
    #[error("cron expression '{0}' never fires")]
    CronNeverFires(String),
    #[error(
        "unknown time zone '{0}': expected an IANA time zone name such as Europe/Berlin or America/New_York"
    )]
    UnknownTimeZone(String),
}

impl ScheduleError {
    /// The JSON field of a Chronos job definition that holds the faulty value.
    pub fn field(&self) -> &'static str {
        match self {
            ScheduleError::UnknownTimeZone(_) => "scheduleTimeZone",
            _ => "schedule",
        }
    }
}

/// A parsed schedule: what runs when, in which time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    rule: Rule,
    time_zone: Tz,
}

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    Interval(RepeatingInterval),
    Cron(CronRule),
}

impl Schedule {
    /// Parses a Chronos schedule (ISO 8601 repeating interval `R[n]/[start]/period`) or a cron
    /// expression (5 fields `m h dom mon dow`, or 6 with seconds first), evaluated in `time_zone`
    /// (an IANA name; None or "" means UTC). An empty start means `now`.
    pub fn parse(
        text: &str,
        time_zone: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Schedule, ScheduleError> {
        let zone_name = time_zone.map(str::trim).filter(|name| !name.is_empty());
        let time_zone = match zone_name {
            None => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| ScheduleError::UnknownTimeZone(quote(name)))?,
        };
        let now = truncate_to_millis(now);
        let text = text.trim();
        if text.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let rule = if text.starts_with(['R', 'r']) {
            Rule::Interval(RepeatingInterval::parse(
                text,
                time_zone,
                zone_name.is_some(),
                now,
            )?)
        } else {
            Rule::Cron(CronRule::parse(text, time_zone, now)?)
        };
        Ok(Schedule { rule, time_zone })
    }

    /// The canonical string to store. Re-parsing it with the same time zone gives the same
    /// targets: an ISO 8601 start is made explicit (`R{n}/{start}/{period}`), written as an
    /// RFC 3339 UTC instant with `Z` when the zone is UTC, and as the anchor's wall-clock time
    /// without an offset otherwise (the zone's wall clock is what a zoned schedule keeps, and an
    /// anchor in a spring-forward gap has no offset to write). Milliseconds appear when non-zero.
    /// A cron expression is kept as given, trimmed.
    pub fn canonical(&self) -> String {
        match &self.rule {
            Rule::Interval(interval) => interval.canonical(self.time_zone),
            Rule::Cron(cron) => cron.expression.clone(),
        }
    }

    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// The first target of the schedule that is >= `at`. None when the schedule is exhausted (Rn).
    pub fn first_at_or_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.rule {
            Rule::Interval(interval) => interval.first_at_or_after(at, self.time_zone),
            Rule::Cron(cron) => cron.first_at_or_after(at, self.time_zone),
        }
    }

    /// The first target strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Targets and `after` are whole nanoseconds, so "> after" is ">= after + 1 ns".
        self.first_at_or_after(after.checked_add_signed(TimeDelta::nanoseconds(1))?)
    }

    /// How many targets t satisfy from <= t < to, counting at most `cap` (returns min(count, cap)).
    /// Constant time for ISO periods without a date part; logarithmic for calendar periods; cron
    /// schedules are walked, at most `cap` targets.
    pub fn count_between(&self, from: DateTime<Utc>, to: DateTime<Utc>, cap: u64) -> u64 {
        if from >= to || cap == 0 {
            return 0;
        }
        match &self.rule {
            Rule::Interval(interval) => interval.count_between(from, to, cap, self.time_zone),
            Rule::Cron(_) => self.count_by_walking(from, to, cap),
        }
    }

    /// A typical interval between targets (for ISO: the period's nominal length, a year being
    /// 365.2425 days and a month a twelfth of it; for cron: the gap between the next two fires
    /// after the `now` given to [`Schedule::parse`]), or None for a schedule with a single target.
    pub fn nominal_period(&self) -> Option<TimeDelta> {
        match &self.rule {
            Rule::Interval(interval) => interval.nominal_period(),
            Rule::Cron(cron) => cron.nominal_period,
        }
    }

    /// The next `n` targets >= `from`.
    pub fn upcoming(&self, from: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        // `n` may come from a request: do not reserve memory for targets that may not exist.
        let mut targets = Vec::with_capacity(n.min(1024));
        let mut next = self.first_at_or_after(from);
        while let Some(target) = next {
            if targets.len() >= n {
                break;
            }
            targets.push(target);
            next = self.next_after(target);
        }
        targets
    }

    fn count_by_walking(&self, from: DateTime<Utc>, to: DateTime<Utc>, cap: u64) -> u64 {
        let mut count = 0;
        let mut next = self.first_at_or_after(from);
        while let Some(target) = next {
            if target >= to || count >= cap {
                break;
            }
            count += 1;
            next = self.next_after(target);
        }
        count
    }
}

// ---------------------------------------------------------------------------------------------
// ISO 8601 repeating intervals
// ---------------------------------------------------------------------------------------------

const MILLIS_PER_DAY: i64 = 86_400_000;
/// A Gregorian year on average (365.2425 days), the nominal length of P1Y.
const MILLIS_PER_NOMINAL_YEAR: i64 = 31_556_952_000;
/// Periods longer than this are surely mistakes, and refusing them keeps all arithmetic in range.
const MAX_PERIOD_YEARS: u64 = 10_000;
/// More than any difference between two UTC offsets of one zone plus the longest gap (Samoa
/// skipped a whole day in 2011, changing its offset by 24 hours): how far a calendar target can
/// drift from the start plus k nominal periods. Used to bracket the index search.
const OFFSET_SLACK_MILLIS: i128 = 3 * MILLIS_PER_DAY as i128;
/// Above this many indices, `count_between` does not walk a date-only period to drop duplicate
/// targets (which only a gap of at least a day can create) and returns the index count.
const MAX_DEDUPLICATION_WALK: u64 = 10_000;

#[derive(Debug, Clone, PartialEq)]
struct RepeatingInterval {
    /// None repeats forever.
    repetitions: Option<u64>,
    /// The anchor's wall-clock time in the schedule's zone, to the millisecond.
    start_local: NaiveDateTime,
    /// Target 0: `start_local` resolved in the zone.
    start: DateTime<Utc>,
    period: Period,
}

impl RepeatingInterval {
    fn parse(
        text: &str,
        time_zone: Tz,
        zone_given: bool,
        now: DateTime<Utc>,
    ) -> Result<Self, ScheduleError> {
        let parts: Vec<&str> = text.split('/').collect();
        let [repetitions, start, period] = parts.as_slice() else {
            return Err(ScheduleError::NotRepeatingInterval(quote(text)));
        };
        let repetitions = parse_repetitions(repetitions.trim())?;
        let period = Period::parse(period.trim())?;
        let start_local = match start.trim() {
            "" => wall_clock_of(time_zone, now)
                .ok_or_else(|| ScheduleError::InvalidStart(quote(start)))?,
            start => {
                let (wall_clock, offset) = parse_start(start)?;
                match offset {
                    // Chronos keeps the wall clock when a zone is given, ignoring the offset.
                    Some(offset) if !zone_given => wall_clock
                        .checked_sub_offset(offset)
                        .ok_or_else(|| ScheduleError::InvalidStart(quote(start)))?,
                    _ => wall_clock,
                }
            }
        };
        let start_local = truncate_naive_to_millis(start_local);
        let start = resolve_wall_clock(time_zone, start_local)
            .ok_or_else(|| ScheduleError::InvalidStart(quote(start)))?;
        Ok(RepeatingInterval {
            repetitions,
            start_local,
            start,
            period,
        })
    }

    fn canonical(&self, time_zone: Tz) -> String {
        let mut text = String::from("R");
        if let Some(count) = self.repetitions {
            let _ = write!(text, "{count}");
        }
        text.push('/');
        text.push_str(&format_wall_clock(self.start_local));
        if time_zone == Tz::UTC {
            text.push('Z');
        }
        text.push('/');
        text.push_str(&self.period.text);
        text
    }

    fn nominal_period(&self) -> Option<TimeDelta> {
        match self.repetitions {
            Some(0 | 1) => None,
            _ => Some(TimeDelta::milliseconds(self.period.nominal_millis())),
        }
    }

    /// Target `index`, ignoring the repetition count. None when it lies beyond chrono's range.
    fn target(&self, index: u64, time_zone: Tz) -> Option<DateTime<Utc>> {
        let base = if self.period.has_date_part() {
            let wall_clock = self.period.add_date_part(self.start_local, index)?;
            resolve_wall_clock(time_zone, wall_clock)?
        } else {
            self.start
        };
        let time_millis = i64::try_from(index)
            .ok()?
            .checked_mul(self.period.time_millis)?;
        base.checked_add_signed(TimeDelta::try_milliseconds(time_millis)?)
    }

    /// The smallest index whose target is >= `at` (ignoring the repetition count). Targets past
    /// chrono's range count as "after everything".
    fn first_index_at_or_after(&self, at: DateTime<Utc>, time_zone: Tz) -> u64 {
        if at <= self.start {
            return 0;
        }
        if self.period.has_date_part() {
            self.search_calendar_index(at, time_zone)
        } else {
            self.fixed_index(at)
        }
    }

    /// For a pure time period the targets are evenly spaced: the index is a ceiling division.
    fn fixed_index(&self, at: DateTime<Utc>) -> u64 {
        let elapsed = at - self.start;
        let elapsed_nanos =
            i128::from(elapsed.num_seconds()) * 1_000_000_000 + i128::from(elapsed.subsec_nanos());
        let step_nanos = i128::from(self.period.time_millis) * 1_000_000;
        let index = (elapsed_nanos + step_nanos - 1).div_euclid(step_nanos);
        u64::try_from(index).unwrap_or(u64::MAX)
    }

    /// For a calendar period, brackets the index between an under- and an over-estimate derived
    /// from the shortest and longest possible period lengths, then bisects (targets never
    /// decrease with the index). Called only when `at` > target 0.
    fn search_calendar_index(&self, at: DateTime<Utc>, time_zone: Tz) -> u64 {
        let reaches = |index: u64| self.target(index, time_zone).is_none_or(|t| t >= at);
        let elapsed = i128::from((at - self.start).num_milliseconds());
        let (shortest, longest) = self.period.millis_range();
        let to_index = |millis: i128| u64::try_from(millis.max(0)).unwrap_or(u64::MAX);

        let mut below = to_index((elapsed - OFFSET_SLACK_MILLIS) / longest);
        if below > 0 && reaches(below) {
            below = 0; // The estimate was wrong; target 0 is before `at`.
        }
        let mut above = to_index((elapsed + OFFSET_SLACK_MILLIS) / shortest + 1).max(below + 1);
        while !reaches(above) {
            if above == u64::MAX {
                return u64::MAX;
            }
            below = above;
            above = above.saturating_mul(2);
        }
        // Invariant: target(below) < at <= target(above).
        while above - below > 1 {
            let middle = below + (above - below) / 2;
            if reaches(middle) {
                above = middle;
            } else {
                below = middle;
            }
        }
        above
    }

    fn first_at_or_after(&self, at: DateTime<Utc>, time_zone: Tz) -> Option<DateTime<Utc>> {
        let index = self.first_index_at_or_after(at, time_zone);
        if self.repetitions.is_some_and(|count| index >= count) {
            return None;
        }
        self.target(index, time_zone)
    }

    fn count_between(&self, from: DateTime<Utc>, to: DateTime<Utc>, cap: u64, tz: Tz) -> u64 {
        let limit = self.repetitions.unwrap_or(u64::MAX);
        let first = self.first_index_at_or_after(from, tz).min(limit);
        let end = self.first_index_at_or_after(to, tz).min(limit);
        let indices = end.saturating_sub(first);
        // Targets strictly increase with the index unless the period is date-only and two of
        // its wall-clock times fall into one gap (possible only for a day-long gap, as Samoa's in
        // 2011). Such duplicates are one target, so walk short ranges to drop them.
        if self.period.time_millis > 0 || indices > MAX_DEDUPLICATION_WALK {
            return indices.min(cap);
        }
        let mut count = 0;
        let mut previous = None;
        for index in first..end {
            if count >= cap {
                break;
            }
            let target = self.target(index, tz);
            if target != previous {
                count += 1;
                previous = target;
            }
        }
        count
    }
}

fn parse_repetitions(text: &str) -> Result<Option<u64>, ScheduleError> {
    let invalid = || ScheduleError::InvalidRepetitions(quote(text));
    let digits = text.strip_prefix(['R', 'r']).ok_or_else(invalid)?;
    if digits.is_empty() {
        return Ok(None);
    }
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(invalid());
    }
    digits.parse::<u64>().map(Some).map_err(|_| invalid())
}

/// Parses an ISO 8601 date-time: `YYYY-MM-DD`, optionally `THH:MM[:SS[.fff]]`, optionally `Z` or
/// an offset `±HH:MM`, `±HHMM`, `±HH`. Returns the wall-clock time and the offset, if any.
fn parse_start(text: &str) -> Result<(NaiveDateTime, Option<FixedOffset>), ScheduleError> {
    let invalid = || ScheduleError::InvalidStart(quote(text));
    // ISO 8601 allows a comma as the decimal sign; chrono reads a point.
    let normalized = text.to_ascii_uppercase().replace(',', ".");
    let (wall_clock, offset) = split_offset(&normalized).ok_or_else(invalid)?;
    let wall_clock = parse_wall_clock(wall_clock).ok_or_else(invalid)?;
    Ok((wall_clock, offset))
}

fn split_offset(text: &str) -> Option<(&str, Option<FixedOffset>)> {
    if let Some(wall_clock) = text.strip_suffix('Z') {
        return Some((wall_clock, FixedOffset::east_opt(0)));
    }
    // An offset sign can only follow the time; the date has '-' of its own.
    let Some(time_at) = text.find('T') else {
        return Some((text, None));
    };
    let Some(sign_at) = text[time_at..].rfind(['+', '-']).map(|at| at + time_at) else {
        return Some((text, None));
    };
    let offset = parse_offset(&text[sign_at..])?;
    Some((&text[..sign_at], Some(offset)))
}

/// Parses `±HH:MM`, `±HHMM` or `±HH`.
fn parse_offset(text: &str) -> Option<FixedOffset> {
    let (sign, digits) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let digits = digits.replacen(':', "", 1);
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) || ![2, 4].contains(&digits.len()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = if digits.len() == 4 {
        digits[2..].parse().ok()?
    } else {
        0
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

fn parse_wall_clock(text: &str) -> Option<NaiveDateTime> {
    const FORMATS: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"];
    let wall_clock = plain_wall_clock(text)
        .or_else(|| {
            FORMATS
                .iter()
                .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        })
        .or_else(|| {
            let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
            date.and_hms_opt(0, 0, 0)
        })?;
    // Four-digit years keep the canonical form plain RFC 3339; chrono encodes a leap second as
    // nanoseconds >= 1e9, which no time zone database resolves.
    let year = wall_clock.year();
    let plain = (1..=9999).contains(&year) && wall_clock.nanosecond() < 1_000_000_000;
    plain.then_some(wall_clock)
}

/// `YYYY-MM-DDTHH:MM:SS` read digit by digit: what every stored schedule holds (its canonical
/// form), parsed on every job write. chrono's `parse_from_str` interprets its format string
/// each time, a tenth of a create's instructions (docs/benchmarks.md). Anything else (another
/// shape, a date or time out of range, a leap second) is left to chrono's formats.
fn plain_wall_clock(text: &str) -> Option<NaiveDateTime> {
    let bytes = text.as_bytes();
    if bytes.len() != 19 {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u32> {
        bytes[from..to].iter().try_fold(0u32, |value, byte| {
            byte.is_ascii_digit()
                .then(|| value * 10 + u32::from(byte - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if !separators.iter().all(|(at, byte)| bytes[*at] == *byte) {
        return None;
    }
    let year = i32::try_from(number(0, 4)?).ok()?;
    NaiveDate::from_ymd_opt(year, number(5, 7)?, number(8, 10)?)?.and_hms_opt(
        number(11, 13)?,
        number(14, 16)?,
        number(17, 19)?,
    )
}

fn format_wall_clock(wall_clock: NaiveDateTime) -> String {
    // A leap second (nanoseconds >= 1e9) is written `:60` by chrono.
    let plain = (0..=9999).contains(&wall_clock.year()) && wall_clock.nanosecond() < 1_000_000_000;
    let mut text = if plain {
        // As chrono's `%Y-%m-%dT%H:%M:%S` writes these years, without interpreting a format.
        let (date, time) = (wall_clock.date(), wall_clock.time());
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            date.year(),
            date.month(),
            date.day(),
            time.hour(),
            time.minute(),
            time.second()
        )
    } else {
        wall_clock.format("%Y-%m-%dT%H:%M:%S").to_string()
    };
    let millis = wall_clock.nanosecond() / 1_000_000;
    if millis != 0 {
        let _ = write!(text, ".{millis:03}");
    }
    text
}

/// Parses an ISO 8601 duration of fixed length (`PT60S`, `P1DT2H`, `PT0.5S`) into
/// milliseconds, for settings such as a job's epsilon. Days count as 24 hours; years and
/// months are refused, since their length depends on the calendar.
pub fn parse_fixed_duration_ms(text: &str) -> Result<i64, ScheduleError> {
    let period = Period::parse(text.trim())?;
    if period.months != 0 {
        let reason = "years and months have no fixed length here".to_owned();
        return Err(ScheduleError::UnsupportedPeriod {
            period: quote(text),
            reason,
        });
    }
    Ok(i64::from(period.days) * 86_400_000 + period.time_millis)
}

/// An ISO 8601 duration, split the way targets use it.
#[derive(Debug, Clone, PartialEq)]
struct Period {
    /// Calendar months, years included (P1Y2M is 14).
    months: u32,
    /// Calendar days, weeks included (P1W2D is 9).
    days: u32,
    /// The exact time part (hours, minutes, seconds) in milliseconds.
    time_millis: i64,
    /// How the period was written, upper-cased: the canonical form keeps it.
    text: String,
    /// The nominal length, for `nominal_period`.
    nominal_millis: i64,
}

/// One `<number><designator>` of a duration; `fraction` holds the digits after the decimal sign.
struct DurationPart<'a> {
    value: u64,
    fraction: &'a str,
    designator: u8,
}

impl Period {
    fn parse(text: &str) -> Result<Period, ScheduleError> {
        let upper = text.to_ascii_uppercase();
        let invalid = || ScheduleError::InvalidPeriod(quote(text));
        if upper.starts_with('-') || upper.starts_with("P-") {
            return Err(ScheduleError::NonPositivePeriod(quote(text)));
        }
        let body = upper.strip_prefix('P').ok_or_else(invalid)?;
        let (date, time) = match body.split_once('T') {
            Some((date, time)) => (date, Some(time)),
            None => (body, None),
        };
        let date_parts = parse_duration_parts(date, b"YMWD").ok_or_else(invalid)?;
        let time_parts = parse_duration_parts(time.unwrap_or(""), b"HMS").ok_or_else(invalid)?;
        // "P", "PT" and "P1DT" designate nothing.
        if (date_parts.is_empty() && time_parts.is_empty()) || time == Some("") {
            return Err(invalid());
        }
        let period = Period::from_parts(&date_parts, &time_parts, text)?;
        if period.months == 0 && period.days == 0 && period.time_millis == 0 {
            return Err(ScheduleError::NonPositivePeriod(quote(text)));
        }
        Ok(Period {
            text: upper,
            ..period
        })
    }

    fn from_parts(
        date_parts: &[DurationPart],
        time_parts: &[DurationPart],
        text: &str,
    ) -> Result<Period, ScheduleError> {
        let unsupported = |reason: &str| ScheduleError::UnsupportedPeriod {
            period: quote(text),
            reason: reason.to_owned(),
        };
        let too_long = || unsupported("longer than 10000 years");
        let value_of = |parts: &[DurationPart], designator: u8| -> u64 {
            parts
                .iter()
                .find(|part| part.designator == designator)
                .map_or(0, |part| part.value)
        };
        if date_parts.iter().any(|part| !part.fraction.is_empty()) {
            return Err(unsupported(
                "fractions are supported on hours, minutes and seconds only",
            ));
        }
        if time_parts
            .iter()
            .rev()
            .skip(1)
            .any(|part| !part.fraction.is_empty())
        {
            return Err(unsupported("only the last number may have a fraction"));
        }
        let years = value_of(date_parts, b'Y');
        let months = value_of(date_parts, b'M');
        let weeks = value_of(date_parts, b'W');
        let days = value_of(date_parts, b'D');
        let limit_days = MAX_PERIOD_YEARS * 366;
        let total_months = years
            .checked_mul(12)
            .and_then(|m| m.checked_add(months))
            .filter(|&m| m <= MAX_PERIOD_YEARS * 12)
            .ok_or_else(too_long)?;
        let total_days = weeks
            .checked_mul(7)
            .and_then(|d| d.checked_add(days))
            .filter(|&d| d <= limit_days)
            .ok_or_else(too_long)?;
        let mut time_millis: u64 = 0;
        for part in time_parts {
            let unit_millis: u64 = match part.designator {
                b'H' => 3_600_000,
                b'M' => 60_000,
                _ => 1_000,
            };
            let whole = part.value.checked_mul(unit_millis).ok_or_else(too_long)?;
            let fraction = fraction_millis(part.fraction, unit_millis)
                .ok_or_else(|| unsupported("precision finer than a millisecond"))?;
            time_millis = time_millis
                .checked_add(whole)
                .and_then(|t| t.checked_add(fraction))
                .ok_or_else(too_long)?;
        }
        let max_millis = limit_days * MILLIS_PER_DAY as u64;
        if time_millis > max_millis {
            return Err(too_long());
        }
        // All three are bounded above, so the conversions and the sum cannot fail or overflow.
        let months = u32::try_from(total_months).map_err(|_| too_long())?;
        let days = u32::try_from(total_days).map_err(|_| too_long())?;
        let time_millis = i64::try_from(time_millis).map_err(|_| too_long())?;
        let nominal_millis = i64::from(months) * (MILLIS_PER_NOMINAL_YEAR / 12)
            + i64::from(days) * MILLIS_PER_DAY
            + time_millis;
        Ok(Period {
            months,
            days,
            time_millis,
            text: String::new(),
            nominal_millis,
        })
    }

    fn has_date_part(&self) -> bool {
        self.months > 0 || self.days > 0
    }

    fn nominal_millis(&self) -> i64 {
        self.nominal_millis
    }

    /// The shortest and longest a period can be (months of 28 to 31 days), in milliseconds.
    fn millis_range(&self) -> (i128, i128) {
        let fixed =
            i128::from(self.days) * i128::from(MILLIS_PER_DAY) + i128::from(self.time_millis);
        let month_millis = |days: i128| i128::from(self.months) * days * i128::from(MILLIS_PER_DAY);
        ((fixed + month_millis(28)).max(1), fixed + month_millis(31))
    }

    /// `wall_clock` plus `times` × the date part, anchored: months first (clamping the day to
    /// the month's end), then days.
    fn add_date_part(&self, wall_clock: NaiveDateTime, times: u64) -> Option<NaiveDateTime> {
        let months = u32::try_from(times.checked_mul(u64::from(self.months))?).ok()?;
        let days = times.checked_mul(u64::from(self.days))?;
        wall_clock
            .checked_add_months(Months::new(months))?
            .checked_add_days(Days::new(days))
    }
}

/// Splits a duration body such as `1Y2M` into its parts, requiring the designators in `order`,
/// each at most once. None when the text does not have that shape.
fn parse_duration_parts<'a>(mut text: &'a str, order: &[u8]) -> Option<Vec<DurationPart<'a>>> {
    let mut parts = Vec::new();
    let mut allowed = order;
    while !text.is_empty() {
        let number_length = text
            .bytes()
            .position(|byte| !(byte.is_ascii_digit() || byte == b'.' || byte == b','))?;
        let (number, rest) = text.split_at(number_length);
        let designator = *rest.as_bytes().first()?;
        let position = allowed.iter().position(|&d| d == designator)?;
        allowed = &allowed[position + 1..];
        let (whole, fraction) = match number.split_once(['.', ',']) {
            Some((whole, fraction)) if !fraction.is_empty() => (whole, fraction),
            Some(_) => return None,
            None => (number, ""),
        };
        let digits_only = |s: &str| s.bytes().all(|byte| byte.is_ascii_digit());
        if whole.is_empty() || !digits_only(whole) || !digits_only(fraction) {
            return None;
        }
        // Absurdly long numbers are rejected as too long a period later; saturate here.
        let value = whole.parse::<u64>().unwrap_or(u64::MAX);
        parts.push(DurationPart {
            value,
            fraction,
            designator,
        });
        text = &rest[1..];
    }
    Some(parts)
}

/// The milliseconds in `0.<fraction>` of a unit; None when not a whole number of milliseconds.
fn fraction_millis(fraction: &str, unit_millis: u64) -> Option<u64> {
    let digits = fraction.trim_end_matches('0');
    if digits.is_empty() {
        return Some(0);
    }
    if digits.len() > 12 {
        return None;
    }
    let numerator = digits.parse::<u128>().ok()? * u128::from(unit_millis);
    let denominator = 10u128.pow(u32::try_from(digits.len()).ok()?);
    (numerator % denominator == 0).then(|| u64::try_from(numerator / denominator).ok())?
}

// ---------------------------------------------------------------------------------------------
// Cron
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct CronRule {
    /// Boxed: croner's pattern is a few hundred bytes of bit fields.
    cron: Box<Cron>,
    /// As given, trimmed: the canonical form.
    expression: String,
    /// The gap between the next two fires after the parse's `now`.
    nominal_period: Option<TimeDelta>,
}

/// Croner's own `Debug` prints every bit field; the expression says it all.
impl std::fmt::Debug for CronRule {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CronRule")
            .field("expression", &self.expression)
            .field("nominal_period", &self.nominal_period)
            .finish()
    }
}

/// Two cron rules are the same schedule when written the same; the nominal period depends on
/// when they were parsed and is not part of the identity.
impl PartialEq for CronRule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression
    }
}

impl CronRule {
    fn parse(expression: &str, time_zone: Tz, now: DateTime<Utc>) -> Result<Self, ScheduleError> {
        let invalid = |reason: String| ScheduleError::InvalidCron {
            expression: quote(expression),
            reason,
        };
        let field_count = expression.split_whitespace().count();
        if !expression.starts_with('@') && !(5..=6).contains(&field_count) {
            return Err(invalid(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, found {field_count}"
            )));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(expression)
            .map_err(|error| invalid(error.to_string()))?;
        let mut rule = CronRule {
            cron: Box::new(cron),
            expression: expression.to_owned(),
            nominal_period: None,
        };
        let first = rule
            .first_at_or_after(now, time_zone)
            .ok_or_else(|| ScheduleError::CronNeverFires(quote(expression)))?;
        // Cron targets are whole seconds: the next one is at least a second later.
        rule.nominal_period = first
            .checked_add_signed(TimeDelta::seconds(1))
            .and_then(|after_first| rule.first_at_or_after(after_first, time_zone))
            .map(|second| second - first);
        Ok(rule)
    }

    /// Croner searches the zone's wall clock as a naive date-time (a clock without gaps or
    /// repeats); each match is then resolved with the module's gap and overlap rule. Resolution
    /// never goes backwards, so the first match at or after the earliest wall-clock time that
    /// resolves to `at` or later is the answer.
    fn first_at_or_after(&self, at: DateTime<Utc>, time_zone: Tz) -> Option<DateTime<Utc>> {
        // Croner searches years 1 to 5000; nothing of interest fires before year 2.
        let at = at.max(
            NaiveDate::from_ymd_opt(2, 1, 1)?
                .and_time(NaiveTime::MIN)
                .and_utc(),
        );
        // Cron targets are whole seconds (and so are transitions), so round `at` up to one.
        let at = ceil_to_second(at)?;
        let lowest = earliest_wall_clock_reaching(time_zone, at)?;
        let wall_clock = self.cron.find_next_occurrence(&lowest, true).ok()?;
        resolve_wall_clock(time_zone, wall_clock)
    }
}

// ---------------------------------------------------------------------------------------------
// Wall clock ↔ instant
// ---------------------------------------------------------------------------------------------

/// The instant a wall-clock time in `time_zone` runs at: itself when it exists, the earlier
/// instant when a fall-back repeats it, the transition instant when spring-forward skips it.
fn resolve_wall_clock(time_zone: Tz, wall_clock: NaiveDateTime) -> Option<DateTime<Utc>> {
    // Far from chrono's edges, so that applying any offset stays in range.
    if wall_clock.year().abs() > MAX_RESOLVABLE_YEAR {
        return None;
    }
    match time_zone.from_local_datetime(&wall_clock) {
        LocalResult::Single(instant) => Some(instant.with_timezone(&Utc)),
        LocalResult::Ambiguous(earlier, _) => Some(earlier.with_timezone(&Utc)),
        LocalResult::None => first_instant_reaching(time_zone, wall_clock),
    }
}

const MAX_RESOLVABLE_YEAR: i32 = 200_000;

/// The first instant whose wall clock is at or past `wall_clock`, for a time inside a gap.
/// Bisects whole seconds (transitions fall on them) within a window wider than any offset.
fn first_instant_reaching(time_zone: Tz, wall_clock: NaiveDateTime) -> Option<DateTime<Utc>> {
    const WINDOW_SECONDS: i64 = 30 * 3600;
    let as_if_utc = wall_clock.and_utc().timestamp();
    let reaches = |second: i64| {
        DateTime::from_timestamp(second, 0)
            .and_then(|instant| wall_clock_of(time_zone, instant))
            .is_none_or(|reached| reached >= wall_clock)
    };
    let second = first_second_where(
        as_if_utc.checked_sub(WINDOW_SECONDS)?,
        as_if_utc.checked_add(WINDOW_SECONDS)?,
        reaches,
    );
    DateTime::from_timestamp(second, 0)
}

/// The earliest wall-clock time that resolves to `at` or later: `at`'s own wall clock, except
/// - when `at` is a transition out of a gap: the gap's start (every gap time resolves to `at`);
/// - when `at` is the later of two instants sharing a wall clock: the end of the repeated range
///   (the repeated times resolve to their earlier instants, before `at`).
fn earliest_wall_clock_reaching(time_zone: Tz, at: DateTime<Utc>) -> Option<NaiveDateTime> {
    let wall_clock = wall_clock_of(time_zone, at)?;
    if let LocalResult::Ambiguous(earlier, later) = time_zone.from_local_datetime(&wall_clock)
        && later.with_timezone(&Utc) == at
        && earlier.with_timezone(&Utc) != at
    {
        return end_of_repeat(time_zone, earlier.with_timezone(&Utc), at);
    }
    let offset_at = offset_seconds(time_zone, at);
    let offset_before = offset_seconds(time_zone, at.checked_sub_signed(TimeDelta::seconds(1))?);
    if offset_at > offset_before {
        return wall_clock.checked_sub_signed(TimeDelta::seconds(offset_at - offset_before));
    }
    Some(wall_clock)
}

/// For two instants sharing a wall clock across a fall-back, the first wall-clock time after
/// the repeated range: the transition's wall clock in the old (earlier) offset.
fn end_of_repeat(
    time_zone: Tz,
    earlier: DateTime<Utc>,
    later: DateTime<Utc>,
) -> Option<NaiveDateTime> {
    let new_offset = offset_seconds(time_zone, later);
    let has_new_offset = |second: i64| {
        DateTime::from_timestamp(second, 0)
            .is_none_or(|instant| offset_seconds(time_zone, instant) == new_offset)
    };
    let transition = first_second_where(earlier.timestamp(), later.timestamp(), has_new_offset);
    let old_offset = offset_seconds(time_zone, earlier);
    DateTime::from_timestamp(transition.checked_add(old_offset)?, 0).map(|t| t.naive_utc())
}

/// The smallest second in (`low`, `high`] where `predicate` holds, assuming it is false at `low`,
/// true at `high`, and switches once between them.
fn first_second_where(mut low: i64, mut high: i64, predicate: impl Fn(i64) -> bool) -> i64 {
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if predicate(middle) {
            high = middle;
        } else {
            low = middle;
        }
    }
    high
}

/// The wall clock in `time_zone` at `instant`; None only at the edges of chrono's range.
fn wall_clock_of(time_zone: Tz, instant: DateTime<Utc>) -> Option<NaiveDateTime> {
    let offset = time_zone
        .offset_from_utc_datetime(&instant.naive_utc())
        .fix();
    instant.naive_utc().checked_add_offset(offset)
}

fn offset_seconds(time_zone: Tz, instant: DateTime<Utc>) -> i64 {
    let offset = time_zone.offset_from_utc_datetime(&instant.naive_utc());
    i64::from(offset.fix().local_minus_utc())
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

fn truncate_to_millis(instant: DateTime<Utc>) -> DateTime<Utc> {
    truncate_naive_to_millis(instant.naive_utc()).and_utc()
}

fn truncate_naive_to_millis(wall_clock: NaiveDateTime) -> NaiveDateTime {
    let millis = wall_clock.nanosecond() / 1_000_000;
    wall_clock
        .with_nanosecond(millis * 1_000_000)
        .unwrap_or(wall_clock)
}

fn ceil_to_second(instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if instant.nanosecond() == 0 {
        return Some(instant);
    }
    instant
        .with_nanosecond(0)?
        .checked_add_signed(TimeDelta::seconds(1))
}

/// User input as quoted in an error message: shortened when long, so an error never echoes a
/// megabyte back.
fn quote(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    if text.chars().count() <= MAX_CHARS {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(MAX_CHARS).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn now() -> DateTime<Utc> {
        utc("2026-01-15T12:00:00Z")
    }

    /// The digit-by-digit reading and writing of a wall-clock time agree with chrono's
    /// formats, on the plain shape and around it (what the fast path refuses, chrono decides).
    #[test]
    fn plain_wall_clocks_read_and_write_as_chronos_formats_do() {
        let texts = [
            "2099-01-01T00:00:00",
            "2026-02-28T23:59:59",
            "2024-02-29T12:30:45",
            "2023-02-29T12:30:45",
            "0000-01-01T00:00:00",
            "0001-01-01T00:00:00",
            "9999-12-31T23:59:59",
            "2026-13-01T00:00:00",
            "2026-01-32T00:00:00",
            "2026-01-01T24:00:00",
            "2026-01-01T23:60:00",
            "2026-06-30T23:59:60",
            "2026-1-01T00:00:000",
            "2026-01-01 00:00:00",
            "+2026-01-01T00:00:0",
            "2026-01-01T00:00:0x",
        ];
        for text in texts {
            let chrono = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").ok();
            let plain = plain_wall_clock(text);
            assert!(
                plain.is_none() || plain == chrono,
                "{text}: {plain:?} against {chrono:?}"
            );
            if let Some(wall_clock) = chrono {
                // Milliseconds, when any, follow the seconds.
                let seconds = wall_clock.format("%Y-%m-%dT%H:%M:%S").to_string();
                assert!(
                    format_wall_clock(wall_clock).starts_with(&seconds),
                    "{text}"
                );
            }
        }
        assert!(plain_wall_clock("2099-01-01T00:00:00").is_some());
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|date| date.and_hms_milli_opt(23, 59, 59, 1_000))
            .unwrap();
        assert!(format_wall_clock(leap).starts_with("2016-12-31T23:59:60"));
        let far = NaiveDate::from_ymd_opt(12_345, 1, 1)
            .and_then(|date| date.and_hms_opt(0, 0, 0))
            .unwrap();
        assert_eq!(
            format_wall_clock(far),
            far.format("%Y-%m-%dT%H:%M:%S").to_string()
        );
    }

    fn parse(text: &str, zone: Option<&str>) -> Schedule {
        Schedule::parse(text, zone, now()).unwrap()
    }

    fn error(text: &str, zone: Option<&str>) -> ScheduleError {
        Schedule::parse(text, zone, now()).unwrap_err()
    }

    fn format(instant: DateTime<Utc>) -> String {
        instant.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    fn upcoming(schedule: &Schedule, from: &str, n: usize) -> Vec<String> {
        schedule
            .upcoming(utc(from), n)
            .into_iter()
            .map(format)
            .collect()
    }

    const NEW_YORK: Option<&str> = Some("America/New_York");
    const BERLIN: Option<&str> = Some("Europe/Berlin");

    // --- Parsing ISO 8601 -----------------------------------------------------------------

    #[test]
    fn parses_a_utc_repeating_interval() {
        let schedule = parse("R/2026-03-01T02:30:00Z/P1D", None);
        assert_eq!(schedule.canonical(), "R/2026-03-01T02:30:00Z/P1D");
        assert_eq!(schedule.time_zone(), Tz::UTC);
        assert_eq!(
            upcoming(&schedule, "2026-01-01T00:00:00Z", 3),
            [
                "2026-03-01T02:30:00.000Z",
                "2026-03-02T02:30:00.000Z",
                "2026-03-03T02:30:00.000Z"
            ]
        );
        assert_eq!(schedule.nominal_period(), Some(TimeDelta::days(1)));
    }

    #[test]
    fn without_a_zone_the_offset_gives_the_instant() {
        let schedule = parse("R3/2026-03-01T02:30:00.250+01:00/PT0.5S", None);
        assert_eq!(schedule.canonical(), "R3/2026-03-01T01:30:00.250Z/PT0.5S");
        assert_eq!(
            upcoming(&schedule, "2000-01-01T00:00:00Z", 10),
            [
                "2026-03-01T01:30:00.250Z",
                "2026-03-01T01:30:00.750Z",
                "2026-03-01T01:30:01.250Z"
            ]
        );
    }

    #[test]
    fn accepts_iso_8601_start_variants() {
        let cases = [
            ("R/2026-03-01T02:30Z/P1D", "R/2026-03-01T02:30:00Z/P1D"),
            ("R/2026-03-01/P1D", "R/2026-03-01T00:00:00Z/P1D"),
            (
                "R/2026-03-01T02:30:00+0530/P1D",
                "R/2026-02-28T21:00:00Z/P1D",
            ),
            ("R/2026-03-01T02:30:00-05/P1D", "R/2026-03-01T07:30:00Z/P1D"),
            ("R/2026-03-01T02:30:00/P1D", "R/2026-03-01T02:30:00Z/P1D"),
            ("r/2026-03-01t02:30:00z/p1d", "R/2026-03-01T02:30:00Z/P1D"),
            (
                "R/2026-03-01T02:30:00.123456Z/PT1M",
                "R/2026-03-01T02:30:00.123Z/PT1M",
            ),
            (
                "R/2026-03-01T02:30:00,5Z/PT1M",
                "R/2026-03-01T02:30:00.500Z/PT1M",
            ),
            (
                "  R5/2026-03-01T02:30:00.1Z/PT1,5S  ",
                "R5/2026-03-01T02:30:00.100Z/PT1,5S",
            ),
        ];
        for (text, canonical) in cases {
            let result = Schedule::parse(text, None, now());
            assert_eq!(
                result.map(|s| s.canonical()),
                Ok(canonical.to_owned()),
                "{text}"
            );
        }
    }

    #[test]
    fn an_empty_start_means_now() {
        let schedule = parse("R//PT1S", None);
        assert_eq!(schedule.canonical(), "R/2026-01-15T12:00:00Z/PT1S");
        assert_eq!(
            schedule.first_at_or_after(DateTime::<Utc>::MIN_UTC),
            Some(now())
        );

        let ten = parse("R10//PT2S", None);
        let targets = ten.upcoming(DateTime::<Utc>::MIN_UTC, 100);
        assert_eq!(targets.len(), 10);
        assert_eq!(targets[9], now() + TimeDelta::seconds(18));
        assert_eq!(
            ten.count_between(DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC, 1000),
            10
        );

        // `now` is kept to the millisecond.
        let precise_now = now() + TimeDelta::nanoseconds(123_456_789);
        let precise = Schedule::parse("R//PT1S", None, precise_now).unwrap();
        assert_eq!(precise.canonical(), "R/2026-01-15T12:00:00.123Z/PT1S");

        // With a zone, the stored start is now's wall clock there.
        let zoned = parse("R//P1D", NEW_YORK);
        assert_eq!(zoned.canonical(), "R/2026-01-15T07:00:00/P1D");
        assert_eq!(
            zoned.first_at_or_after(DateTime::<Utc>::MIN_UTC),
            Some(now())
        );
    }

    #[test]
    fn parses_iso_8601_periods() {
        let hour = 3_600_000;
        let cases: [(&str, i64); 12] = [
            ("P1Y", 31_556_952_000),
            ("P1M", 2_629_746_000),
            ("P1W", 7 * 24 * hour),
            ("P1D", 24 * hour),
            ("PT1H", hour),
            ("PT1M", 60_000),
            ("PT1S", 1_000),
            ("PT0.5S", 500),
            ("PT0,25S", 250),
            ("PT1.5H", 5_400_000),
            ("p1dt1h", 25 * hour),
            (
                "P1W2DT3H4M5.006S",
                9 * 24 * hour + 3 * hour + 4 * 60_000 + 5_006,
            ),
        ];
        for (period, millis) in cases {
            let schedule = parse(&format!("R/2026-01-01T00:00:00Z/{period}"), None);
            assert_eq!(
                schedule.nominal_period(),
                Some(TimeDelta::milliseconds(millis)),
                "{period}"
            );
            assert!(schedule.canonical().ends_with(&period.to_ascii_uppercase()));
        }
    }

    #[test]
    fn rejects_malformed_iso_schedules() {
        let start = "2026-03-01T00:00:00Z";
        let cases: Vec<(String, ScheduleError)> = vec![
            ("".into(), ScheduleError::Empty),
            ("   ".into(), ScheduleError::Empty),
            (
                format!("R/{start}"),
                ScheduleError::NotRepeatingInterval(format!("R/{start}")),
            ),
            (
                "R/a/b/c".into(),
                ScheduleError::NotRepeatingInterval("R/a/b/c".into()),
            ),
            (
                format!("Rx/{start}/P1D"),
                ScheduleError::InvalidRepetitions("Rx".into()),
            ),
            (
                format!("R-1/{start}/P1D"),
                ScheduleError::InvalidRepetitions("R-1".into()),
            ),
            (
                format!("R99999999999999999999999/{start}/P1D"),
                ScheduleError::InvalidRepetitions("R99999999999999999999999".into()),
            ),
            (
                "R/yesterday/P1D".into(),
                ScheduleError::InvalidStart("yesterday".into()),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(error(&text, None), expected, "{text}");
        }
        for bad_start in [
            "2026-13-01T00:00:00Z",
            "2026-03-01T25:00:00Z",
            "2026-03-01T00:00:00+25:00",
            "2026-03-01T00:00:00+01:0",
            "2026-03-01T23:59:60Z",
            "0000-01-01T00:00:00Z",
            "2026-03-01T00:00:00ZZ",
            "2026-03-01T",
        ] {
            assert_eq!(
                error(&format!("R/{bad_start}/P1D"), None),
                ScheduleError::InvalidStart(bad_start.into()),
                "{bad_start}"
            );
        }
        for bad_period in [
            "PXYZ", "P", "PT", "P1DT", "1D", "P1H", "PT1D", "P1D1Y", "P1.D", "P.5D", "PT1S2S",
            "P1DX", "PT1.2.3S", "",
        ] {
            assert_eq!(
                error(&format!("R/{start}/{bad_period}"), None),
                ScheduleError::InvalidPeriod(bad_period.into()),
                "{bad_period}"
            );
        }
        for non_positive in ["PT0S", "P0D", "P0Y0M0W0DT0H0M0.000S", "P-1D", "-P1D"] {
            assert_eq!(
                error(&format!("R/{start}/{non_positive}"), None),
                ScheduleError::NonPositivePeriod(non_positive.into()),
                "{non_positive}"
            );
        }
        for (unsupported, reason) in [
            (
                "P1.5D",
                "fractions are supported on hours, minutes and seconds only",
            ),
            ("PT1.5H30M", "only the last number may have a fraction"),
            ("PT0.0001S", "precision finer than a millisecond"),
            ("P10001Y", "longer than 10000 years"),
            ("PT99999999999999999999999S", "longer than 10000 years"),
            ("P3660001D", "longer than 10000 years"),
        ] {
            assert_eq!(
                error(&format!("R/{start}/{unsupported}"), None),
                ScheduleError::UnsupportedPeriod {
                    period: unsupported.into(),
                    reason: reason.into()
                },
                "{unsupported}"
            );
        }
    }

    #[test]
    fn error_messages_are_clear_and_name_their_field() {
        let zone = error("R/2026-03-01T00:00:00Z/P1D", Some("Mars/Base"));
        assert_eq!(zone, ScheduleError::UnknownTimeZone("Mars/Base".into()));
        assert!(
            zone.to_string()
                .starts_with("unknown time zone 'Mars/Base'")
        );
        assert_eq!(zone.field(), "scheduleTimeZone");

        let period = error("R/2026-03-01T00:00:00Z/PXYZ", None);
        assert!(
            period
                .to_string()
                .starts_with("period 'PXYZ' is not an ISO 8601 duration")
        );
        assert_eq!(period.field(), "schedule");

        let cron = error("61 * * * *", None);
        assert!(
            cron.to_string()
                .starts_with("cron expression '61 * * * *' is invalid: ")
        );
        assert_eq!(cron.field(), "schedule");

        // Long input is shortened in messages.
        let long = format!("R/{}/P1D", "9".repeat(10_000));
        let message = error(&long, None).to_string();
        assert!(message.len() < 400, "{message}");
        assert!(message.contains('…'));
    }

    #[test]
    fn time_zone_names_are_trimmed_and_empty_means_utc() {
        let text = "R/2026-03-01T02:30:00+01:00/P1D";
        assert_eq!(
            parse(text, Some("")).canonical(),
            "R/2026-03-01T01:30:00Z/P1D"
        );
        assert_eq!(parse(text, Some("  ")).time_zone(), Tz::UTC);
        assert_eq!(
            parse(text, Some(" Europe/Berlin ")).time_zone(),
            Tz::Europe__Berlin
        );
        // An explicit zone keeps the wall clock, even when that zone is UTC (as Chronos does).
        assert_eq!(
            parse(text, Some("UTC")).canonical(),
            "R/2026-03-01T02:30:00Z/P1D"
        );
    }

    // --- Repetitions, anchoring, time zones -----------------------------------------------

    #[test]
    fn counts_repetitions() {
        let never = parse("R0/2026-03-01T00:00:00Z/P1D", None);
        assert_eq!(never.first_at_or_after(DateTime::<Utc>::MIN_UTC), None);
        assert!(never.upcoming(DateTime::<Utc>::MIN_UTC, 5).is_empty());
        assert_eq!(never.nominal_period(), None);

        let once = parse("R1/2026-03-01T00:00:00Z/P1D", None);
        assert_eq!(
            upcoming(&once, "2026-01-01T00:00:00Z", 5),
            ["2026-03-01T00:00:00.000Z"]
        );
        assert_eq!(once.next_after(utc("2026-03-01T00:00:00Z")), None);
        assert_eq!(once.nominal_period(), None);

        let thrice = parse("R3/2026-03-01T00:00:00Z/P1D", None);
        assert_eq!(thrice.upcoming(DateTime::<Utc>::MIN_UTC, 10).len(), 3);
        assert_eq!(
            thrice.first_at_or_after(utc("2026-03-03T00:00:00Z")),
            Some(utc("2026-03-03T00:00:00Z"))
        );
        assert_eq!(
            thrice.first_at_or_after(utc("2026-03-03T00:00:00.001Z")),
            None
        );
        let all =
            thrice.count_between(DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC, u64::MAX);
        assert_eq!(all, 3);
        assert_eq!(
            thrice.count_between(utc("2026-03-02T00:00:00Z"), utc("2030-01-01T00:00:00Z"), 10),
            2
        );
        assert_eq!(thrice.nominal_period(), Some(TimeDelta::days(1)));
    }

    #[test]
    fn a_zone_keeps_the_start_wall_clock() {
        let schedule = parse("R/2026-03-01T02:30:00Z/P1D", NEW_YORK);
        assert_eq!(schedule.canonical(), "R/2026-03-01T02:30:00/P1D");
        assert_eq!(
            upcoming(&schedule, "2026-03-01T00:00:00Z", 2),
            ["2026-03-01T07:30:00.000Z", "2026-03-02T07:30:00.000Z"]
        );
        // The offset is ignored for the wall-clock reading.
        assert_eq!(parse("R/2026-03-01T02:30:00+09:00/P1D", NEW_YORK), schedule);
        // The canonical form re-parses to the same schedule.
        assert_eq!(parse(&schedule.canonical(), NEW_YORK), schedule);
    }

    #[test]
    fn months_are_anchored_at_the_start() {
        let schedule = parse("R/2026-01-31T10:00:00Z/P1M", None);
        assert_eq!(
            upcoming(&schedule, "2026-01-01T00:00:00Z", 5),
            [
                "2026-01-31T10:00:00.000Z",
                "2026-02-28T10:00:00.000Z",
                "2026-03-31T10:00:00.000Z",
                "2026-04-30T10:00:00.000Z",
                "2026-05-31T10:00:00.000Z"
            ]
        );
        assert_eq!(
            schedule.first_at_or_after(utc("2028-02-01T00:00:00Z")),
            Some(utc("2028-02-29T10:00:00Z"))
        );
        assert_eq!(
            schedule.first_at_or_after(utc("2126-02-01T00:00:00Z")),
            Some(utc("2126-02-28T10:00:00Z"))
        );
        assert_eq!(
            schedule.count_between(
                utc("2026-01-01T00:00:00Z"),
                utc("2126-01-01T00:00:00Z"),
                u64::MAX
            ),
            1200
        );

        let leap = parse("R/2024-02-29T00:00:00Z/P1Y", None);
        assert_eq!(
            upcoming(&leap, "2024-01-01T00:00:00Z", 5),
            [
                "2024-02-29T00:00:00.000Z",
                "2025-02-28T00:00:00.000Z",
                "2026-02-28T00:00:00.000Z",
                "2027-02-28T00:00:00.000Z",
                "2028-02-29T00:00:00.000Z"
            ]
        );
    }

    #[test]
    fn the_time_part_is_added_as_an_exact_duration() {
        // 12:00 local on each day, plus k hours of elapsed time.
        let schedule = parse("R/2026-03-07T12:00:00/P1DT1H", NEW_YORK);
        assert_eq!(
            upcoming(&schedule, "2026-03-07T00:00:00Z", 3),
            [
                "2026-03-07T17:00:00.000Z",
                "2026-03-08T17:00:00.000Z",
                "2026-03-09T18:00:00.000Z"
            ]
        );
        // A time-only period ignores DST: always 3600 s.
        let hourly = parse("R/2026-03-08T00:00:00/PT1H", NEW_YORK);
        assert_eq!(
            upcoming(&hourly, "2026-03-08T00:00:00Z", 4),
            [
                "2026-03-08T05:00:00.000Z",
                "2026-03-08T06:00:00.000Z",
                "2026-03-08T07:00:00.000Z",
                "2026-03-08T08:00:00.000Z"
            ]
        );
    }

    // --- DST: ISO 8601 ----------------------------------------------------------------------

    #[test]
    fn iso_daily_in_new_york_across_the_gap_and_the_overlap() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 runs at 03:00 EDT (07:00Z).
        let spring = parse("R/2026-03-06T02:30:00/P1D", NEW_YORK);
        assert_eq!(
            upcoming(&spring, "2026-03-06T00:00:00Z", 4),
            [
                "2026-03-06T07:30:00.000Z",
                "2026-03-07T07:30:00.000Z",
                "2026-03-08T07:00:00.000Z",
                "2026-03-09T06:30:00.000Z"
            ]
        );
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 runs once, at 01:30 EDT.
        let fall = parse("R/2026-10-30T01:30:00/P1D", NEW_YORK);
        assert_eq!(
            upcoming(&fall, "2026-10-30T00:00:00Z", 4),
            [
                "2026-10-30T05:30:00.000Z",
                "2026-10-31T05:30:00.000Z",
                "2026-11-01T05:30:00.000Z",
                "2026-11-02T06:30:00.000Z"
            ]
        );
        assert_eq!(
            fall.next_after(utc("2026-11-01T05:30:00Z")),
            Some(utc("2026-11-02T06:30:00Z"))
        );
        assert_eq!(
            fall.count_between(utc("2026-11-01T00:00:00Z"), utc("2026-11-02T00:00:00Z"), 10),
            1
        );
    }

    #[test]
    fn iso_daily_in_berlin_across_the_gap_and_the_overlap() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00Z).
        let spring = parse("R/2026-03-28T02:30:00/P1D", BERLIN);
        assert_eq!(
            upcoming(&spring, "2026-03-28T00:00:00Z", 3),
            [
                "2026-03-28T01:30:00.000Z",
                "2026-03-29T01:00:00.000Z",
                "2026-03-30T00:30:00.000Z"
            ]
        );
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 runs at 02:30 CEST only.
        let fall = parse("R/2026-10-24T02:30:00/P1D", BERLIN);
        assert_eq!(
            upcoming(&fall, "2026-10-24T00:00:00Z", 3),
            [
                "2026-10-24T00:30:00.000Z",
                "2026-10-25T00:30:00.000Z",
                "2026-10-26T01:30:00.000Z"
            ]
        );
        // A start in the gap is anchored at its wall clock: the next days run at 02:30.
        let in_gap = parse("R/2026-03-29T02:30:00/P1D", BERLIN);
        assert_eq!(in_gap.canonical(), "R/2026-03-29T02:30:00/P1D");
        assert_eq!(
            upcoming(&in_gap, "2026-03-28T00:00:00Z", 2),
            ["2026-03-29T01:00:00.000Z", "2026-03-30T00:30:00.000Z"]
        );
    }

    #[test]
    fn a_day_long_gap_yields_one_target() {
        // Samoa skipped 2011-12-30: 23:59:59 on the 29th (-10:00) was followed by 00:00 on the
        // 31st (+14:00). Midnight on the 30th and on the 31st both run at that transition.
        let schedule = parse("R/2011-12-28T00:00:00/P1D", Some("Pacific/Apia"));
        let targets = upcoming(&schedule, "2011-12-01T00:00:00Z", 4);
        assert_eq!(
            targets,
            [
                "2011-12-28T10:00:00.000Z",
                "2011-12-29T10:00:00.000Z",
                "2011-12-30T10:00:00.000Z",
                "2011-12-31T10:00:00.000Z"
            ]
        );
        let (from, to) = (utc("2011-12-01T00:00:00Z"), utc("2011-12-31T10:00:00.001Z"));
        assert_eq!(schedule.count_between(from, to, u64::MAX), 4);
    }

    // --- Cron -------------------------------------------------------------------------------

    #[test]
    fn parses_cron_expressions() {
        let weekdays = parse("  0 12 * * MON-FRI  ", None);
        assert_eq!(weekdays.canonical(), "0 12 * * MON-FRI");
        assert_eq!(
            upcoming(&weekdays, "2026-01-16T13:00:00Z", 2), // a Friday afternoon
            ["2026-01-19T12:00:00.000Z", "2026-01-20T12:00:00.000Z"]
        );
        let seconds = parse("*/10 * * * * *", None);
        assert_eq!(
            upcoming(&seconds, "2026-01-15T12:00:05Z", 2),
            ["2026-01-15T12:00:10.000Z", "2026-01-15T12:00:20.000Z"]
        );
        assert_eq!(seconds.nominal_period(), Some(TimeDelta::seconds(10)));
        let daily = parse("@daily", None);
        assert_eq!(
            daily.first_at_or_after(now()),
            Some(utc("2026-01-16T00:00:00Z"))
        );
        assert_eq!(daily.nominal_period(), Some(TimeDelta::days(1)));
        assert_eq!(
            parse("0 */6 * * *", None).nominal_period(),
            Some(TimeDelta::hours(6))
        );
        assert_eq!(
            parse("@hourly", BERLIN).nominal_period(),
            Some(TimeDelta::hours(1))
        );
    }

    #[test]
    fn cron_targets_are_whole_seconds() {
        let every_second = parse("* * * * * *", None);
        let half = utc("2026-01-15T12:00:00.500Z");
        assert_eq!(
            every_second.first_at_or_after(half),
            Some(utc("2026-01-15T12:00:01Z"))
        );
        assert_eq!(
            every_second.next_after(utc("2026-01-15T12:00:01Z")),
            Some(utc("2026-01-15T12:00:02Z"))
        );
        assert_eq!(
            every_second.first_at_or_after(utc("2026-01-15T12:00:01Z")),
            Some(utc("2026-01-15T12:00:01Z"))
        );
        let minute = (utc("2026-01-15T12:00:00Z"), utc("2026-01-15T12:01:00Z"));
        assert_eq!(every_second.count_between(minute.0, minute.1, 1000), 60);
        assert_eq!(every_second.count_between(minute.0, minute.1, 7), 7);
    }

    #[test]
    fn rejects_bad_cron_expressions() {
        let invalid = |text: &str| match error(text, None) {
            ScheduleError::InvalidCron { expression, reason } => {
                assert_eq!(expression, text.trim());
                reason
            }
            other => panic!("{text}: {other:?}"),
        };
        for text in [
            "61 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "@reboot",
            "hello world",
            "* * * * X",
        ] {
            invalid(text);
        }
        assert_eq!(
            invalid("* * *"),
            "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, found 3"
        );
        assert!(invalid("0 0 0 1 1 * 2030").contains("found 7"));
        assert_eq!(
            error("0 0 31 2 *", None),
            ScheduleError::CronNeverFires("0 0 31 2 *".into())
        );
    }

    #[test]
    fn cron_fixed_times_in_new_york_across_the_gap_and_the_overlap() {
        let at_0230 = parse("30 2 * * *", NEW_YORK);
        assert_eq!(
            upcoming(&at_0230, "2026-03-07T00:00:00Z", 3),
            [
                "2026-03-07T07:30:00.000Z",
                "2026-03-08T07:00:00.000Z",
                "2026-03-09T06:30:00.000Z"
            ]
        );
        // Inclusive at the transition itself; just after it, the next day.
        assert_eq!(
            at_0230.first_at_or_after(utc("2026-03-08T07:00:00Z")),
            Some(utc("2026-03-08T07:00:00Z"))
        );
        assert_eq!(
            at_0230.first_at_or_after(utc("2026-03-08T07:00:00.001Z")),
            Some(utc("2026-03-09T06:30:00Z"))
        );

        let at_0130 = parse("30 1 * * *", NEW_YORK);
        assert_eq!(
            upcoming(&at_0130, "2026-10-31T00:00:00Z", 3),
            [
                "2026-10-31T05:30:00.000Z",
                "2026-11-01T05:30:00.000Z",
                "2026-11-02T06:30:00.000Z"
            ]
        );
    }

    #[test]
    fn cron_intervals_in_new_york_never_repeat_a_wall_clock_time() {
        // 01:00 and 01:30 happen twice on 2026-11-01; each runs once, in EDT.
        let half_hourly = parse("*/30 * * * *", NEW_YORK);
        assert_eq!(
            upcoming(&half_hourly, "2026-11-01T04:45:00Z", 4),
            [
                "2026-11-01T05:00:00.000Z",
                "2026-11-01T05:30:00.000Z",
                "2026-11-01T07:00:00.000Z",
                "2026-11-01T07:30:00.000Z"
            ]
        );
        // From inside the repeated hour (01:10 EST), and from the transition itself.
        assert_eq!(
            half_hourly.first_at_or_after(utc("2026-11-01T06:10:00Z")),
            Some(utc("2026-11-01T07:00:00Z"))
        );
        assert_eq!(
            half_hourly.first_at_or_after(utc("2026-11-01T06:00:00Z")),
            Some(utc("2026-11-01T07:00:00Z"))
        );
        assert_eq!(
            half_hourly.count_between(
                utc("2026-11-01T04:00:00Z"),
                utc("2026-11-01T08:00:00Z"),
                100
            ),
            6
        );
        // 02:00 and 02:30 do not exist on 2026-03-08: one target right after the gap.
        assert_eq!(
            upcoming(&half_hourly, "2026-03-08T06:00:00Z", 4),
            [
                "2026-03-08T06:00:00.000Z",
                "2026-03-08T06:30:00.000Z",
                "2026-03-08T07:00:00.000Z",
                "2026-03-08T07:30:00.000Z"
            ]
        );
        let at_half_past = parse("30 * * * *", NEW_YORK);
        assert_eq!(
            upcoming(&at_half_past, "2026-03-08T06:00:00Z", 3),
            [
                "2026-03-08T06:30:00.000Z",
                "2026-03-08T07:00:00.000Z",
                "2026-03-08T07:30:00.000Z"
            ]
        );
    }

    #[test]
    fn cron_in_berlin_across_the_gap_and_the_overlap() {
        let at_0230 = parse("30 2 * * *", BERLIN);
        assert_eq!(
            upcoming(&at_0230, "2026-03-28T00:00:00Z", 3),
            [
                "2026-03-28T01:30:00.000Z",
                "2026-03-29T01:00:00.000Z",
                "2026-03-30T00:30:00.000Z"
            ]
        );
        assert_eq!(
            upcoming(&at_0230, "2026-10-24T00:00:00Z", 3),
            [
                "2026-10-24T00:30:00.000Z",
                "2026-10-25T00:30:00.000Z",
                "2026-10-26T01:30:00.000Z"
            ]
        );
        // Hourly: 02:00 CEST runs, the repeated 02:00 CET does not, then 03:00 CET.
        let hourly = parse("0 * * * *", BERLIN);
        assert_eq!(
            upcoming(&hourly, "2026-10-24T23:30:00Z", 3),
            [
                "2026-10-25T00:00:00.000Z",
                "2026-10-25T02:00:00.000Z",
                "2026-10-25T03:00:00.000Z"
            ]
        );
        assert_eq!(
            upcoming(&hourly, "2026-03-29T00:30:00Z", 2),
            ["2026-03-29T01:00:00.000Z", "2026-03-29T02:00:00.000Z"]
        );
    }

    // --- Counting and extremes --------------------------------------------------------------

    #[test]
    fn counting_a_week_of_seconds_is_fast_and_exact() {
        let schedule = parse("R/2026-01-01T00:00:00Z/PT1S", None);
        let from = utc("2026-02-01T00:00:00Z");
        let to = from + TimeDelta::weeks(1);
        let started = Instant::now();
        assert_eq!(schedule.count_between(from, to, u64::MAX), 604_800);
        assert_eq!(schedule.count_between(from, to, 100), 100);
        assert!(
            started.elapsed().as_millis() < 50,
            "{:?}",
            started.elapsed()
        );

        // Half-open: [from, to), to the millisecond.
        let offset = parse("R/2026-01-01T00:00:00.500Z/PT1S", None);
        let start = utc("2026-01-01T00:00:00Z");
        assert_eq!(
            offset.count_between(start, start + TimeDelta::seconds(10), 100),
            10
        );
        let on_target = utc("2026-01-01T00:00:09.500Z");
        assert_eq!(offset.count_between(start, on_target, 100), 9);
        assert_eq!(offset.count_between(on_target, on_target, 100), 0);
        assert_eq!(offset.count_between(on_target, start, 100), 0);

        let quarter = parse("R//PT0.25S", None);
        assert_eq!(
            quarter.count_between(now(), now() + TimeDelta::seconds(1), 100),
            4
        );
    }

    #[test]
    fn extreme_instants_and_periods_do_not_panic() {
        let schedules = [
            parse("R/9999-12-31T23:59:59.999Z/P10000Y", None),
            parse(
                "R/0001-01-01T00:00:00Z/PT0.001S",
                Some("Pacific/Kiritimati"),
            ),
            parse("R/9999-12-31T23:00:00/P1M", Some("Pacific/Kiritimati")),
            parse("R/0001-01-01T00:00:00/P1D", Some("America/Adak")),
            parse("* * * * * *", Some("Pacific/Kiritimati")),
            parse("0 0 29 2 *", Some("Etc/GMT+12")),
        ];
        let instants = [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            utc("4999-12-31T23:59:59Z"),
            utc("9999-12-31T23:59:59Z"),
        ];
        for schedule in &schedules {
            for &instant in &instants {
                let _ = schedule.first_at_or_after(instant);
                let _ = schedule.next_after(instant);
                let _ = schedule.upcoming(instant, 3);
                for &other in &instants {
                    let _ = schedule.count_between(instant, other, 1000);
                }
            }
        }
    }

    #[test]
    fn equality_ignores_when_a_cron_was_parsed() {
        let early = Schedule::parse("0 3 * * *", BERLIN, utc("2026-03-28T00:00:00Z")).unwrap();
        let late = Schedule::parse("0 3 * * *", BERLIN, utc("2026-07-01T00:00:00Z")).unwrap();
        assert_ne!(early.nominal_period(), late.nominal_period()); // 23 h across the gap
        assert_eq!(early, late);
        assert_ne!(early, parse("0 3 * * *", NEW_YORK));
    }

    // --- Properties -------------------------------------------------------------------------

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn any_zone() -> impl Strategy<Value = Tz> {
            prop::sample::select(&chrono_tz::TZ_VARIANTS[..])
        }

        fn wall_of(zone: Tz, instant: DateTime<Utc>) -> NaiveDateTime {
            instant.with_timezone(&zone).naive_local()
        }

        fn offset_of(zone: Tz, instant: DateTime<Utc>) -> i64 {
            i64::from(
                instant
                    .with_timezone(&zone)
                    .offset()
                    .fix()
                    .local_minus_utc(),
            )
        }

        /// An independent (slow) reading of the gap and overlap rule: the earlier instant of an
        /// existing wall clock, else the first instant whose wall clock reaches it, by scanning.
        fn reference_resolve(zone: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
            match zone.from_local_datetime(&wall) {
                LocalResult::Single(t) => t.with_timezone(&Utc),
                LocalResult::Ambiguous(earlier, _) => earlier.with_timezone(&Utc),
                LocalResult::None => {
                    let mut t = (wall - TimeDelta::hours(16))
                        .and_utc()
                        .with_second(0)
                        .unwrap();
                    t = t.with_nanosecond(0).unwrap();
                    while wall_of(zone, t) < wall {
                        t += TimeDelta::minutes(1);
                    }
                    while wall_of(zone, t - TimeDelta::seconds(1)) >= wall {
                        t -= TimeDelta::seconds(1);
                    }
                    t
                }
            }
        }

        fn anchor(day: i64, second_of_day: u32, millis: u32) -> NaiveDateTime {
            let date = NaiveDate::from_ymd_opt(1990, 1, 1).unwrap() + TimeDelta::days(day);
            let time =
                NaiveTime::from_num_seconds_from_midnight_opt(second_of_day, millis * 1_000_000);
            date.and_time(time.unwrap())
        }

        /// The instants at which an offset changes in `year`, to the second.
        fn transitions(zone: Tz, year: i32) -> Vec<DateTime<Utc>> {
            let start = NaiveDate::from_ymd_opt(year, 1, 1)
                .unwrap()
                .and_time(NaiveTime::MIN)
                .and_utc();
            let mut found = Vec::new();
            for day in 0..366 {
                let (low, high) = (
                    start + TimeDelta::days(day),
                    start + TimeDelta::days(day + 1),
                );
                if offset_of(zone, low) != offset_of(zone, high) {
                    let (mut low, mut high) = (low.timestamp(), high.timestamp());
                    while high - low > 1 {
                        let middle = (low + high) / 2;
                        let at = DateTime::from_timestamp(middle, 0).unwrap();
                        if offset_of(zone, at) == offset_of(zone, start + TimeDelta::days(day)) {
                            low = middle;
                        } else {
                            high = middle;
                        }
                    }
                    found.push(DateTime::from_timestamp(high, 0).unwrap());
                }
            }
            found
        }

        /// A wall-clock time `jitter_seconds` from one of the zone's transitions in `year` (from
        /// mid-year when it has none, rather than rejecting the case).
        fn near_transition(
            zone: Tz,
            year: i32,
            which: usize,
            jitter_seconds: i64,
        ) -> NaiveDateTime {
            let found = transitions(zone, year);
            let center = match found.len() {
                0 => NaiveDate::from_ymd_opt(year, 6, 1)
                    .unwrap()
                    .and_time(NaiveTime::MIN)
                    .and_utc(),
                n => found[which % n],
            };
            wall_of(zone, center) + TimeDelta::seconds(jitter_seconds)
        }

        /// Checks targets against the expected ones and the invariants every schedule keeps.
        fn check_against_reference(
            schedule: &Schedule,
            from: DateTime<Utc>,
            expected: &[DateTime<Utc>],
            probes: (u64, u64, u64),
        ) -> Result<(), TestCaseError> {
            let actual = schedule.upcoming(from, expected.len());
            prop_assert_eq!(&actual, &expected);
            prop_assert!(actual.windows(2).all(|pair| pair[0] < pair[1]));
            for &target in expected {
                prop_assert_eq!(schedule.first_at_or_after(target), Some(target));
                let just_before = target - TimeDelta::milliseconds(1);
                prop_assert_eq!(schedule.next_after(just_before), Some(target));
            }
            let (Some(&first), Some(&last)) = (expected.first(), expected.last()) else {
                return Ok(());
            };
            let span = u64::try_from((last - from).num_milliseconds())
                .unwrap()
                .max(1);
            let at = |fraction: u64| {
                from + TimeDelta::milliseconds(i64::try_from(fraction % span).unwrap())
            };
            // next_after(t) > t, and no target lies strictly between them.
            let probe = at(probes.0);
            let next = schedule.next_after(probe).unwrap();
            prop_assert!(next > probe);
            prop_assert_eq!(Some(&next), expected.iter().find(|&&t| t > probe));
            prop_assert!(first >= from);
            // count_between agrees with iteration.
            let (low, high) = (
                at(probes.1).min(at(probes.2)),
                at(probes.1).max(at(probes.2)),
            );
            let walked = expected.iter().filter(|&&t| low <= t && t < high).count();
            prop_assert_eq!(schedule.count_between(low, high, u64::MAX), walked as u64);
            prop_assert_eq!(schedule.count_between(low, high, 3), (walked as u64).min(3));
            Ok(())
        }

        fn check_daily_iso(
            zone: Tz,
            start: NaiveDateTime,
            skip: i64,
            before: i64,
            probes: (u64, u64, u64),
        ) -> Result<(), TestCaseError> {
            let text = format!("R/{}/P1D", start.format("%Y-%m-%dT%H:%M:%S%.3f"));
            let schedule = Schedule::parse(&text, Some(zone.name()), now()).unwrap();

            let first_index = (skip - 3).max(0);
            let mut reference: Vec<_> = (first_index..skip + 50)
                .map(|k| reference_resolve(zone, start + TimeDelta::days(k)))
                .collect();
            reference.dedup();
            let from = reference_resolve(zone, start + TimeDelta::days(skip))
                - TimeDelta::milliseconds(before);
            let expected: Vec<_> = reference
                .into_iter()
                .filter(|&t| t >= from)
                .take(30)
                .collect();
            prop_assert_eq!(expected.len(), 30);
            check_against_reference(&schedule, from, &expected, probes)?;

            for pair in expected.windows(2) {
                // Only where the offset changes by at most an hour are consecutive targets 23 to
                // 25 hours apart. Excluded: Samoa's and Tokelau's date-line moves, zones changing
                // their standard offset, and Antarctica/Troll's two-hour DST. A target moved out
                // of a gap carries the offset from before the gap, hence the instants just before.
                let second = TimeDelta::seconds(1);
                let offsets = [pair[0] - second, pair[0], pair[1] - second, pair[1]]
                    .map(|instant| offset_of(zone, instant));
                let shift = offsets.iter().max().unwrap() - offsets.iter().min().unwrap();
                if shift <= 3600 {
                    let gap = pair[1] - pair[0];
                    prop_assert!(
                        gap >= TimeDelta::hours(23) && gap <= TimeDelta::hours(25),
                        "{gap:?}"
                    );
                }
            }
            for &target in &expected {
                // The wall clock is the anchor's, unless it fell into a gap: then the target
                // is the transition out of it.
                let wall = wall_of(zone, target);
                let mut wanted = wall.date().and_time(start.time());
                if wanted > wall {
                    wanted -= TimeDelta::days(1);
                }
                if wall != wanted {
                    prop_assert!(zone.from_local_datetime(&wanted) == LocalResult::None);
                    prop_assert!(wall_of(zone, target - TimeDelta::milliseconds(1)) < wanted);
                    prop_assert!(wall > wanted);
                }
            }
            // The canonical form re-parses to the same targets.
            let again = Schedule::parse(&schedule.canonical(), Some(zone.name()), now()).unwrap();
            prop_assert_eq!(again.upcoming(from, 30), expected);
            Ok(())
        }

        /// `time`'s time of day as a daily cron with seconds, checked around `time`'s date.
        fn check_daily_cron(
            zone: Tz,
            time: NaiveDateTime,
            before: i64,
            probes: (u64, u64, u64),
        ) -> Result<(), TestCaseError> {
            let text = format!("{} {} {} * * *", time.second(), time.minute(), time.hour());
            let schedule = Schedule::parse(&text, Some(zone.name()), now()).unwrap();
            let mut reference: Vec<_> = (-3..40)
                .map(|k| reference_resolve(zone, time + TimeDelta::days(k)))
                .collect();
            reference.dedup();
            let from = reference_resolve(zone, time) - TimeDelta::milliseconds(before);
            let expected: Vec<_> = reference
                .into_iter()
                .filter(|&t| t >= from)
                .take(30)
                .collect();
            check_against_reference(&schedule, from, &expected, probes)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(192))]

            /// Daily ISO schedules in any zone, 1990-2040.
            #[test]
            fn daily_iso_targets_follow_the_wall_clock(
                zone in any_zone(),
                day in 0i64..18_262,
                second_of_day in 0u32..86_400,
                millis in 0u32..1000,
                skip in 0i64..18_000,
                before in 0i64..(36 * 3_600_000),
                probes in any::<(u64, u64, u64)>(),
            ) {
                let start = anchor(day, second_of_day, millis);
                check_daily_iso(zone, start, skip, before, probes)?;
            }

            /// Daily ISO schedules whose wall-clock time is within 90 minutes of a real
            /// transition of the zone (so often in its gap or overlap), run up to it.
            #[test]
            fn daily_iso_near_transitions(
                zone in any_zone(),
                year in 1991i32..2040,
                which in any::<usize>(),
                jitter_seconds in -5400i64..5400,
                days_before in 0i64..365,
                before in 0i64..(36 * 3_600_000),
                probes in any::<(u64, u64, u64)>(),
            ) {
                let wanted = near_transition(zone, year, which, jitter_seconds);
                let start = wanted - TimeDelta::days(days_before);
                check_daily_iso(zone, start, days_before, before, probes)?;
            }

            /// Daily cron schedules with seconds, in any zone, 1990-2040.
            #[test]
            fn daily_cron_targets_follow_the_wall_clock(
                zone in any_zone(),
                day in 0i64..18_262,
                second_of_day in 0u32..86_400,
                before in 0i64..(36 * 3_600_000),
                probes in any::<(u64, u64, u64)>(),
            ) {
                check_daily_cron(zone, anchor(day, second_of_day, 0), before, probes)?;
            }

            /// Daily cron schedules within 90 minutes of a real transition of the zone.
            #[test]
            fn daily_cron_near_transitions(
                zone in any_zone(),
                year in 1990i32..2040,
                which in any::<usize>(),
                jitter_seconds in -5400i64..5400,
                before in 0i64..(36 * 3_600_000),
                probes in any::<(u64, u64, u64)>(),
            ) {
                let wanted = near_transition(zone, year, which, jitter_seconds);
                check_daily_cron(zone, wanted, before, probes)?;
            }

            /// Interval cron schedules around real DST transitions: no wall-clock time runs twice,
            /// gap times run once right after the gap.
            #[test]
            fn interval_cron_around_transitions(
                zone in any_zone(),
                year in 1990i32..2040,
                step in prop::sample::select(vec![1u32, 5, 7, 15, 20, 30, 60]),
                first_minute in 0u32..60,
                which in any::<usize>(),
                probes in any::<(u64, u64, u64)>(),
            ) {
                let found = transitions(zone, year);
                let center = match found.len() {
                    0 => NaiveDate::from_ymd_opt(year, 6, 1).unwrap().and_time(NaiveTime::MIN).and_utc(),
                    n => found[which % n],
                };
                // Minutes first, first + step, ... up to 59 (often not :00, so that a transition
                // instant is not itself a match).
                let first = first_minute % step;
                let text = format!("{first}-59/{step} * * * *");
                let schedule = Schedule::parse(&text, Some(zone.name()), now()).unwrap();

                let first_wall = (wall_of(zone, center) - TimeDelta::hours(4)).with_second(0).unwrap();
                let mut reference: Vec<_> = (0..8 * 60)
                    .map(|minute| first_wall + TimeDelta::minutes(minute))
                    .filter(|wall| wall.minute() >= first && (wall.minute() - first) % step == 0)
                    .map(|wall| reference_resolve(zone, wall))
                    .collect();
                reference.dedup();
                let from = reference_resolve(zone, first_wall);
                check_against_reference(&schedule, from, &reference, probes)?;
                let walls: Vec<_> = reference.iter().map(|&t| wall_of(zone, t)).collect();
                prop_assert!(walls.windows(2).all(|pair| pair[0] < pair[1]));
            }

            /// Monthly ISO schedules: the bracketed index search agrees with a plain walk.
            #[test]
            fn monthly_iso_search_agrees_with_walking(
                zone in any_zone(),
                day in 0i64..18_262,
                second_of_day in 0u32..86_400,
                later_days in 0i64..(50 * 366),
                time_part_minutes in prop::sample::select(vec![0i64, 1, 90, 1440 * 3]),
            ) {
                let start = anchor(day, second_of_day, 0);
                let period = if time_part_minutes == 0 { "P1M".to_owned() } else { format!("P1MT{time_part_minutes}M") };
                let text = format!("R/{}/{period}", start.format("%Y-%m-%dT%H:%M:%S"));
                let schedule = Schedule::parse(&text, Some(zone.name()), now()).unwrap();
                let at = reference_resolve(zone, start) + TimeDelta::days(later_days);
                let walked = (0u32..)
                    .map(|k| {
                        let wall = start.checked_add_months(Months::new(k)).unwrap();
                        reference_resolve(zone, wall) + TimeDelta::minutes(time_part_minutes * i64::from(k))
                    })
                    .find(|&t| t >= at);
                prop_assert_eq!(schedule.first_at_or_after(at), walked);
            }

            /// Fixed periods: arithmetic agrees with walking.
            #[test]
            fn fixed_period_count_agrees_with_walking(
                seconds in 0u32..100,
                millis in 0u32..1000,
                start_millis in 0i64..1_000_000_000,
                window_start in -100_000i64..100_000_000,
                window_steps in 0i64..2000,
            ) {
                prop_assume!(seconds > 0 || millis > 0);
                let period_millis = i64::from(seconds) * 1000 + i64::from(millis);
                let start = utc("2026-01-01T00:00:00Z") + TimeDelta::milliseconds(start_millis);
                let text = format!("R/{}/PT{seconds}.{millis:03}S", start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
                let schedule = Schedule::parse(&text, None, now()).unwrap();
                let from = start + TimeDelta::milliseconds(window_start);
                let to = from + TimeDelta::milliseconds(window_steps * period_millis);
                let walked = schedule.upcoming(from, 5000).into_iter().take_while(|&t| t < to).count();
                prop_assert_eq!(schedule.count_between(from, to, u64::MAX), walked as u64);
                let first = schedule.first_at_or_after(from).unwrap();
                prop_assert!(first >= from && (first == start || first - TimeDelta::milliseconds(period_millis) < from));
            }

            /// No input makes parsing (or evaluating what parses) panic.
            #[test]
            fn parse_never_panics(
                text in prop_oneof![
                    any::<String>(),
                    "R[0-9]{0,3}/[-0-9T:.,Z+ ]{0,30}/-?[pP][-0-9YMWDTHS.,]{0,14}",
                    "[0-9*/,LW#?A-Z@+ -]{0,30}",
                    "[Rr0-9/]{0,10}",
                ],
                zone in prop::option::of("[A-Za-z/_ ]{0,20}"),
            ) {
                if let Ok(schedule) = Schedule::parse(&text, zone.as_deref(), now()) {
                    let _ = schedule.canonical();
                    let _ = schedule.upcoming(now(), 3);
                    let _ = schedule.count_between(now(), now() + TimeDelta::days(1), 100);
                }
            }
        }
    }
}
