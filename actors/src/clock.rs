//! Where "now" comes from. Production reads the wall clock; unit tests use tokio's clock, which
//! `start_paused` tests advance instantly and deterministically (`TokioClock`, with the
//! `testsuite` feature outside this crate's tests).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;

    fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }

    /// The tokio instant at which the wall clock will read `at_ms`.
    fn instant_at(&self, at_ms: i64) -> Instant {
        let wait_ms = (at_ms - self.now_ms()).max(0) as u64;
        Instant::now() + std::time::Duration::from_millis(wait_ms)
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall-clock time that advances with tokio's clock from a fixed start (for paused-time tests;
/// built for tests and with the `testsuite` feature only).
#[cfg(any(test, feature = "testsuite"))]
pub struct TokioClock {
    start_wall: DateTime<Utc>,
    start_instant: Instant,
}

#[cfg(any(test, feature = "testsuite"))]
impl TokioClock {
    pub fn starting_at(start_wall: DateTime<Utc>) -> Self {
        TokioClock {
            start_wall,
            start_instant: Instant::now(),
        }
    }
}

#[cfg(any(test, feature = "testsuite"))]
impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = Instant::now() - self.start_instant;
        self.start_wall + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}

/// A [`TokioClock`] whose wall clock a test can step, as NTP steps a real one: tokio's
/// (monotonic) clock goes on unchanged (for tests and the `testsuite` feature only).
#[cfg(any(test, feature = "testsuite"))]
pub struct SteppedClock {
    tokio: TokioClock,
    offset_ms: std::sync::atomic::AtomicI64,
}

#[cfg(any(test, feature = "testsuite"))]
impl SteppedClock {
    pub fn starting_at(start_wall: DateTime<Utc>) -> Self {
        SteppedClock {
            tokio: TokioClock::starting_at(start_wall),
            offset_ms: Default::default(),
        }
    }

    /// Moves the wall clock by `by_ms` (negative: back), at once.
    pub fn step(&self, by_ms: i64) {
        use std::sync::atomic::Ordering;
        self.offset_ms.fetch_add(by_ms, Ordering::SeqCst);
    }
}

#[cfg(any(test, feature = "testsuite"))]
impl Clock for SteppedClock {
    fn now(&self) -> DateTime<Utc> {
        use std::sync::atomic::Ordering;
        let offset = self.offset_ms.load(Ordering::SeqCst);
        self.tokio.now() + chrono::Duration::milliseconds(offset)
    }
}
