//! `sluice ops …`: submit an ops job to a Sluice server, follow it with a progress bar
//! (objects, bytes, rate, ETA), print its report, and exit 0 only when it succeeded.
//! `--json` prints the final job (or plan) as JSON and nothing else.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum OpsCommand {
    /// Move every object of one store to another (copy, verify, switch, optionally delete
    /// the source), resumable after a crash.
    Migrate(MigrateArgs),
    /// Move an asset to a tier (`cold` archives it).
    Tier(TierArgs),
    /// A temporary readable copy of an archived asset for N days.
    Restore(RestoreArgs),
    /// Lifecycle rules.
    #[command(subcommand)]
    Lifecycle(LifecycleCommand),
    /// Per-tier usage; `--check` recomputes it from the copy rows and the stores.
    Usage(UsageArgs),
}

#[derive(Subcommand)]
pub enum LifecycleCommand {
    /// Evaluate every rule now.
    Run(LifecycleRunArgs),
}

#[derive(Args)]
pub struct Conn {
    /// The Sluice server, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "SLUICE_SERVER")]
    server: String,
    /// The admin key (tenant key for `tier`, `restore` and `usage` without `--check`).
    #[arg(long, env = "SLUICE_KEY", hide_env_values = true)]
    key: String,
    /// Print machine-readable JSON only.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct MigrateArgs {
    #[arg(long)]
    from: String,
    #[arg(long)]
    to: String,
    /// Only this tenant's objects.
    #[arg(long)]
    tenant: Option<String>,
    /// Delete each object from the source once the target copy is verified and switched.
    #[arg(long)]
    delete_source: bool,
    /// Print the plan (objects, bytes) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also read every copy back from the target and compare its MD5s.
    #[arg(long)]
    verify_full: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct TierArgs {
    asset: String,
    #[arg(long)]
    tier: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct RestoreArgs {
    asset: String,
    #[arg(long)]
    days: u32,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct LifecycleRunArgs {
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct UsageArgs {
    /// Recompute usage from the copy rows and from listing each store; exit 1 on drift.
    #[arg(long)]
    check: bool,
    /// With --check: set the counters from the rows.
    #[arg(long, requires = "check")]
    repair: bool,
    #[command(flatten)]
    conn: Conn,
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

struct Api {
    client: HttpClient,
    base: String,
    auth: HeaderValue,
    json: bool,
}

/// Every request's deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read.
const MAX_BODY: usize = 4 << 20;

impl Api {
    fn new(conn: &Conn) -> anyhow::Result<Self> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", conn.key))
            .context("--key contains characters not allowed in a header")?;
        auth.set_sensitive(true);
        let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(b) => b,
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ),
        };
        let https = builder.https_or_http().enable_http1().build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            base: conn.server.trim_end_matches('/').to_string(),
            auth,
            json: conn.json,
        })
    }

    /// Send; answers the status and the JSON body. A non-2xx answer is an error naming
    /// the server's message.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let data = body.map(|b| b.to_string()).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, self.auth.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(data)))?;
        let res = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req))
            .await
            .context("the server did not answer in time")?
            .context("cannot reach the server")?;
        let status = res.status();
        let body = tokio::time::timeout(
            REQUEST_TIMEOUT,
            Limited::new(res.into_body(), MAX_BODY).collect(),
        )
        .await
        .context("the server's answer did not arrive in time")?
        .map_err(|e| anyhow::anyhow!("cannot read the server's answer: {e}"))?
        .to_bytes();
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = value["error"]["message"]
                .as_str()
                .unwrap_or("no message")
                .to_string();
            bail!("the server answered {status}: {msg}");
        }
        Ok(value)
    }

    /// Follow a job until it ends, with a progress bar on a terminal (not with --json).
    async fn follow(&self, job: Value) -> anyhow::Result<Value> {
        let id = job["id"]
            .as_str()
            .context("the server's answer has no job id")?
            .to_string();
        let bar = (!self.json && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} \
                     ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b
        });
        if bar.is_none() && !self.json {
            eprintln!("job {id} submitted");
        }
        let mut job = job;
        loop {
            let status = job["status"].as_str().unwrap_or("");
            if let Some(b) = &bar {
                let total = job["bytes_total"].as_u64();
                match total {
                    Some(t) if t > 0 => {
                        b.set_length(t);
                        b.set_position(job["bytes_done"].as_u64().unwrap_or(0).min(t));
                    }
                    _ => {
                        b.set_length(1000);
                        b.set_position((job["progress"].as_f64().unwrap_or(0.0) * 1000.0) as u64);
                    }
                }
                if let (Some(d), Some(t)) =
                    (job["objects_done"].as_u64(), job["objects_total"].as_u64())
                {
                    b.set_message(format!("{d}/{t} objects"));
                }
            }
            if matches!(status, "succeeded" | "failed" | "dead" | "cancelled") {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                return Ok(job);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            job = self
                .call(Method::GET, &format!("/v1/jobs/{id}"), None)
                .await?;
        }
    }

    /// Print a finished job: JSON, or its report. Ok(true) when it succeeded.
    fn report(&self, job: &Value) -> bool {
        let ok = job["status"] == "succeeded";
        if self.json {
            println!("{job}");
            return ok;
        }
        println!(
            "job {} {}",
            job["id"].as_str().unwrap_or("?"),
            job["status"].as_str().unwrap_or("?")
        );
        if let Some(r) = job["result"].as_object() {
            for k in [
                "objects_copied",
                "objects_skipped",
                "objects_verified",
                "bytes_copied",
                "bytes_sent",
            ] {
                if let Some(v) = r.get(k) {
                    println!("  {k}: {v}");
                }
            }
            if let Some(f) = r.get("failed").and_then(Value::as_array) {
                println!("  failed: {}", f.len());
                for x in f.iter().take(20) {
                    println!(
                        "    {}: {}",
                        x["key"].as_str().unwrap_or("?"),
                        x["reason"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        if let Some(e) = job["error"].as_str() {
            println!("  error: {e}");
        }
        ok
    }
}

/// Run one `sluice ops` command; the process exit code (0: succeeded).
pub async fn run(cmd: OpsCommand) -> anyhow::Result<i32> {
    match cmd {
        OpsCommand::Migrate(a) => {
            let api = Api::new(&a.conn)?;
            let mut body = json!({
                "from": a.from, "to": a.to, "delete_source": a.delete_source,
                "dry_run": a.dry_run,
            });
            if let Some(t) = a.tenant {
                body["tenant"] = json!(t);
            }
            if a.verify_full {
                body["verify"] = json!("full");
            }
            let answer = api
                .call(Method::POST, "/v1/ops/migrations", Some(body))
                .await?;
            if a.dry_run {
                if api.json {
                    println!("{answer}");
                } else {
                    println!(
                        "plan: {} objects of {} assets, {} bytes, from {} to {}",
                        answer["objects"],
                        answer["assets"],
                        answer["bytes"],
                        answer["from"],
                        answer["to"]
                    );
                }
                return Ok(0);
            }
            let job = api.follow(answer).await?;
            Ok(if api.report(&job) { 0 } else { 1 })
        }
        OpsCommand::Tier(a) => {
            let api = Api::new(&a.conn)?;
            let path = format!("/v1/assets/{}/tier", path_segment(&a.asset)?);
            let job = api
                .call(Method::POST, &path, Some(json!({ "tier": a.tier })))
                .await?;
            let job = api.follow(job).await?;
            Ok(if api.report(&job) { 0 } else { 1 })
        }
        OpsCommand::Restore(a) => {
            let api = Api::new(&a.conn)?;
            let path = format!("/v1/assets/{}/restore", path_segment(&a.asset)?);
            let job = api
                .call(Method::POST, &path, Some(json!({ "days": a.days })))
                .await?;
            let job = api.follow(job).await?;
            Ok(if api.report(&job) { 0 } else { 1 })
        }
        OpsCommand::Lifecycle(LifecycleCommand::Run(a)) => {
            let api = Api::new(&a.conn)?;
            let answer = api
                .call(
                    Method::POST,
                    "/v1/ops/lifecycle/run",
                    Some(json!({ "dry_run": a.dry_run })),
                )
                .await?;
            println!(
                "{}",
                if api.json {
                    answer.to_string()
                } else {
                    serde_json::to_string_pretty(&answer)?
                }
            );
            Ok(0)
        }
        OpsCommand::Usage(a) => {
            let api = Api::new(&a.conn)?;
            let answer = if a.check {
                api.call(
                    Method::POST,
                    "/v1/ops/usage/check",
                    Some(json!({ "repair": a.repair })),
                )
                .await?
            } else {
                api.call(Method::GET, "/v1/usage", None).await?
            };
            println!(
                "{}",
                if api.json {
                    answer.to_string()
                } else {
                    serde_json::to_string_pretty(&answer)?
                }
            );
            let drift =
                a.check && !a.repair && answer["drift"].as_array().is_some_and(|d| !d.is_empty());
            Ok(if drift { 1 } else { 0 })
        }
    }
}

/// An id put in a URL path: only the characters ids are made of.
fn path_segment(id: &str) -> anyhow::Result<&str> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!("{id:?} is not an asset id");
    }
    Ok(id)
}
