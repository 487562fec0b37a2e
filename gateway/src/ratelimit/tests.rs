//! Exact GCRA boundaries on a controlled clock.

use std::time::Duration;

use governor::clock::FakeRelativeClock;

use super::*;

fn bucket(policy: &str, subject: &str, rps: u32, burst: u32) -> Bucket {
    Bucket {
        policy: policy.into(),
        subject: subject.into(),
        limit: RateLimit {
            requests_per_s: rps,
            burst,
        },
    }
}

#[test]
fn burst_then_refused_then_refilled_after_one_interval() {
    let clock = FakeRelativeClock::default();
    let l = LocalLimiter::new(clock.clone(), 100);
    let b = [bucket("admin-tenant", "t1", 2, 3)];
    for left in [2, 1, 0] {
        let d = l.decide(&b).unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, left);
    }
    let d = l.decide(&b).unwrap();
    assert!(!d.allowed, "burst + 1 must be refused");
    assert_eq!(d.reset_s, 1, "one interval (500 ms) rounds up to 1 s");
    // One interval is 500 ms: a nanosecond short is still refused, exactly on time passes.
    clock.advance(Duration::from_nanos(499_999_999));
    assert!(!l.decide(&b).unwrap().allowed);
    clock.advance(Duration::from_nanos(1));
    assert!(l.decide(&b).unwrap().allowed);
    assert!(!l.decide(&b).unwrap().allowed);
    // A full refill (burst x interval) gives the whole burst back, and no more.
    clock.advance(Duration::from_millis(1500));
    for _ in 0..3 {
        assert!(l.decide(&b).unwrap().allowed);
    }
    assert!(!l.decide(&b).unwrap().allowed);
}

#[test]
fn buckets_are_separate_per_subject_and_the_tightest_is_reported() {
    let clock = FakeRelativeClock::default();
    let l = LocalLimiter::new(clock.clone(), 100);
    let a = [
        bucket("ingest-key", "k1", 1, 5),
        bucket("ingest-tenant", "t1", 1, 2),
    ];
    let d = l.decide(&a).unwrap();
    assert!(d.allowed);
    assert_eq!((d.policy.as_str(), d.remaining), ("ingest-tenant", 1));
    assert!(l.decide(&a).unwrap().allowed);
    let d = l.decide(&a).unwrap();
    assert!(!d.allowed);
    assert_eq!(d.policy, "ingest-tenant");
    // Another tenant is untouched.
    assert!(
        l.decide(&[bucket("ingest-tenant", "t2", 1, 2)])
            .unwrap()
            .allowed
    );
}

#[test]
fn a_changed_limit_takes_effect() {
    let l = LocalLimiter::new(FakeRelativeClock::default(), 100);
    assert!(
        l.decide(&[bucket("admin-tenant", "t", 1, 1)])
            .unwrap()
            .allowed
    );
    assert!(
        !l.decide(&[bucket("admin-tenant", "t", 1, 1)])
            .unwrap()
            .allowed
    );
    assert!(
        l.decide(&[bucket("admin-tenant", "t", 1, 5)])
            .unwrap()
            .allowed
    );
}

#[test]
fn memory_is_bounded_by_max_keys() {
    let l = LocalLimiter::new(FakeRelativeClock::default(), 50);
    for i in 0..5000 {
        l.decide(&[bucket(
            "playback-ip",
            &format!("10.0.{}.{}", i / 256, i % 256),
            1,
            1,
        )]);
    }
    l.buckets.run_pending_tasks();
    assert!(l.buckets.entry_count() <= 50, "{}", l.buckets.entry_count());
}

#[test]
fn headers_follow_the_draft_syntax() {
    let d = Decision {
        allowed: true,
        policy: "admin-tenant".into(),
        limit: RateLimit {
            requests_per_s: 2,
            burst: 5,
        },
        remaining: 4,
        reset_s: 1,
    };
    let [(p, pv), (s, sv)] = d.headers();
    assert_eq!(p.as_str(), "ratelimit-policy");
    assert_eq!(pv, "\"admin-tenant\";q=5;w=3");
    assert_eq!(s.as_str(), "ratelimit");
    assert_eq!(sv, "\"admin-tenant\";r=4;t=1");
}
