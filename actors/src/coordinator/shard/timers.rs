//! The timer index: when each enabled scheduled job's next target falls due.
//!
//! It holds `(next_target_ms, job)` for every enabled job that has a next target, and nothing
//! else: the shard adds a job's timer when it indexes the job and takes it out with the job
//! (`insert_job`, `remove_job`), and a fired timer is taken out here and put back for the
//! job's new next target.

use std::collections::BTreeSet;

#[derive(Default)]
pub(super) struct Timers {
    /// (next target, job).
    due: BTreeSet<(i64, Box<str>)>,
}

impl Timers {
    pub(super) fn insert(&mut self, at_ms: i64, job: &str) {
        self.due.insert((at_ms, job.into()));
    }

    pub(super) fn remove(&mut self, at_ms: i64, job: &str) {
        self.due.remove(&(at_ms, job.into()));
    }

    /// A job whose timer fell due by `now_ms`, its timer taken out.
    pub(super) fn pop_due(&mut self, now_ms: i64) -> Option<Box<str>> {
        if self.due.first()?.0 > now_ms {
            return None;
        }
        self.due.pop_first().map(|(_, job)| job)
    }

    pub(super) fn next_ms(&self) -> Option<i64> {
        self.due.first().map(|(at, _)| *at)
    }

    pub(super) fn len(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_pop_in_time_order_and_only_when_due() {
        let mut timers = Timers::default();
        timers.insert(20, "b");
        timers.insert(10, "a");
        timers.insert(30, "c");
        timers.remove(30, "c");
        assert_eq!(timers.next_ms(), Some(10));
        assert_eq!(timers.pop_due(9), None);
        assert_eq!(timers.pop_due(25).as_deref(), Some("a"));
        assert_eq!(timers.pop_due(25).as_deref(), Some("b"));
        assert_eq!(timers.pop_due(i64::MAX), None);
        assert_eq!(timers.len(), 0);
    }
}
