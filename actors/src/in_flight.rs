//! Gauges of hand-overs in flight: the tasks that carry a shard's announcements to the bus
//! and its notices to the notifier until they are taken. Each holds its batch in memory, and
//! retries it when the receiver is slow, so a receiver that falls behind shows here first.

/// Counts one hand-over in `gauge` while it lives.
pub(crate) struct InFlight(&'static str);

impl InFlight {
    pub(crate) fn start(gauge: &'static str) -> Self {
        metrics::gauge!(gauge).increment(1.0);
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}
