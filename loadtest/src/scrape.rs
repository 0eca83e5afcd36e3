//! The server's own figures from `GET /metrics` (Prometheus text): counters, and the
//! start-lateness histogram, compared between two scrapes. Workloads whose tasks record
//! nothing (the built-in task) measure lateness this way.

use std::collections::HashMap;

use anyhow::Context;

/// One scrape: every sample by its full name with labels, e.g.
/// `dron_runs_finished_total{state="succeeded"}`.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: HashMap<String, f64>,
}

const LATENESS: &str = "dron_start_lateness_seconds";

impl Scrape {
    pub async fn take(client: &reqwest::Client, url: &str) -> anyhow::Result<Scrape> {
        let text = client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .context("server unreachable")?
            .text()
            .await?;
        Ok(Scrape::parse(&text))
    }

    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect();
        Scrape { samples }
    }

    pub fn value(&self, sample: &str) -> f64 {
        self.samples.get(sample).copied().unwrap_or_default()
    }

    /// The sum of every sample of `metric`, whatever its labels (e.g. a gauge per shard).
    pub fn sum_of(&self, metric: &str) -> f64 {
        let labelled = format!("{metric}{{");
        self.samples
            .iter()
            .filter(|(name, _)| *name == metric || name.starts_with(&labelled))
            .map(|(_, value)| value)
            .sum()
    }

    /// `sample` now minus in `earlier`.
    pub fn since(&self, earlier: &Scrape, sample: &str) -> f64 {
        self.value(sample) - earlier.value(sample)
    }

    /// The lateness histogram's buckets (upper bound in seconds, cumulative count) observed
    /// between `earlier` and this scrape.
    fn lateness_buckets(&self, earlier: &Scrape) -> Vec<(f64, f64)> {
        let prefix = format!("{LATENESS}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .keys()
            .filter_map(|key| {
                let bound = key.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().ok()?
                };
                Some((bound, self.since(earlier, key)))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }

    /// The `q` quantile of start lateness between the scrapes, in ms, as the upper bound of
    /// its histogram bucket (so "under X ms"); None when nothing started.
    pub fn lateness_quantile_ms(&self, earlier: &Scrape, q: f64) -> Option<f64> {
        let buckets = self.lateness_buckets(earlier);
        let total = buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = (q * total).ceil();
        let bound = buckets.iter().find(|(_, count)| *count >= rank)?.0;
        Some(bound * 1000.0)
    }

    /// Mean start lateness between the scrapes, in ms.
    pub fn lateness_mean_ms(&self, earlier: &Scrape) -> Option<f64> {
        let count = self.since(earlier, &format!("{LATENESS}_count"));
        let sum = self.since(earlier, &format!("{LATENESS}_sum"));
        (count > 0.0).then(|| sum / count * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# TYPE x counter\ndron_launches_total 10\n\
dron_start_lateness_seconds_bucket{le=\"0.001\"} 5\n\
dron_start_lateness_seconds_bucket{le=\"0.01\"} 10\n\
dron_start_lateness_seconds_bucket{le=\"+Inf\"} 10\n\
dron_start_lateness_seconds_sum 0.02\ndron_start_lateness_seconds_count 10\n";
    const AFTER: &str = "dron_launches_total 110\n\
dron_start_lateness_seconds_bucket{le=\"0.001\"} 55\n\
dron_start_lateness_seconds_bucket{le=\"0.01\"} 108\n\
dron_start_lateness_seconds_bucket{le=\"+Inf\"} 110\n\
dron_start_lateness_seconds_sum 0.52\ndron_start_lateness_seconds_count 110\n";

    #[test]
    fn quantiles_come_from_the_buckets_between_two_scrapes() {
        let (before, after) = (Scrape::parse(BEFORE), Scrape::parse(AFTER));
        assert_eq!(after.since(&before, "dron_launches_total"), 100.0);
        assert_eq!(after.lateness_quantile_ms(&before, 0.5), Some(1.0));
        assert_eq!(after.lateness_quantile_ms(&before, 0.98), Some(10.0));
        assert_eq!(
            after.lateness_quantile_ms(&before, 0.99),
            Some(f64::INFINITY)
        );
        assert_eq!(after.lateness_mean_ms(&before), Some(5.0));
        assert_eq!(before.lateness_quantile_ms(&before, 0.5), None);
    }
}
