//! Rate-limit decision latency: one decision (two buckets, as for an authenticated
//! request: its key and its tenant) through the gateway's Redis backend against a real
//! local `redis-server`, and through the in-process backend for comparison. Prints p50,
//! p99 and p99.9 of sequential decisions, then of 16 concurrent callers.
//! Usage: `ratelimit-redis [REDIS_URL] [DECISIONS]`; without a URL a private redis-server
//! is started on a free loopback port (scripts/redis.sh) and stopped at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::limits::RateLimit;
use sluice_gateway::ratelimit::{Bucket, LocalLimiter};
use sluice_gateway::ratelimit_redis::RedisLimiter;

fn buckets(i: usize) -> Vec<Bucket> {
    let limit = RateLimit {
        requests_per_s: 100_000,
        burst: 1_000_000,
    };
    vec![
        Bucket {
            policy: "admin-key".into(),
            subject: format!("k{}", i % 1000),
            limit,
        },
        Bucket {
            policy: "admin-tenant".into(),
            subject: format!("t{}", i % 100),
            limit,
        },
    ]
}

fn report(what: &str, mut v: Vec<Duration>) {
    v.sort();
    let q = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    println!(
        "{what}: n={} p50={:.1} µs p99={:.1} µs p99.9={:.1} µs max={:.1} µs",
        v.len(),
        q(0.50).as_secs_f64() * 1e6,
        q(0.99).as_secs_f64() * 1e6,
        q(0.999).as_secs_f64() * 1e6,
        v[v.len() - 1].as_secs_f64() * 1e6,
    );
}

struct PrivateRedis(std::path::PathBuf);

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = std::process::Command::new(root().join("scripts/redis.sh"))
            .arg("stop")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn start_redis() -> Result<(PrivateRedis, String), Box<dyn std::error::Error>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-redis-")
        .tempdir()?
        .keep();
    let out = std::process::Command::new(root().join("scripts/redis.sh"))
        .arg("start")
        .arg(&dir)
        .arg(port.to_string())
        .output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    Ok((
        PrivateRedis(dir),
        String::from_utf8(out.stdout)?.trim().to_string(),
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().filter(|u| u.starts_with("redis://"));
    let n: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let (_guard, url) = match url {
        Some(u) => (None, u),
        None => {
            let (g, u) = start_redis()?;
            (Some(g), u)
        }
    };
    println!("redis at {url}, {n} decisions, two buckets each");
    // A generous budget: the bench measures latency, it does not want fail-open answers.
    let redis = Arc::new(RedisLimiter::new(&url, Duration::from_secs(1)));
    for i in 0..1000 {
        redis
            .decide(&buckets(i))
            .await
            .map_err(|_| "warm-up failed")?;
    }
    let mut seq = Vec::with_capacity(n);
    for i in 0..n {
        let b = buckets(i);
        let t = Instant::now();
        let d = redis.decide(&b).await.map_err(|_| "redis failed")?;
        seq.push(t.elapsed());
        assert!(d.is_some_and(|d| d.allowed));
    }
    report("redis, sequential", seq);

    let per = n / 16;
    let mut tasks = Vec::new();
    let start = Instant::now();
    for w in 0..16 {
        let redis = redis.clone();
        tasks.push(tokio::spawn(async move {
            let mut v = Vec::with_capacity(per);
            for i in 0..per {
                let b = buckets(w * per + i);
                let t = Instant::now();
                redis.decide(&b).await.map_err(|_| "redis failed").unwrap();
                v.push(t.elapsed());
            }
            v
        }));
    }
    let mut conc = Vec::with_capacity(n);
    for t in tasks {
        conc.extend(t.await?);
    }
    let wall = start.elapsed();
    println!(
        "redis, 16 concurrent callers: {:.0} decisions/s",
        conc.len() as f64 / wall.as_secs_f64()
    );
    report("redis, 16 concurrent callers", conc);

    let local = LocalLimiter::new(governor::clock::DefaultClock::default(), 100_000);
    let mut mem = Vec::with_capacity(n);
    for i in 0..n {
        let b = buckets(i);
        let t = Instant::now();
        let _ = local.decide(&b);
        mem.push(t.elapsed());
    }
    report("in process (governor), sequential", mem);
    Ok(())
}
