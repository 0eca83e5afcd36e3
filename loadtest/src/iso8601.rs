//! The ISO 8601 durations the load test writes (epsilons, periods) and reads back (a job's
//! epsilon, a schedule's period), by its own code: dron's parser is what is under test.
//!
//! Only durations of fixed length: `P[nW][nD][T[nH][nM][nS]]`, a day being 24 hours (the checker
//! works in UTC, where every day is). Years and months, whose length depends on the calendar, are
//! refused with [`DurationError::Calendar`]. As ISO 8601 allows, the last number may have a
//! decimal fraction (`PT0.5S`, `PT1,5H`); the total must be a whole number of milliseconds.

const SECOND_MS: i128 = 1_000;
const MINUTE_MS: i128 = 60 * SECOND_MS;
const HOUR_MS: i128 = 60 * MINUTE_MS;
const DAY_MS: i128 = 24 * HOUR_MS;
const WEEK_MS: i128 = 7 * DAY_MS;

/// The designators allowed before `T` and after it, in the order ISO 8601 requires, each with
/// its length in ms (None: a calendar unit of no fixed length).
const DATE_UNITS: [(u8, Option<i128>); 4] = [
    (b'Y', None),
    (b'M', None),
    (b'W', Some(WEEK_MS)),
    (b'D', Some(DAY_MS)),
];
const TIME_UNITS: [(u8, Option<i128>); 3] = [
    (b'H', Some(HOUR_MS)),
    (b'M', Some(MINUTE_MS)),
    (b'S', Some(SECOND_MS)),
];

/// Why a duration was refused; each message quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("'{0}' is not an ISO 8601 duration such as PT1S, PT0.5S, PT1M30S or P1D")]
    Malformed(String),
    #[error("'{0}' has years or months, whose length depends on the calendar")]
    Calendar(String),
    #[error("'{0}' is not a whole number of milliseconds")]
    TooPrecise(String),
    #[error("'{0}' is zero")]
    Zero(String),
    #[error("'{0}' is too long")]
    TooLong(String),
}

/// Formats a number of milliseconds as `PTnS`, with a decimal fraction when not whole seconds
/// (`PT0.5S`, `PT1.25S`): the form every workload sends.
pub fn format_duration_ms(ms: i64) -> String {
    // A negative value is written as one (the server refuses it with its own message).
    let sign = if ms < 0 { "-" } else { "" };
    let (seconds, millis) = (ms.unsigned_abs() / 1000, ms.unsigned_abs() % 1000);
    if millis == 0 {
        return format!("PT{sign}{seconds}S");
    }
    let fraction = format!("{millis:03}");
    format!("PT{sign}{seconds}.{}S", fraction.trim_end_matches('0'))
}

/// Parses a duration of fixed length into milliseconds (see the module comment).
pub fn parse_duration_ms(text: &str) -> Result<i64, DurationError> {
    let malformed = || DurationError::Malformed(text.to_string());
    let body = text.strip_prefix('P').ok_or_else(malformed)?;
    let (date, time) = match body.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (body, None),
    };
    // "P", "PT" and "P1DT" name no number.
    if time == Some("") || (date.is_empty() && time.is_none()) {
        return Err(malformed());
    }
    let date_ms = sum_components(text, date, &DATE_UNITS, time.is_none())?;
    let time_ms = sum_components(text, time.unwrap_or(""), &TIME_UNITS, true)?;
    let total = date_ms + time_ms;
    if total == 0 {
        return Err(DurationError::Zero(text.to_string()));
    }
    i64::try_from(total).map_err(|_| DurationError::TooLong(text.to_string()))
}

/// The milliseconds of `part` (a run of `<number><designator>`), with the designators in the
/// order of `units`, each at most once. Only the duration's very last number (`ends_duration`)
/// may have a fraction.
fn sum_components(
    text: &str,
    mut part: &str,
    units: &[(u8, Option<i128>)],
    ends_duration: bool,
) -> Result<i128, DurationError> {
    let malformed = || DurationError::Malformed(text.to_string());
    let mut allowed = units;
    let mut total: i128 = 0;
    while !part.is_empty() {
        let number_len = part
            .bytes()
            .position(|byte| !(byte.is_ascii_digit() || byte == b'.' || byte == b','))
            .ok_or_else(malformed)?;
        let (number, rest) = part.split_at(number_len);
        let designator = rest.as_bytes()[0];
        let index = allowed
            .iter()
            .position(|&(unit, _)| unit == designator)
            .ok_or_else(malformed)?;
        let unit_ms = allowed[index]
            .1
            .ok_or(DurationError::Calendar(text.to_string()))?;
        allowed = &allowed[index + 1..];
        part = &rest[1..];
        let last = ends_duration && part.is_empty();
        total += number_ms(text, number, unit_ms, last)?;
    }
    Ok(total)
}

/// `number` (digits, optionally a decimal sign and more digits) times `unit_ms`, exactly.
fn number_ms(
    text: &str,
    number: &str,
    unit_ms: i128,
    may_have_fraction: bool,
) -> Result<i128, DurationError> {
    let malformed = || DurationError::Malformed(text.to_string());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|byte| byte.is_ascii_digit());
    // A decimal sign needs digits on both sides (`1.5`, never `1.` or `.5`).
    let (whole, fraction) = match number.split_once(['.', ',']) {
        Some((whole, fraction)) if may_have_fraction && digits(fraction) => (whole, fraction),
        Some(_) => return Err(malformed()),
        None => (number, ""),
    };
    if !digits(whole) {
        return Err(malformed());
    }
    // 18 digits always fit an i64; more is no duration anyone means.
    let too_long = || DurationError::TooLong(text.to_string());
    if whole.len() > 18 {
        return Err(too_long());
    }
    let whole: i128 = whole.parse().map_err(|_| too_long())?;
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > 9 {
        return Err(DurationError::TooPrecise(text.to_string()));
    }
    let fraction_ms = match fraction {
        "" => 0,
        digits => {
            let scale = 10i128.pow(digits.len() as u32);
            let scaled = digits.parse::<i128>().map_err(|_| malformed())? * unit_ms;
            if scaled % scale != 0 {
                return Err(DurationError::TooPrecise(text.to_string()));
            }
            scaled / scale
        }
    };
    Ok(whole * unit_ms + fraction_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_time_durations() {
        let cases = [
            ("PT1S", 1_000),
            ("PT60S", 60_000),
            ("PT0.5S", 500),
            ("PT0,25S", 250),
            ("PT1.001S", 1_001),
            ("PT1M", 60_000),
            ("PT1M30S", 90_000),
            ("PT2H", 7_200_000),
            ("PT1.5H", 5_400_000),
            ("PT1H2M3.5S", 3_723_500),
            ("PT90S", 90_000),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn days_and_weeks_are_24_hours_each() {
        assert_eq!(parse_duration_ms("P1D"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("P2D"), Ok(172_800_000));
        assert_eq!(parse_duration_ms("P1W"), Ok(604_800_000));
        assert_eq!(parse_duration_ms("P1DT1H"), Ok(90_000_000));
        assert_eq!(parse_duration_ms("P1W2DT3H4M5S"), Ok(788_645_000));
    }

    #[test]
    fn refuses_calendar_units() {
        for text in ["P1M", "P1Y", "P1Y2M", "P1MT1S"] {
            assert_eq!(
                parse_duration_ms(text),
                Err(DurationError::Calendar(text.into())),
                "{text}"
            );
        }
        // After T, M is minutes.
        assert_eq!(parse_duration_ms("PT1M"), Ok(60_000));
    }

    #[test]
    fn refuses_malformed_durations() {
        for text in [
            "",
            "P",
            "PT",
            "P1DT",
            "1S",
            "PT1",
            "PTS",
            "PT1X",
            "PT1S1M",
            "PT1S1S",
            "P1H",
            "PT1D",
            "-PT1S",
            "PT-1S",
            "PT.5S",
            "PT1.S",
            "PT1.5M30S",
            "pt1s",
            "PT1 S",
            "PT1.2.3S",
        ] {
            assert!(
                matches!(parse_duration_ms(text), Err(DurationError::Malformed(_))),
                "{text}: {:?}",
                parse_duration_ms(text)
            );
        }
        assert_eq!(
            parse_duration_ms("PT0S"),
            Err(DurationError::Zero("PT0S".into()))
        );
        assert_eq!(
            parse_duration_ms("PT0.0001S"),
            Err(DurationError::TooPrecise("PT0.0001S".into()))
        );
        assert!(matches!(
            parse_duration_ms("PT9999999999999999999S"),
            Err(DurationError::TooLong(_))
        ));
        assert!(matches!(
            parse_duration_ms("P999999999999999999W"),
            Err(DurationError::TooLong(_))
        ));
    }

    #[test]
    fn formats_milliseconds_as_seconds() {
        assert_eq!(format_duration_ms(60_000), "PT60S");
        assert_eq!(format_duration_ms(500), "PT0.5S");
        assert_eq!(format_duration_ms(1_250), "PT1.25S");
        assert_eq!(format_duration_ms(1_001), "PT1.001S");
        assert_eq!(format_duration_ms(86_400_000), "PT86400S");
        assert_eq!(format_duration_ms(-1_500), "PT-1.5S");
    }

    #[test]
    fn what_is_formatted_parses_back() {
        for ms in [1, 7, 10, 100, 999, 1_000, 1_001, 7_919, 60_000, 3_600_123] {
            assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms), "{ms}");
        }
    }
}
