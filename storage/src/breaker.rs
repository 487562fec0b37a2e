//! A per-store circuit breaker for interactive reads (playback).
//!
//! A store that stops answering would hold every viewer's request until the request
//! deadline (the S3 client retries for a long time). Interactive reads instead run under
//! a short timeout, and after [`TRIP_AFTER`] failures in a row the breaker opens: reads
//! of that store answer [`crate::Error::Unavailable`] at once for [`OPEN_FOR`], then one
//! read at a time is let through as a probe (half-open) until one succeeds, which closes
//! the breaker. Background work (jobs) is not cut short, but its outcomes feed the
//! breaker too: a job that reaches the store closes it, a job that fails counts.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures in a row that open the breaker.
pub const TRIP_AFTER: u32 = 3;
/// How long an open breaker refuses reads before letting a probe through.
pub const OPEN_FOR: Duration = Duration::from_secs(5);
/// The timeout of one interactive read.
pub const INTERACTIVE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub(crate) struct Breaker {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    /// When the current half-open probe started (one probe per timeout at a time).
    probe_since: Option<Instant>,
}

impl Breaker {
    /// May an interactive read go to the store now? `Err(seconds)`: no, retry after.
    pub(crate) fn admit(&self, now: Instant) -> Result<(), u32> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(until) = s.open_until else {
            return Ok(());
        };
        if now < until {
            return Err(until.duration_since(now).as_secs().max(1) as u32);
        }
        // Half-open: one probe at a time (a probe whose caller vanished expires).
        match s.probe_since {
            Some(t) if now.duration_since(t) < INTERACTIVE_TIMEOUT => {
                Err(INTERACTIVE_TIMEOUT.as_secs().max(1) as u32)
            }
            _ => {
                s.probe_since = Some(now);
                Ok(())
            }
        }
    }

    /// The store answered (an object or a clean "not found").
    pub(crate) fn success(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s = State::default();
    }

    /// The store failed or timed out.
    pub(crate) fn failure(&self, now: Instant) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.failures = s.failures.saturating_add(1);
        let probing = s.open_until.is_some();
        if probing || s.failures >= TRIP_AFTER {
            s.open_until = Some(now + OPEN_FOR);
            s.probe_since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_after_failures_refuses_then_probes_one_at_a_time_and_recovers() {
        let b = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..TRIP_AFTER - 1 {
            assert!(b.admit(t0).is_ok());
            b.failure(t0);
        }
        assert!(b.admit(t0).is_ok(), "still closed");
        b.failure(t0);
        assert_eq!(b.admit(t0), Err(5), "open: refused with the time left");
        let later = t0 + OPEN_FOR;
        assert!(b.admit(later).is_ok(), "half-open: one probe");
        assert!(b.admit(later).is_err(), "a second probe waits");
        b.failure(later);
        assert!(
            b.admit(later + Duration::from_secs(1)).is_err(),
            "open again"
        );
        let again = later + OPEN_FOR;
        assert!(b.admit(again).is_ok());
        b.success();
        assert!(b.admit(again).is_ok() && b.admit(again).is_ok(), "closed");
        // A success in between resets the count.
        b.failure(again);
        b.failure(again);
        b.success();
        b.failure(again);
        assert!(b.admit(again).is_ok());
    }
}
