//! `sluice upload`: the built-in tus 1.0.0 client, for camera-gateway scripts and ops
//! people who should not need tuspy or curl loops to get files into Sluice.
//!
//! Design in short:
//! - Every file is streamed from disk in small pieces straight into the PATCH body, so
//!   memory stays bounded whatever `--chunk-size` and the file sizes are.
//! - Unfinished uploads are remembered in a state file (see [`state`]), so running the same
//!   command again after a crash, a reboot or a SIGKILL continues where the server's
//!   committed offset is instead of sending everything again.
//! - A failed request is retried with exponential backoff after asking the server (HEAD)
//!   what it actually committed, since a request that died may still have delivered part
//!   of its bytes.
//! - One file's failure never stops the others; the exit code says whether all made it.

mod state;
mod tus;
mod ui;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http_body_util::{BodyExt, StreamBody};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::Semaphore;

use state::{Change, Entry, StateKey, StateStore};
use tus::{Caps, Failure, Head, ReqBody, Tus};
use ui::{FileProgress, Ui};

/// Attempts at one step (a chunk, a HEAD, a creation) before giving up on the file.
pub const MAX_TRIES: u32 = 6;
/// First pause between attempts; it doubles each time.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Size of the pieces read from disk and handed to the connection: small enough that
/// progress moves smoothly and memory stays tiny, large enough for few syscalls.
const PIECE: usize = 64 * 1024;
/// How often `--wait` asks for the asset's status.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// A PATCH whose body has not moved for this long (and has no answer) is abandoned and
/// retried. Generous: after the last byte the server syncs the chunk to disk before
/// answering.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Everything that can go wrong in `sluice upload`. Per-file errors end that file only;
/// [`UploadError::SomeFailed`] is the run's overall verdict (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    // Per-file errors are printed after the file's name, so they do not repeat it.
    #[error("cannot read the file: {0}")]
    Io(std::io::Error),
    #[error("is a directory, not a file")]
    IsDirectory,
    #[error("is not a regular file")]
    NotAFile,
    #[error("is empty: there is nothing to upload")]
    Empty,
    #[error("is {size} bytes; the server accepts at most {max}")]
    TooLarge { size: u64, max: u64 },
    #[error("changed while it was being uploaded: {0}")]
    Changed(String),
    #[error("{0}")]
    BadArgument(String),
    #[error("server answered {status}: {message}")]
    Server {
        status: http::StatusCode,
        message: String,
    },
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    #[error("gave up on {step} after {tries} tries; last error: {last}")]
    GaveUp {
        step: &'static str,
        tries: u32,
        last: String,
    },
    #[error("cannot use the server: {0}")]
    Setup(String),
    #[error("state file {}: {reason}", path.display())]
    State { path: PathBuf, reason: String },
    #[error("{failed} of {total} files failed")]
    SomeFailed { failed: usize, total: usize },
}

/// `sluice upload FILE… --server URL --key KEY`
#[derive(clap::Args, Debug)]
pub struct UploadArgs {
    /// Files to upload.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// The Sluice server.
    #[arg(long, env = "SLUICE_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// A tenant or device API key.
    #[arg(long, env = "SLUICE_KEY", hide_env_values = true)]
    key: String,
    /// Files uploaded at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// Bytes per PATCH request (suffixes K, M, G, KiB, MiB, GiB). A failed request resends
    /// at most this much.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    chunk_size: u64,
    /// After uploading, follow each asset until it is ready or failed; exit non-zero if any
    /// failed.
    #[arg(long)]
    wait: bool,
    /// Where unfinished uploads are remembered for resuming
    /// [default: $XDG_STATE_HOME/sluice/uploads.json or ~/.local/state/sluice/uploads.json].
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// No progress bars (also off when stderr is not a terminal): one line per file.
    #[arg(long)]
    no_progress: bool,
    /// One JSON object per file on stdout: file, asset_id, status, sha256, error.
    #[arg(long)]
    json: bool,
}

// ---- pure helpers ----------------------------------------------------------------------

/// The pause before attempt `attempt + 1`, after `attempt` failures (1-based): 0.5 s,
/// 1 s, 2 s, 4 s, 8 s … capped at 30 s. Doubling gives a restarting server room without
/// making a brief blip cost much.
pub fn backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    BACKOFF_BASE
        .saturating_mul(1u32 << exp)
        .min(Duration::from_secs(30))
}

/// `Upload-Metadata`: comma-separated `key base64(value)` pairs (tus 1.0.0).
pub fn metadata_header(pairs: &[(&str, &[u8])]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                (*k).to_string()
            } else {
                format!(
                    "{k} {}",
                    base64::engine::general_purpose::STANDARD.encode(v)
                )
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `Upload-Checksum` for a chunk: `sha1 <base64 of the raw digest>` (tus checksum
/// extension).
pub fn checksum_header(sha1_digest: &[u8]) -> String {
    format!(
        "sha1 {}",
        base64::engine::general_purpose::STANDARD.encode(sha1_digest)
    )
}

/// `--chunk-size`: a byte count with an optional K/M/G (binary) suffix.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 1048576, 512K, 8MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes == 0 {
        return Err("the chunk size must be at least 1 byte".into());
    }
    Ok(bytes)
}

/// Which part of a piece read at `pos` extends a running hash that already covers
/// `[0, hashed)`. The same bytes may be read more than once (a checksum pre-read, a resent
/// chunk); each must enter the file's SHA-256 exactly once, in order.
pub fn unhashed_part(pos: u64, len: usize, hashed: u64) -> Option<std::ops::Range<usize>> {
    let end = pos + len as u64;
    (pos <= hashed && hashed < end).then(|| (hashed - pos) as usize..len)
}

// ---- the run ---------------------------------------------------------------------------

/// The SHA-256 of a file, fed in order as its bytes go by.
struct HashCursor {
    hasher: sha2::Sha256,
    hashed: u64,
}

impl HashCursor {
    fn feed(&mut self, pos: u64, data: &[u8]) {
        if let Some(r) = unhashed_part(pos, data.len(), self.hashed) {
            self.hasher.update(&data[r.clone()]);
            self.hashed += r.len() as u64;
        }
    }
}

type SharedHash = Arc<Mutex<HashCursor>>;

fn lock(h: &SharedHash) -> MutexGuard<'_, HashCursor> {
    // A panic while hashing cannot leave the hasher half-updated in a way that matters
    // more than the panic itself; keep going rather than poison every later chunk.
    h.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What every file task shares.
struct Ctx {
    tus: Tus,
    /// The OPTIONS answer, or why the server cannot be used at all.
    caps: Result<Caps, String>,
    server_key: String,
    state: StateStore,
    chunk_size: u64,
    wait: bool,
    ui: Ui,
    slots: Semaphore,
}

/// One file's outcome, as printed.
#[derive(Debug, serde::Serialize)]
struct FileReport {
    file: String,
    asset_id: Option<String>,
    /// `uploaded`, or with `--wait` the asset's final status (`ready`, `failed`), or
    /// `error` when the client could not finish.
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    /// The offset this run started at (> 0: an earlier run's upload was resumed).
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed_from: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip)]
    ok: bool,
}

/// A finished upload.
struct Uploaded {
    asset_id: String,
    sha256: String,
    size: u64,
    resumed_from: u64,
}

pub async fn run(args: UploadArgs) -> Result<(), UploadError> {
    let base = args.server.trim().trim_end_matches('/').to_string();
    let uri: http::Uri = base
        .parse()
        .map_err(|e| UploadError::BadArgument(format!("--server {base:?}: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(UploadError::BadArgument(format!(
            "--server {base:?} must be an http:// or https:// URL"
        )));
    }
    if args.key.trim().is_empty() {
        return Err(UploadError::BadArgument("--key is empty".into()));
    }
    let state_path = match args.state.clone() {
        Some(p) => p,
        None => state::default_path(
            std::env::var("XDG_STATE_HOME").ok().as_deref(),
            std::env::var("HOME").ok().as_deref(),
        )
        .ok_or_else(|| {
            UploadError::BadArgument(
                "no place for the state file (neither XDG_STATE_HOME nor HOME is set): \
                 pass --state FILE"
                    .into(),
            )
        })?,
    };
    let tus = Tus::new(base.clone(), args.key.trim())?;

    // The total bar's length: what we can see of the files now.
    let planned: Vec<u64> = args
        .files
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .filter(|m| m.is_file())
                .map_or(0, |m| m.len())
        })
        .collect();
    let bars = !args.no_progress && std::io::stderr().is_terminal();
    let ui = Ui::new(bars, planned.iter().sum(), args.files.len());

    let caps = discover(&tus, &ui).await.map_err(|e| e.to_string());
    let ctx = Arc::new(Ctx {
        tus,
        caps,
        server_key: state::normalize_server(&base),
        state: StateStore::new(state_path),
        chunk_size: args.chunk_size,
        wait: args.wait,
        ui: ui.clone(),
        slots: Semaphore::new(usize::from(args.parallel)),
    });

    let mut tasks: FuturesUnordered<_> = args
        .files
        .iter()
        .zip(planned)
        .map(|(path, planned)| {
            let fp = ui.file(&display_name(path), planned);
            let task = tokio::spawn(process_file(ctx.clone(), path.clone(), fp));
            let file = path.display().to_string();
            async move { (file, task.await) }
        })
        .collect();
    let total = args.files.len();
    let mut failed = 0;
    let mut deferred = Vec::new();
    while let Some((file, joined)) = tasks.next().await {
        let report = match joined {
            Ok(r) => r,
            Err(e) => FileReport {
                file,
                asset_id: None,
                status: "error".into(),
                sha256: None,
                size: None,
                resumed_from: None,
                error: Some(format!("internal error: {e}")),
                ok: false,
            },
        };
        if !report.ok {
            failed += 1;
            let why = report.error.as_deref().unwrap_or("failed");
            ctx.ui.note(&format!("error: {}: {why}", report.file));
        }
        if ui.has_bars() {
            // Printed below the finished bars rather than through them.
            deferred.push(report);
        } else {
            print_report(&report, args.json);
        }
    }
    ui.finish();
    for r in &deferred {
        print_report(r, args.json);
    }
    if failed > 0 {
        return Err(UploadError::SomeFailed { failed, total });
    }
    Ok(())
}

fn display_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn print_report(r: &FileReport, json: bool) {
    if json {
        match serde_json::to_string(r) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("error: cannot encode the result for {}: {e}", r.file),
        }
        return;
    }
    // Failures were already reported on stderr.
    if !r.ok && r.asset_id.is_none() {
        return;
    }
    let mut line = format!(
        "{}: {} {}",
        r.file,
        r.status,
        r.asset_id.as_deref().unwrap_or("-")
    );
    if let Some(s) = r.size {
        line.push_str(&format!(" size={s}"));
    }
    if let Some(h) = &r.sha256 {
        line.push_str(&format!(" sha256={h}"));
    }
    if let Some(o) = r.resumed_from.filter(|o| *o > 0) {
        line.push_str(&format!(" resumed_from={o}"));
    }
    if let Some(e) = &r.error {
        line.push_str(&format!(" error={e:?}"));
    }
    println!("{line}");
}

/// OPTIONS, retried like everything else: a server still starting up should not fail a
/// batch, but a wrong key fails it at once with the server's message.
async fn discover(tus: &Tus, ui: &Ui) -> Result<Caps, UploadError> {
    retrying(ui, "server", "OPTIONS", || tus.options()).await
}

/// Run `op` until it succeeds, fails for good, or has failed [`MAX_TRIES`] times.
async fn retrying<T, F, Fut>(
    ui: &Ui,
    who: &str,
    step: &'static str,
    mut op: F,
) -> Result<T, UploadError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match op().await {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(last) | Failure::Conflict(last)) => {
                if tries >= MAX_TRIES {
                    return Err(UploadError::GaveUp { step, tries, last });
                }
                let pause = backoff(tries);
                ui.note(&format!(
                    "warning: {who}: {step} failed ({last}); try {}/{MAX_TRIES} in {:.1} s",
                    tries + 1,
                    pause.as_secs_f64()
                ));
                tokio::time::sleep(pause).await;
            }
        }
    }
}

async fn process_file(ctx: Arc<Ctx>, path: PathBuf, fp: FileProgress) -> FileReport {
    let mut report = FileReport {
        file: path.display().to_string(),
        asset_id: None,
        status: "error".into(),
        sha256: None,
        size: None,
        resumed_from: None,
        error: None,
        ok: false,
    };
    let uploaded = {
        // Only the upload takes a slot: following the transcode costs the client nothing.
        let _slot = ctx.slots.acquire().await;
        upload_file(&ctx, &path, &fp).await
    };
    let up = match uploaded {
        Ok(up) => up,
        Err(e) => {
            fp.upload_failed(format!("failed: {e}"));
            report.error = Some(e.to_string());
            return report;
        }
    };
    report.asset_id = Some(up.asset_id.clone());
    report.sha256 = Some(up.sha256);
    report.size = Some(up.size);
    report.resumed_from = Some(up.resumed_from);
    if !ctx.wait {
        fp.finish(format!("uploaded {}", up.asset_id));
        report.status = "uploaded".into();
        report.ok = true;
        return report;
    }
    fp.waiting();
    match follow(&ctx, &path, &up.asset_id, &fp).await {
        Ok(asset) => {
            report.ok = asset.status == "ready";
            if report.ok {
                fp.finish(format!("ready {}", up.asset_id));
            } else {
                fp.asset_failed(format!("{} {}", asset.status, up.asset_id));
                report.error = Some(
                    asset
                        .error
                        .unwrap_or_else(|| "the server did not say why".into()),
                );
            }
            report.status = asset.status;
        }
        Err(e) => {
            fp.asset_failed(format!("lost track of {}", up.asset_id));
            report.error = Some(format!("uploaded, but following the asset failed: {e}"));
        }
    }
    report
}

/// `--wait`: poll the asset until it is `ready` or `failed`.
async fn follow(
    ctx: &Ctx,
    path: &Path,
    asset_id: &str,
    fp: &FileProgress,
) -> Result<tus::AssetView, UploadError> {
    let name = display_name(path);
    loop {
        let asset = retrying(&ctx.ui, &name, "GET asset", || ctx.tus.asset(asset_id)).await?;
        fp.processing(asset.progress, &asset.status);
        if asset.status == "ready" || asset.status == "failed" {
            return Ok(asset);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Upload one file, resuming an earlier run's upload when the state file has one.
async fn upload_file(ctx: &Ctx, path: &Path, fp: &FileProgress) -> Result<Uploaded, UploadError> {
    let name = display_name(path);
    let meta = tokio::fs::metadata(path).await.map_err(UploadError::Io)?;
    if meta.is_dir() {
        return Err(UploadError::IsDirectory);
    }
    if !meta.is_file() {
        return Err(UploadError::NotAFile);
    }
    // Opening now turns "unreadable" into a clear error before anything is created.
    drop(tokio::fs::File::open(path).await.map_err(UploadError::Io)?);
    let size = meta.len();
    if size == 0 {
        return Err(UploadError::Empty);
    }
    let caps = ctx.caps.clone().map_err(UploadError::Setup)?;
    if let Some(max) = caps.max_size.filter(|m| size > *m) {
        return Err(UploadError::TooLarge { size, max });
    }
    let canonical = tokio::fs::canonicalize(path)
        .await
        .map_err(UploadError::Io)?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let key = StateKey {
        server: ctx.server_key.clone(),
        path: canonical.to_string_lossy().into_owned(),
        size,
        mtime_ns,
    };

    // Resume when an earlier run left this exact file half-way.
    let mut resume = None;
    let remembered = match ctx.state.lookup(&key).await {
        Ok(u) => u,
        Err(e) => {
            ctx.ui.note(&format!(
                "warning: {name}: cannot resume: {e}; starting over"
            ));
            None
        }
    };
    if let Some(url) = remembered {
        match retrying(&ctx.ui, &name, "HEAD", || ctx.tus.head(&url)).await? {
            Head::Found { offset, length }
                if length.is_none_or(|l| l == size) && offset <= size =>
            {
                resume = Some((url, offset));
            }
            _ => {
                ctx.ui.note(&format!(
                    "{name}: the earlier upload is gone from the server; starting over"
                ));
                forget(ctx, &name, &key, &url).await;
            }
        }
    }
    let (url, start) = match resume {
        Some(r) => r,
        None => {
            let filename = name.as_bytes();
            let metadata = metadata_header(&[("filename", filename)]);
            let url = retrying(&ctx.ui, &name, "creating the upload", || {
                ctx.tus.create(size, &metadata)
            })
            .await?;
            let entry = Entry {
                key: key.clone(),
                url: url.clone(),
                created_at: now_s(),
            };
            if let Err(e) = ctx.state.update(Change::Upsert(entry)).await {
                ctx.ui.note(&format!(
                    "warning: {name}: this upload cannot be resumed by a later run: {e}"
                ));
            }
            (url, 0)
        }
    };
    let asset_id = tus::asset_id_from_url(&url).ok_or_else(|| {
        UploadError::Protocol(format!("the upload URL {url} does not end in an asset id"))
    })?;

    fp.start(size, start, start > 0);
    let hash: SharedHash = Arc::new(Mutex::new(HashCursor {
        hasher: sha2::Sha256::new(),
        hashed: 0,
    }));
    // The bytes an earlier run sent are still part of the file's digest.
    hash_range(path, &hash, start).await?;

    let mut offset = start;
    let mut failures = 0u32;
    while offset < size {
        let len = ctx.chunk_size.min(size - offset);
        let checksum = if caps.sha1_checksum {
            Some(chunk_sha1(path, offset, len, &hash).await?)
        } else {
            None
        };
        let pulled = Arc::new(AtomicU64::new(0));
        let body = chunk_body(path, offset, len, hash.clone(), fp.clone(), pulled.clone()).await?;
        let patch = ctx.tus.patch(&url, offset, len, body, checksum.as_deref());
        let outcome = unless_stalled(patch, &pulled).await;
        let (failure, pause) = match outcome {
            Ok(new) if new > offset && new <= size => {
                offset = new;
                failures = 0;
                fp.set(offset);
                continue;
            }
            Ok(new) => (
                format!("the server answered offset {new} after a PATCH at {offset}"),
                true,
            ),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(m)) => (m, true),
            // 409: nothing to wait for, just learn the right offset.
            Err(Failure::Conflict(m)) => (m, false),
        };
        failures += 1;
        if failures >= MAX_TRIES {
            return Err(UploadError::GaveUp {
                step: "PATCH",
                tries: failures,
                last: failure,
            });
        }
        if pause {
            let d = backoff(failures);
            ctx.ui.note(&format!(
                "warning: {name}: PATCH at {offset} failed ({failure}); try {}/{MAX_TRIES} in {:.1} s",
                failures + 1,
                d.as_secs_f64()
            ));
            fp.message(format!("retrying in {:.1} s", d.as_secs_f64()));
            tokio::time::sleep(d).await;
        }
        offset = match retrying(&ctx.ui, &name, "HEAD", || ctx.tus.head(&url)).await? {
            Head::Found { offset: o, .. } if o <= size => o,
            Head::Found { offset: o, .. } => {
                return Err(UploadError::Protocol(format!(
                    "the server reports offset {o} for a {size}-byte file"
                )));
            }
            Head::Gone => {
                forget(ctx, &name, &key, &url).await;
                return Err(UploadError::Protocol(format!(
                    "the upload {url} disappeared from the server mid-way"
                )));
            }
        };
        fp.set(offset);
        fp.message("uploading".into());
    }
    hash_range(path, &hash, size).await?;
    let sha256 = {
        let h = lock(&hash);
        hex(&h.hasher.clone().finalize())
    };
    forget(ctx, &name, &key, &url).await;
    Ok(Uploaded {
        asset_id,
        sha256,
        size,
        resumed_from: start,
    })
}

/// Run a PATCH, but give up on it (as a retryable failure) once its body has not moved
/// for [`STALL_TIMEOUT`]: a half-open connection (a NAT that forgot us, a server that
/// stopped reading) would otherwise hang the upload for ever, and a PATCH cannot have a
/// fixed deadline because a big chunk on a slow link legitimately takes long.
async fn unless_stalled(
    patch: impl Future<Output = Result<u64, Failure>>,
    pulled: &AtomicU64,
) -> Result<u64, Failure> {
    tokio::pin!(patch);
    let mut last = pulled.load(Ordering::Relaxed);
    let mut idle = Duration::ZERO;
    loop {
        tokio::select! {
            r = &mut patch => return r,
            _ = tokio::time::sleep(STALL_CHECK) => {
                let now = pulled.load(Ordering::Relaxed);
                if now == last {
                    idle += STALL_CHECK;
                    if idle >= STALL_TIMEOUT {
                        return Err(Failure::Retry(format!(
                            "no progress for {} s", STALL_TIMEOUT.as_secs()
                        )));
                    }
                } else {
                    (last, idle) = (now, Duration::ZERO);
                }
            }
        }
    }
}

/// Drop a finished or vanished upload from the state file; failing to is only a warning
/// (the next run's HEAD sorts it out).
async fn forget(ctx: &Ctx, name: &str, key: &StateKey, url: &str) {
    let change = Change::Remove {
        key: key.clone(),
        url: url.to_string(),
    };
    if let Err(e) = ctx.state.update(change).await {
        ctx.ui.note(&format!("warning: {name}: {e}"));
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Open `path` positioned at `offset`.
async fn open_at(path: &Path, offset: u64) -> Result<tokio::fs::File, UploadError> {
    let mut f = tokio::fs::File::open(path).await.map_err(UploadError::Io)?;
    f.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(UploadError::Io)?;
    Ok(f)
}

/// Read `[from, to)` of `path` piece by piece, handing each piece to `each`.
async fn read_range(
    path: &Path,
    from: u64,
    to: u64,
    mut each: impl FnMut(u64, &[u8]),
) -> Result<(), UploadError> {
    let mut f = open_at(path, from).await?;
    let mut buf = vec![0u8; PIECE];
    let mut pos = from;
    while pos < to {
        let want = usize::try_from(to - pos).map_or(PIECE, |r| r.min(PIECE));
        let n = f.read(&mut buf[..want]).await.map_err(UploadError::Io)?;
        if n == 0 {
            return Err(UploadError::Changed(format!("it now ends at {pos} bytes")));
        }
        each(pos, &buf[..n]);
        pos += n as u64;
    }
    Ok(())
}

/// Bring the file's SHA-256 up to `to` bytes (the part before a resume, or anything a
/// retry skipped).
async fn hash_range(path: &Path, hash: &SharedHash, to: u64) -> Result<(), UploadError> {
    let from = lock(hash).hashed;
    if from >= to {
        return Ok(());
    }
    read_range(path, from, to, |pos, data| lock(hash).feed(pos, data)).await
}

/// The `Upload-Checksum` of one chunk. The header must precede the body, so the chunk is
/// read once for the digest and once more while it is sent; the page cache makes the
/// second read cheap, and nothing chunk-sized is held in memory.
async fn chunk_sha1(
    path: &Path,
    offset: u64,
    len: u64,
    hash: &SharedHash,
) -> Result<String, UploadError> {
    let mut sha1 = sha1::Sha1::new();
    read_range(path, offset, offset + len, |pos, data| {
        sha1::Digest::update(&mut sha1, data);
        lock(hash).feed(pos, data);
    })
    .await?;
    Ok(checksum_header(&sha1::Digest::finalize(sha1)))
}

/// The PATCH body: `len` bytes of the file from `offset`, read piece by piece as the
/// connection takes them. A file that got shorter ends the body with an error, so the
/// server keeps only the bytes that really arrived.
async fn chunk_body(
    path: &Path,
    offset: u64,
    len: u64,
    hash: SharedHash,
    fp: FileProgress,
    pulled: Arc<AtomicU64>,
) -> Result<ReqBody, UploadError> {
    struct Reader {
        file: tokio::fs::File,
        pos: u64,
        end: u64,
        hash: SharedHash,
        fp: FileProgress,
        pulled: Arc<AtomicU64>,
    }
    let file = open_at(path, offset).await?;
    let start = Reader {
        file,
        pos: offset,
        end: offset + len,
        hash,
        fp,
        pulled,
    };
    let pieces = futures::stream::try_unfold(start, |mut r| async move {
        if r.pos >= r.end {
            return Ok(None);
        }
        let want = usize::try_from(r.end - r.pos).map_or(PIECE, |n| n.min(PIECE));
        let mut buf = BytesMut::zeroed(want);
        let n = r.file.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the file ends at {} bytes", r.pos),
            ));
        }
        buf.truncate(n);
        let bytes: Bytes = buf.freeze();
        lock(&r.hash).feed(r.pos, &bytes);
        r.pos += n as u64;
        r.fp.inc(n as u64);
        r.pulled.fetch_add(n as u64, Ordering::Relaxed);
        Ok(Some((http_body::Frame::data(bytes), r)))
    });
    Ok(StreamBody::new(pieces).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_half_a_second() {
        let s: Vec<u128> = (1..=MAX_TRIES).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(s, [500, 1000, 2000, 4000, 8000, 16000]);
        assert_eq!(backoff(40), Duration::from_secs(30));
        assert_eq!(backoff(0), Duration::from_millis(500));
    }

    #[test]
    fn metadata_is_base64_per_value() {
        assert_eq!(
            metadata_header(&[("filename", b"clip.mp4")]),
            "filename Y2xpcC5tcDQ="
        );
        assert_eq!(
            metadata_header(&[("filename", "é v.mov".as_bytes()), ("flag", b"")]),
            "filename w6kgdi5tb3Y=,flag"
        );
    }

    #[test]
    fn checksum_header_is_sha1_base64() {
        let digest = sha1::Digest::finalize(<sha1::Sha1 as sha1::Digest>::new_with_prefix(b"abc"));
        assert_eq!(
            checksum_header(&digest),
            "sha1 qZk+NkcGgWq6PiVxeFDCbJzQ2J0="
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("2 G"), Ok(2 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("3 parsecs").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn each_byte_is_hashed_once_in_order() {
        assert_eq!(unhashed_part(0, 10, 0), Some(0..10));
        assert_eq!(unhashed_part(10, 10, 15), Some(5..10));
        assert_eq!(unhashed_part(10, 10, 20), None); // already hashed (a resent chunk)
        assert_eq!(unhashed_part(30, 10, 20), None); // a gap: filled in later by a re-read
        // Feeding overlapping, repeated and out-of-order pieces yields the file's digest.
        let data: Vec<u8> = (0..100u8).collect();
        let mut c = HashCursor {
            hasher: sha2::Sha256::new(),
            hashed: 0,
        };
        c.feed(0, &data[0..30]);
        c.feed(50, &data[50..70]);
        c.feed(20, &data[20..60]);
        c.feed(0, &data[0..30]);
        c.feed(60, &data[60..100]);
        assert_eq!(c.hashed, 100);
        assert_eq!(hex(&c.hasher.finalize()), hex(&sha2::Sha256::digest(&data)));
    }
}
