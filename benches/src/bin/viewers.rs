//! Load generator for the viewer benchmark (benches/peer/delivery_vs_nginx.py): many
//! keep-alive viewers, each on its own connection, asking for a playlist and then a
//! segment every `--interval-ms` (with a random start so they do not march in step), for a
//! bounded `--duration-s`. Prints one JSON line: requests, errors (connect errors
//! included), and latency percentiles in milliseconds.
//!
//! usage: viewers --addr 127.0.0.1:8080 --playlist /v1/play/…/index.m3u8
//!                --segment /v1/play/…/seg_00001.ts [--viewers 10000] [--interval-ms 2000]
//!                [--duration-s 30] [--ramp-s 5]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

struct Args {
    addr: String,
    playlist: String,
    segment: String,
    viewers: usize,
    interval: Duration,
    duration: Duration,
    ramp: Duration,
}

fn args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:8080".into(),
        playlist: String::new(),
        segment: String::new(),
        viewers: 10_000,
        interval: Duration::from_millis(2000),
        duration: Duration::from_secs(30),
        ramp: Duration::from_secs(5),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let n = || {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--addr" => a.addr = v.clone(),
            "--playlist" => a.playlist = v.clone(),
            "--segment" => a.segment = v.clone(),
            "--viewers" => a.viewers = n() as usize,
            "--interval-ms" => a.interval = Duration::from_millis(n()),
            "--duration-s" => a.duration = Duration::from_secs(n()),
            "--ramp-s" => a.ramp = Duration::from_secs(n()),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        !a.playlist.is_empty() && !a.segment.is_empty(),
        "--playlist and --segment are required"
    );
    assert!(a.viewers > 0 && a.viewers <= 50_000, "--viewers: 1..=50000");
    assert!(
        a.duration <= Duration::from_secs(600),
        "--duration-s: at most 600"
    );
    a
}

#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    errors: AtomicU64,
    connect_errors: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

async fn viewer(a: Arc<Args>, stats: Arc<Stats>, start: Instant, offset: Duration) {
    tokio::time::sleep(offset).await;
    let end = start + a.ramp + a.duration;
    let host = a.addr.clone();
    let mut conn = None;
    let mut next = Instant::now();
    let mut lat = Vec::new();
    while Instant::now() < end {
        if conn.is_none() {
            match TcpStream::connect(&a.addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    match hyper::client::conn::http1::handshake(TokioIo::new(s)).await {
                        Ok((send, c)) => {
                            tokio::spawn(c);
                            conn = Some(send);
                        }
                        Err(_) => {
                            stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(_) => {
                    stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        for path in [&a.playlist, &a.segment] {
            let Some(send) = conn.as_mut() else { break };
            let req = Request::get(path.as_str())
                .header("host", host.as_str())
                .body(Empty::<Bytes>::new())
                .expect("a valid request");
            let t = Instant::now();
            let ok = async {
                send.ready().await.ok()?;
                let res = send.send_request(req).await.ok()?;
                let status = res.status();
                res.into_body().collect().await.ok()?;
                status.is_success().then_some(())
            }
            .await
            .is_some();
            if ok {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            } else {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
        next += a.interval;
        let now = Instant::now();
        if next > now {
            tokio::time::sleep(next - now).await;
        } else {
            next = now;
        }
    }
    stats.latencies_us.lock().await.extend(lat);
}

fn main() {
    let a = Arc::new(args());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let stats = Arc::new(Stats::default());
        let start = Instant::now();
        let tasks: Vec<_> = (0..a.viewers)
            .map(|i| {
                // Spread the first requests over the ramp and the polling interval.
                let spread = a.ramp + a.interval;
                let offset = spread.mul_f64(i as f64 / a.viewers as f64);
                tokio::spawn(viewer(a.clone(), stats.clone(), start, offset))
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        let mut l = std::mem::take(&mut *stats.latencies_us.lock().await);
        l.sort_unstable();
        let pct = |p: f64| -> f64 {
            if l.is_empty() {
                return 0.0;
            }
            let i = ((l.len() as f64 - 1.0) * p).round() as usize;
            l[i] as f64 / 1000.0
        };
        println!(
            "{{\"viewers\": {}, \"ok\": {}, \"errors\": {}, \"connect_errors\": {}, \"p50_ms\": {:.2}, \"p99_ms\": {:.2}, \"max_ms\": {:.2}, \"seconds\": {:.1}}}",
            a.viewers,
            stats.ok.load(Ordering::Relaxed),
            stats.errors.load(Ordering::Relaxed),
            stats.connect_errors.load(Ordering::Relaxed),
            pct(0.50),
            pct(0.99),
            pct(1.0),
            start.elapsed().as_secs_f64(),
        );
    });
}
