//! Run-time statistics of a job's finished runs, for Chronos's `/scheduler/job/stat/{name}` and
//! `/scheduler/stats/{statistic}`. Chronos kept a metrics histogram per job in memory (lost on
//! fail-over); dron computes the same figures from the durable history instead.

use dron_model::instance::HistoryEntry;

/// The statistics Chronos names in its URLs and histogram JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    P75,
    P95,
    P98,
    P99,
    Median,
    Mean,
}

impl Statistic {
    pub const ALL: [Statistic; 6] = [
        Statistic::P75,
        Statistic::P95,
        Statistic::P98,
        Statistic::P99,
        Statistic::Median,
        Statistic::Mean,
    ];

    /// Chronos's name, as in `/scheduler/stats/99thPercentile`.
    pub fn as_str(self) -> &'static str {
        match self {
            Statistic::P75 => "75thPercentile",
            Statistic::P95 => "95thPercentile",
            Statistic::P98 => "98thPercentile",
            Statistic::P99 => "99thPercentile",
            Statistic::Median => "median",
            Statistic::Mean => "mean",
        }
    }

    pub fn parse(text: &str) -> Option<Statistic> {
        Statistic::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// How long a finished run took (launch of its last attempt to its end), in milliseconds.
/// Skipped targets, and runs killed before they started, have no duration.
pub fn run_duration_ms(entry: &HistoryEntry) -> Option<i64> {
    match entry {
        HistoryEntry::Run(run) => {
            let (started, ended) = (run.started_ms?, run.ended_ms?);
            Some((ended - started).max(0))
        }
        HistoryEntry::Skipped(_) => None,
    }
}

/// Durations of a sample of runs, sorted, ready for quantiles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Durations {
    sorted_ms: Vec<i64>,
}

impl Durations {
    pub fn new(mut durations_ms: Vec<i64>) -> Self {
        durations_ms.sort_unstable();
        Durations {
            sorted_ms: durations_ms,
        }
    }

    pub fn from_history(history: &[HistoryEntry]) -> Self {
        Durations::new(history.iter().filter_map(run_duration_ms).collect())
    }

    pub fn count(&self) -> usize {
        self.sorted_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted_ms.is_empty()
    }

    /// The statistic in milliseconds; 0 for an empty sample, as Chronos's histogram answers.
    pub fn get(&self, statistic: Statistic) -> f64 {
        match statistic {
            Statistic::P75 => self.quantile(0.75),
            Statistic::P95 => self.quantile(0.95),
            Statistic::P98 => self.quantile(0.98),
            Statistic::P99 => self.quantile(0.99),
            Statistic::Median => self.quantile(0.5),
            Statistic::Mean => self.mean(),
        }
    }

    fn mean(&self) -> f64 {
        if self.sorted_ms.is_empty() {
            return 0.0;
        }
        self.sorted_ms.iter().map(|d| *d as f64).sum::<f64>() / self.sorted_ms.len() as f64
    }

    /// The quantile the way Chronos's metrics library (Dropwizard's uniform snapshot)
    /// interpolates it, so figures match what Chronos users are used to.
    fn quantile(&self, q: f64) -> f64 {
        let values = &self.sorted_ms;
        let Some(last) = values.last() else {
            return 0.0;
        };
        let position = q * (values.len() + 1) as f64;
        let index = position.floor() as usize;
        if index < 1 {
            return values[0] as f64;
        }
        if index >= values.len() {
            return *last as f64;
        }
        let (lower, upper) = (values[index - 1] as f64, values[index] as f64);
        lower + (position - position.floor()) * (upper - lower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dron_model::instance::{InstanceRecord, InstanceState, RunCause, SkippedTargets};

    #[test]
    fn an_empty_sample_answers_zero() {
        let empty = Durations::default();
        for statistic in Statistic::ALL {
            assert_eq!(empty.get(statistic), 0.0);
        }
    }

    #[test]
    fn quantiles_interpolate_like_dropwizard() {
        let sample = Durations::new((1..=10).rev().map(|s| s * 100).collect());
        assert_eq!(sample.count(), 10);
        assert_eq!(sample.get(Statistic::Median), 550.0);
        assert_eq!(sample.get(Statistic::Mean), 550.0);
        assert_eq!(sample.get(Statistic::P75), 825.0);
        assert_eq!(
            sample.get(Statistic::P99),
            1000.0,
            "past the end: the largest"
        );
        let one = Durations::new(vec![42]);
        assert_eq!(one.get(Statistic::P75), 42.0);
        assert_eq!(one.get(Statistic::Median), 42.0);
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for statistic in Statistic::ALL {
            assert_eq!(Statistic::parse(statistic.as_str()), Some(statistic));
        }
        assert_eq!(Statistic::parse("90thPercentile"), None);
    }

    #[test]
    fn only_runs_that_started_and_ended_have_a_duration() {
        let mut run = InstanceRecord::new("a", 0, RunCause::Schedule, 0);
        run.state = InstanceState::Succeeded;
        run.started_ms = Some(1_000);
        run.ended_ms = Some(3_500);
        let mut never_started = run.clone();
        never_started.started_ms = None;
        let skipped = SkippedTargets {
            job: "a".into(),
            first_target_ms: 0,
            until_ms: 10,
            count: 3,
            recorded_ms: 10,
            reason: String::new(),
        };
        let history = vec![
            HistoryEntry::Run(run),
            HistoryEntry::Run(never_started),
            HistoryEntry::Skipped(skipped),
        ];
        assert_eq!(
            Durations::from_history(&history),
            Durations::new(vec![2_500])
        );
    }
}
