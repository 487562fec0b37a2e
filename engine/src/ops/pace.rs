//! The optional bandwidth limit of a migration: every send reserves its bytes' share of
//! time on one shared schedule, and waits for its slot.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Paces sends to `rate` bytes per second across every task that shares it.
#[derive(Debug)]
pub(crate) struct Pacer {
    rate: Option<u64>,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    pub(crate) fn new(rate: Option<u64>) -> Self {
        Self {
            rate: rate.filter(|r| *r > 0),
            next: Mutex::new(None),
        }
    }

    /// Wait until `bytes` may be sent.
    pub(crate) async fn take(&self, bytes: u64) {
        let Some(rate) = self.rate else { return };
        let start = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let start = next.map_or(now, |n| n.max(now));
            let cost = Duration::from_secs_f64(bytes as f64 / rate as f64);
            *next = Some(start + cost);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sends_are_spread_at_the_rate() {
        let p = Pacer::new(Some(1_000_000));
        let t0 = Instant::now();
        p.take(100_000).await; // first slot at once
        p.take(100_000).await; // 0.1 s later
        p.take(50_000).await; // 0.2 s later
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        let unlimited = Pacer::new(None);
        let t1 = Instant::now();
        unlimited.take(u64::MAX).await;
        assert!(t1.elapsed() < Duration::from_millis(50));
    }
}
