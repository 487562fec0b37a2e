//! Pure queue policy: priorities (class, then per-tenant fairness) and retry backoff.

use std::time::Duration;

/// Job classes, most urgent first. The class dominates the priority; fairness orders
/// jobs inside a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobClass {
    LiveToVod = 3,
    Upload = 2,
    Backfill = 1,
}

/// Span of priorities inside one class.
const CLASS_SPAN: usize = 1_000_000;

/// The queue priority of a new job (higher runs first; ties run oldest first).
///
/// Fair queuing by virtual time, decided at enqueue: a tenant's n-th job waiting in a class
/// gets `class − n`, so a tenant with a backlog of 1,000 fills priorities `p, p−1, …,
/// p−999` while another tenant's single job gets `p` and runs right after the job ahead
/// of it — at most one job slot of delay, whatever the backlog.
pub fn priority(class: JobClass, tenant_waiting: usize) -> usize {
    (class as usize) * CLASS_SPAN + (CLASS_SPAN - 1 - tenant_waiting.min(CLASS_SPAN - 1))
}

/// Delay before attempt `attempt + 1` after attempt `attempt` failed: exponential from
/// `base`, capped, plus up to 25 % random jitter (`jitter` in 0..1) so that jobs failing
/// together do not come back together.
pub fn backoff(base: Duration, cap: Duration, attempt: u32, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let d = exp.min(cap);
    d + d.mul_f64(0.25 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_dominate_and_backlogs_sink() {
        assert_eq!(priority(JobClass::Upload, 0), 2_999_999);
        assert_eq!(priority(JobClass::Upload, 999), 2_999_000);
        assert_eq!(priority(JobClass::LiveToVod, 5_000_000), 3_000_000);
        assert!(priority(JobClass::LiveToVod, 999_998) > priority(JobClass::Upload, 0));
        assert!(priority(JobClass::Upload, 999_998) > priority(JobClass::Backfill, 0));
        // A single job from a quiet tenant ranks with the head of a big backlog.
        assert_eq!(priority(JobClass::Upload, 0), priority(JobClass::Upload, 0));
        assert!(priority(JobClass::Upload, 0) > priority(JobClass::Upload, 1));
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let (b, c) = (Duration::from_secs(2), Duration::from_secs(60));
        assert_eq!(backoff(b, c, 1, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(b, c, 2, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(b, c, 3, 0.0), Duration::from_secs(8));
        assert_eq!(backoff(b, c, 10, 0.0), Duration::from_secs(60));
        assert_eq!(backoff(b, c, 1, 1.0), Duration::from_millis(2500));
        assert_eq!(backoff(b, c, 40, 0.5), Duration::from_millis(67_500));
    }
}
