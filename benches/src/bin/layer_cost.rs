//! What the gateway's layer stack costs: the same cached-playlist and cached-segment load
//! against the full service (`sluice_gateway::service`: request id, observe — span, log
//! line, metrics, security headers —, panic guard, CORS, auth) and against the router
//! alone (`sluice_gateway::router_service`), in one process and one run, rounds
//! alternating so that a machine getting busier does not favour one side.
//!
//! Both sides share everything else: the engine, the playback cache (objects are read from
//! the store once, then answered from memory), the metrics recorder and the log subscriber
//! of `sluice serve` (at its default `info` filter), the hyper settings and the clients.
//! Prints one line per round and side, then the medians and the ratio (stack / bare
//! requests per second), and the CPU time per request of each side (server and client in
//! this process: the difference is the layers'), which stays meaningful on a machine other
//! work keeps busy.
//!
//! usage (release build only): cargo run --release -p sluice-benches --bin layer_cost --
//!        [--connections 32] [--seconds 3] [--rounds 5] [--segment-kib 1024]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use sluice_cdn::{PlaybackKey, PlaybackSigner};
use sluice_gateway::body::{BoxError, IdleBody};
use sluice_gateway::client_ip::PeerAddr;
use sluice_storage::keys;
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceBuilder};

const TENANT: &str = "01JBENCHTENANT0000000000000";
const ASSET: &str = "01JBENCHASSET00000000000000";
const SECRET: &str = "0123456789abcdef0123456789abcdef";

struct Args {
    connections: usize,
    seconds: u64,
    rounds: usize,
    segment_kib: usize,
}

fn args() -> Args {
    let mut a = Args {
        connections: 32,
        seconds: 3,
        rounds: 5,
        segment_kib: 1024,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v: u64 = it
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--connections" => a.connections = v as usize,
            "--seconds" => a.seconds = v,
            "--rounds" => a.rounds = v as usize,
            "--segment-kib" => a.segment_kib = v as usize,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// Serve `svc` on a fresh loopback port with the same hyper settings for both sides.
async fn serve<S, B>(svc: S) -> SocketAddr
where
    S: Service<
            http::Request<sluice_gateway::body::ReqBody>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let svc = ServiceBuilder::new()
                .map_request(move |req: http::Request<hyper::body::Incoming>| {
                    let mut req = req.map(|b| IdleBody::new(b, Duration::from_secs(8)));
                    req.extensions_mut().insert(PeerAddr(peer));
                    req
                })
                .service(svc.clone());
            let builder = builder.clone();
            tokio::spawn(async move {
                let _ = builder
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                    .await;
            });
        }
    });
    addr
}

/// CPU time this process has used (user + system), seconds: servers and clients alike, so
/// the difference between the two sides per request is the layers' cost, and it holds on
/// a machine other processes keep busy (where requests/s swing by the minute).
fn cpu_s() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// `connections` keep-alive clients asking for `path` back to back for `secs`:
/// (requests/s, CPU microseconds per request).
async fn load(addr: SocketAddr, path: &str, connections: usize, secs: u64) -> (f64, f64) {
    let cpu0 = cpu_s();
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (done, path) = (done.clone(), path.to_string());
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let _ = stream.set_nodelay(true);
            let (mut send, conn) =
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            while Instant::now() < until {
                let req = http::Request::get(&path)
                    .header("host", "127.0.0.1")
                    .body(Empty::new())
                    .unwrap();
                let res = send.send_request(req).await.unwrap();
                assert_eq!(res.status(), 200, "{path}");
                res.into_body().collect().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = done.load(Ordering::Relaxed) as f64;
    (n / secs as f64, (cpu_s() - cpu0) * 1e6 / n.max(1.0))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let a = args();
    // What `sluice serve` installs: the log subscriber at its default filter and the
    // Prometheus recorder (both sides record into them).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,apalis=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = sluice_engine::Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    config.playback.secret = Some(SECRET.into());
    let (engine, _) = sluice_engine::Engine::open(config, None).await.unwrap();
    let storage = engine.storage().clone();
    let playlist = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n".to_string()
        + &(0..60)
            .map(|i| format!("#EXTINF:2.000,\nseg_{i:05}.ts\n"))
            .collect::<String>()
        + "#EXT-X-ENDLIST\n";
    let put = |rel: &str, data: Bytes| {
        let key = keys::playback_object(TENANT, ASSET, rel).unwrap();
        let storage = storage.clone();
        async move { storage.put(&key, data).await.unwrap() }
    };
    put("720p/index.m3u8", Bytes::from(playlist)).await;
    put(
        "720p/seg_00001.ts",
        Bytes::from(vec![0x47u8; a.segment_kib << 10]),
    )
    .await;
    let signer = PlaybackSigner::new(PlaybackKey::new("k1", SECRET.as_bytes().to_vec()).unwrap());
    let token = signer.sign(&format!("{TENANT}/{ASSET}"), 4_000_000_000, None);
    let base = format!("/v1/play/{TENANT}/{ASSET}/{token}/720p");

    let app = Arc::new(sluice_gateway::App::new(engine.clone(), storage, metrics));
    let stack = serve(sluice_gateway::service(app.clone())).await;
    let bare = serve(sluice_gateway::router_service(app)).await;

    for (what, path) in [
        ("playlist", format!("{base}/index.m3u8")),
        ("segment", format!("{base}/seg_00001.ts")),
    ] {
        // Warm the cache and the connections on both sides.
        load(stack, &path, a.connections, 1).await;
        load(bare, &path, a.connections, 1).await;
        let (mut on, mut off) = (Vec::new(), Vec::new());
        let (mut cpu_on, mut cpu_off) = (Vec::new(), Vec::new());
        for round in 0..a.rounds {
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for layered in order {
                let addr = if layered { stack } else { bare };
                let (rps, cpu) = load(addr, &path, a.connections, a.seconds).await;
                println!(
                    "{what} round {round} {}: {rps:.0} req/s, {cpu:.1} us CPU/request",
                    if layered { "stack" } else { "bare " }
                );
                if layered { &mut on } else { &mut off }.push(rps);
                if layered { &mut cpu_on } else { &mut cpu_off }.push(cpu);
            }
        }
        let (m_on, m_off) = (median(&mut on), median(&mut off));
        let (c_on, c_off) = (median(&mut cpu_on), median(&mut cpu_off));
        println!(
            "{what}: median CPU per request (server and client) stack {c_on:.1} us, bare {c_off:.1} us: the layers cost {:.1} us, {:.1} % of the bare request",
            c_on - c_off,
            (c_on / c_off - 1.0) * 100.0
        );
        println!(
            "{what}: median stack {m_on:.0} req/s, bare {m_off:.0} req/s, ratio {:.3} (cost {:.1} %)",
            m_on / m_off,
            (1.0 - m_on / m_off) * 100.0
        );
    }
}
