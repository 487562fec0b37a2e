//! `sluice`: the binary. Parses the command line, layers configuration (flag > env >
//! config file > default), and wires the engine, the gateway and the workers together.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sluice_engine::{Config, Engine};

use tokio::sync::watch;

mod check;
mod ops;
mod upload;

#[derive(Parser)]
#[command(name = "sluice", version, about = "Video ingest and streaming engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Gateway and in-process workers. With no config: the embedded default (SQLite, local
    /// tiers) in ./sluice-data.
    Serve(ServeArgs),
    /// A worker-only process for scale-out (same config file).
    Worker(Common),
    /// Upload files to a Sluice server with tus (resumable, parallel, with progress).
    Upload(upload::UploadArgs),
    /// Archival, restore, tiering, migration and usage jobs, with progress bars.
    #[command(subcommand)]
    Ops(ops::OpsCommand),
    /// Configuration for a caching edge in front of Sluice.
    #[command(subcommand)]
    Edge(EdgeCommand),
    /// Print the gateway's route table: one line per route, its metric label and class
    /// (what dashboards and the security suite walk).
    Routes,
}

#[derive(Subcommand)]
enum EdgeCommand {
    /// Print a complete nginx configuration for a caching edge (`nginx -c FILE` runs it):
    /// one cache entry per object whatever the viewer's token, tokens checked at the edge,
    /// concurrent misses collapsed into one origin request, a purge path.
    Nginx(EdgeNginx),
}

#[derive(Args)]
struct EdgeNginx {
    /// The Sluice gateway the edge fetches from. Default: the config's `public_url`, else
    /// http:// and its listen address.
    #[arg(long)]
    origin: Option<String>,
    /// Where the edge listens (HOST:PORT).
    #[arg(long)]
    listen: String,
    /// The edge's cache, logs and temporary files (an absolute path).
    #[arg(long)]
    cache_dir: PathBuf,
    /// Largest size of the cache on disk (nginx syntax: 512m, 10g).
    #[arg(long, default_value = "10g")]
    max_size: String,
    #[command(flatten)]
    common: Common,
}

fn edge_nginx(a: EdgeNginx) -> anyhow::Result<()> {
    let origin = match a.origin {
        Some(o) => o,
        None => {
            let config = a.common.load()?;
            match config.public_url {
                Some(u) => u,
                None => format!("http://{}", config.addr),
            }
        }
    };
    let text = sluice_cdn::nginx::render(&sluice_cdn::nginx::EdgeOptions {
        origin,
        listen: a.listen,
        cache_dir: a.cache_dir,
        max_size: a.max_size,
    })?;
    print!("{text}");
    Ok(())
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// Load and validate the configuration (file, environment, flags) with the same parser
    /// and checks as a start, print a summary and exit: 0 when it is valid, 1 with the
    /// reason when not. Opens no database, store or port.
    #[arg(long)]
    check: bool,
}

#[derive(Args)]
struct Common {
    /// Config file (TOML).
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address.
    #[arg(long, env = "SLUICE_ADDR")]
    addr: Option<std::net::SocketAddr>,
    /// Data directory.
    #[arg(long, env = "SLUICE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PEM certificate chain: with --tls-key, the listener serves HTTPS (HTTP/2 and
    /// HTTP/1.1 through ALPN); reloaded on SIGHUP and when the files change.
    #[arg(long, env = "SLUICE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SLUICE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log format on stderr: `text` (default) or `json` (one object per line).
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl Common {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                Config::from_toml(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(a) = self.addr {
            config.addr = a;
        }
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if let (Some(c), Some(k)) = (&self.tls_cert, &self.tls_key) {
            config.gateway.tls_cert = Some(c.clone());
            config.gateway.tls_key = Some(k.clone());
        }
        config.validate()?;
        Ok(config)
    }
}

fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

async fn open_engine(config: Config) -> anyhow::Result<Engine> {
    let admin_key = std::env::var("SLUICE_ADMIN_KEY").ok();
    let (engine, report) = Engine::open(config, admin_key)
        .await
        .context("cannot open the engine state")?;
    if let Some(key) = report.generated_admin_key {
        // Printed once, on the start that created it; it stays in the data dir (mode 0600).
        println!(
            "admin key (shown once, stored in {}): {key}",
            report.admin_key_file.display()
        );
    }
    Ok(engine)
}

async fn serve(common: Common) -> anyhow::Result<()> {
    let config = common.load()?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let addr = config.addr;
    let in_process = config.workers.in_process;
    let engine = open_engine(config).await?;
    let shutdown = shutdown_signal();

    let dispatcher = tokio::spawn(sluice_workers::webhooks::run_dispatcher(
        engine.webhook_outbox(),
        shutdown.clone(),
    ));
    let sweepers = sweepers(&engine, &shutdown);
    // Tier moves, archive, restore and lifecycle expiry run beside the transcodes.
    let tier_jobs = in_process.then(|| {
        let (engine, rx) = (engine.clone(), shutdown.clone());
        tokio::spawn(async move { engine.run_tier_jobs(rx).await })
    });
    let migrations = tokio::spawn(sluice_engine::ops::run_migrations(
        engine.clone(),
        shutdown.clone(),
    ));
    let workers = in_process.then(|| {
        let (engine, rx) = (engine.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) =
                sluice_workers::run(engine.job_reporter(), engine.storage().clone(), rx).await
            {
                tracing::error!("worker pool stopped: {e}");
            }
        })
    });

    let tls = tls_listener(engine.config(), &shutdown)?;
    let listener =
        sluice_gateway::listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("listening on {scheme}://{local}");
    std::io::stdout().flush()?;
    let app = Arc::new(sluice_gateway::App::new(
        engine.clone(),
        engine.storage().clone(),
        metrics,
    ));
    sluice_gateway::server::serve(app, listener, tls, shutdown).await?;
    if let Some(w) = workers {
        let _ = w.await;
    }
    if let Some(t) = tier_jobs {
        let _ = t.await;
    }
    for sweeper in sweepers {
        let _ = sweeper.await;
    }
    let _ = migrations.await;
    let _ = dispatcher.await;
    Ok(())
}

/// The TLS side of the listener when a certificate is configured: the pair loaded (a
/// start-up error when it does not load) and its reloader started (SIGHUP, file changes).
fn tls_listener(
    config: &Config,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Option<sluice_gateway::tls::Tls>> {
    let g = &config.gateway;
    let (Some(cert), Some(key)) = (&g.tls_cert, &g.tls_key) else {
        return Ok(None);
    };
    let files = sluice_gateway::tls::TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
    };
    let store = sluice_gateway::tls::CertStore::open(files)
        .context("cannot load the TLS certificate and key")?;
    sluice_gateway::tls::spawn_reloader(
        store.clone(),
        Duration::from_secs(g.tls_reload_poll_s),
        shutdown.clone(),
    );
    Ok(Some(sluice_gateway::tls::Tls::new(
        store,
        Duration::from_secs(g.tls_handshake_timeout_s),
    )))
}

/// The periodic sweeps of a serving process, each stopping at `shutdown` (the caller
/// awaits them, so none is cut in the middle of a pass by the process exit):
/// every `uploads.sweep_interval_s`, abandoned uploads are deleted (tus expiration) and
/// jobs whose queue push was lost are pushed again; every `live.sweep_interval_s`, idle
/// live streams are ended (they become VOD assets).
fn sweepers(engine: &Engine, shutdown: &watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    let uploads = Duration::from_secs(engine.config().uploads.sweep_interval_s.max(1));
    let live = Duration::from_secs(engine.config().live.sweep_interval_s.max(1));
    let e = engine.clone();
    let upload_sweep = periodic(uploads, shutdown.clone(), move || {
        let e = e.clone();
        async move {
            if let Err(err) = e.sweep_expired_uploads().await {
                tracing::warn!("upload sweep failed: {err}");
            }
            if let Err(err) = e.reconcile_jobs().await {
                tracing::warn!("job reconciliation failed: {err}");
            }
        }
    });
    let e = engine.clone();
    let live_sweep = periodic(live, shutdown.clone(), move || {
        let e = e.clone();
        async move {
            if let Err(err) = e.sweep_live().await {
                tracing::warn!("live sweep failed: {err}");
            }
        }
    });
    let e = engine.clone();
    let tiers_sweep = periodic(uploads, shutdown.clone(), move || {
        let e = e.clone();
        async move {
            if let Err(err) = e.sweep_tiers().await {
                tracing::warn!("tier sweep failed: {err}");
            }
        }
    });
    let e = engine.clone();
    let every = Duration::from_secs(engine.config().lifecycle.interval_s.max(1));
    let lifecycle = periodic(every, shutdown.clone(), move || {
        let e = e.clone();
        async move {
            if let Err(err) = e.sweep_lifecycle().await {
                tracing::warn!("lifecycle pass failed: {err}");
            }
        }
    });
    let e = engine.clone();
    let queue_gauge = periodic(Duration::from_secs(5), shutdown.clone(), move || {
        let e = e.clone();
        async move {
            if let Err(err) = e.publish_queue_depth().await {
                tracing::debug!("queue depth not measured: {err}");
            }
        }
    });
    vec![
        upload_sweep,
        live_sweep,
        tiers_sweep,
        lifecycle,
        queue_gauge,
    ]
}

/// Run `pass` every `every` (first after one period) until `shutdown` turns true; a pass
/// under way is finished, not cut.
fn periodic<F, Fut>(
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut pass: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            pass().await;
        }
    })
}

async fn worker(common: Common) -> anyhow::Result<()> {
    let config = common.load()?;
    let engine = open_engine(config).await?;
    let shutdown = shutdown_signal();
    let dispatcher = tokio::spawn(sluice_workers::webhooks::run_dispatcher(
        engine.webhook_outbox(),
        shutdown.clone(),
    ));
    let tier_jobs = {
        let (engine, rx) = (engine.clone(), shutdown.clone());
        tokio::spawn(async move { engine.run_tier_jobs(rx).await })
    };
    sluice_workers::run(engine.job_reporter(), engine.storage().clone(), shutdown)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let _ = tier_jobs.await;
    let _ = dispatcher.await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // One TLS crypto provider for the whole process, installed before anything builds a
    // rustls config (webhook client today; TLS listener and S3 client later).
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a TLS crypto provider was already installed"))?;
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Serve(ServeArgs { common: c, .. }) | Command::Worker(c) => {
            c.log_format == LogFormat::Json
        }
        _ => false,
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,apalis=warn".into()),
        )
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
    if let Command::Edge(EdgeCommand::Nginx(a)) = cli.command {
        return edge_nginx(a);
    }
    if let Command::Serve(ServeArgs {
        common,
        check: true,
    }) = &cli.command
    {
        let config = common.load().with_context(|| match &common.config {
            Some(p) => format!("config check failed: {}", p.display()),
            None => "config check failed".to_string(),
        })?;
        print!("{}", check::summary(common.config.as_deref(), &config));
        return Ok(());
    }
    if let Command::Routes = cli.command {
        let mut out = std::io::stdout().lock();
        for r in sluice_gateway::endpoint::Route::ALL {
            writeln!(
                out,
                "{}\t{}",
                r.label(),
                sluice_gateway::observe::class_label(r.class())
            )?;
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cli.command {
            Command::Serve(a) => serve(a.common).await,
            Command::Worker(c) => worker(c).await,
            Command::Upload(a) => Ok(upload::run(a).await?),
            Command::Edge(_) | Command::Routes => {
                unreachable!("answered before the runtime starts")
            }
            Command::Ops(c) => {
                let code = ops::run(c).await?;
                if code != 0 {
                    std::process::exit(code);
                }
                Ok(())
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_periodic_sweep_runs_each_period_and_ends_at_shutdown() {
        let (tx, rx) = watch::channel(false);
        let passes = Arc::new(AtomicUsize::new(0));
        let p = passes.clone();
        let handle = periodic(Duration::from_secs(10), rx, move || {
            let p = p.clone();
            async move {
                p.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::time::sleep(Duration::from_secs(35)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 3);
        tx.send(true).unwrap();
        // The task ends by itself (the caller's await returns) and runs no further pass.
        tokio::time::timeout(Duration::from_secs(1), handle)
            .await
            .expect("the sweep did not stop at shutdown")
            .unwrap();
        assert_eq!(passes.load(Ordering::SeqCst), 3);
    }
}
