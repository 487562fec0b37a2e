//! The worker runtime: pulls [`TranscodeJob`]s from the apalis queue and runs them.
//!
//! A job's life: mark it running (a redelivered job that already finished is skipped, so
//! an asset is published exactly once) → probe → plan the ladder → transcode on a blocking
//! thread while progress flows to the metadata store → upload the output under a staging
//! prefix → publish (segments and variant playlists, the master playlist last) → ready.
//! Bad input fails the job at once with the media error's message; infrastructure errors
//! go back to the queue until the attempts run out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use apalis::prelude::{
    BackendExt, BoxDynError, Data, PollSnapshot, PollStrategy, WorkerBuilder, WorkerBuilderExt,
};
use sluice_engine::{JobReporter, Rendition, TranscodeJob, TranscodePreset, TranscodeQueue};
use sluice_storage::keys;
use sluice_storage::{Source, Storage};
use tokio::sync::watch;

use crate::media::ladder::plan_ladder;
use crate::media::transcode::{TranscodeOptions, TranscodeOutput, VariantOutput, transcode};
use crate::media::{self, MediaError};
use sluice_media::hls::{Variant, replace_variant};

/// Errors of a job run, split by what should happen next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The input is at fault: fail now, with this message for the user.
    #[error("{0}")]
    Permanent(String),
    /// Something around the job failed: retry if attempts remain.
    #[error("{0}")]
    Transient(String),
}

impl From<MediaError> for JobError {
    fn from(e: MediaError) -> Self {
        if e.is_permanent() {
            JobError::Permanent(e.to_string())
        } else {
            JobError::Transient(e.to_string())
        }
    }
}

impl From<sluice_engine::Error> for JobError {
    fn from(e: sluice_engine::Error) -> Self {
        JobError::Transient(e.to_string())
    }
}

impl From<sluice_storage::Error> for JobError {
    fn from(e: sluice_storage::Error) -> Self {
        JobError::Transient(e.to_string())
    }
}

/// Wakes an idle worker every tick so it fetches again. apalis's SQL backends park an idle
/// worker until its next heartbeat (seconds); a job queued meanwhile — by this process or
/// by a gateway elsewhere — would wait that long to start.
struct Tick(tokio::time::Interval);

impl Tick {
    fn every(period: Duration) -> Self {
        let mut i = tokio::time::interval(period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Tick(i)
    }
}

impl PollStrategy for Tick {
    fn poll_drive(
        &mut self,
        cx: &mut std::task::Context<'_>,
        _: &PollSnapshot,
    ) -> std::task::Poll<Option<()>> {
        // Consume elapsed ticks until the interval is pending again: that registers the
        // waker for the next one.
        while self.0.poll_tick(cx).is_ready() {}
        std::task::Poll::Pending
    }
}

struct Ctx {
    jobs: JobReporter,
    /// Where job inputs are read and outputs published.
    storage: Storage,
    worker_id: String,
    /// Turns true when running jobs must stop at once (shutdown grace period over).
    hard_stop: watch::Receiver<bool>,
}

/// Why a running job was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum StopReason {
    None = 0,
    Cancelled = 1,
    Shutdown = 2,
    Timeout = 3,
}

/// The stop flag handed to the pipeline, with the reason it was raised.
#[derive(Default)]
struct Stop {
    flag: Arc<AtomicBool>,
    reason: AtomicU8,
}

impl Stop {
    fn raise(&self, reason: StopReason) {
        let _ = self.reason.compare_exchange(
            StopReason::None as u8,
            reason as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        self.flag.store(true, Ordering::SeqCst);
    }

    fn reason(&self) -> StopReason {
        match self.reason.load(Ordering::SeqCst) {
            1 => StopReason::Cancelled,
            2 => StopReason::Shutdown,
            3 => StopReason::Timeout,
            _ => StopReason::None,
        }
    }

    fn check(&self) -> Result<(), JobError> {
        if self.flag.load(Ordering::SeqCst) {
            Err(JobError::from(MediaError::Cancelled))
        } else {
            Ok(())
        }
    }
}

/// Run transcode workers until `shutdown` turns true. Running jobs then get
/// `workers.shutdown_grace_s` to finish; after that they are stopped and released back to
/// the queue without losing an attempt.
pub async fn run(
    jobs: JobReporter,
    storage: Storage,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    media::init().map_err(|e| e.to_string())?;
    let worker_id = format!(
        "{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()),
        std::process::id()
    );
    let concurrency = jobs.config().workers.concurrency;
    let grace = Duration::from_secs(jobs.config().workers.shutdown_grace_s);
    let (hard_tx, hard_stop) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        jobs: jobs.clone(),
        storage,
        worker_id: worker_id.clone(),
        hard_stop,
    });
    tracing::info!(worker = %worker_id, concurrency, "transcode worker started");
    let signal = async move {
        let _ = shutdown.wait_for(|s| *s).await;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = hard_tx.send(true);
        });
        Ok::<(), std::io::Error>(())
    };
    let tick = Duration::from_millis(jobs.config().workers.poll_ms);
    // One apalis worker over whichever backend the deployment uses.
    macro_rules! run_on {
        ($backend:expr) => {
            WorkerBuilder::new(worker_id)
                .backend($backend.poll_with_strategy(Tick::every(tick)))
                .concurrency(concurrency)
                .data(ctx)
                .build(handle)
                .run_until(signal)
                .await
        };
    }
    let result = match jobs.transcode_queue() {
        TranscodeQueue::Sqlite(q) => run_on!(q),
        TranscodeQueue::Postgres(q) => run_on!(q),
    };
    result.map_err(|e| e.to_string())
}

/// Run a bookkeeping write of the job's state, retried through a short outage of the
/// metadata database (about half a minute): each delivery is the job's only one, so a
/// write given up here would leave the job queued or running for good.
async fn bookkeep<T, F, Fut>(what: &str, mut f: F) -> sluice_engine::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = sluice_engine::Result<T>>,
{
    let mut delay = Duration::from_millis(500);
    for _ in 0..6 {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                tracing::warn!("could not {what} (retrying in {delay:?}): {e}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    f().await
}

async fn handle(job: TranscodeJob, ctx: Data<Arc<Ctx>>) -> Result<(), BoxDynError> {
    let jobs = &ctx.jobs;
    // A retry delivered a little early (the queue counts whole seconds) waits its turn.
    if let Some(wait) = bookkeep("read the job's due time", || jobs.job_due_in(&job)).await?
        && wait <= Duration::from_secs(2)
    {
        tokio::time::sleep(wait).await;
    }
    let Some(attempt) = bookkeep("record the start", || {
        jobs.job_started(&job, &ctx.worker_id)
    })
    .await?
    else {
        tracing::info!(job = %job.job_id, "delivery dropped: job finished, cancelled or not due");
        return Ok(());
    };
    let started = Instant::now();
    let scratch = jobs.work_dir().join(&job.job_id);
    let stop = Arc::new(Stop::default());
    let (monitor, progress) = spawn_monitor(&ctx, &job, stop.clone());
    let result = run_job(&ctx, &job, &scratch, &stop, progress).await;
    monitor.abort();
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    metrics::histogram!("sluice_job_duration_seconds", "kind" => "transcode")
        .record(started.elapsed().as_secs_f64());
    let max = i64::from(jobs.config().workers.max_attempts);
    let id = &job.job_id;
    // Interruptions first: the pipeline reports them all as `Cancelled`.
    let result = match (result, stop.reason()) {
        (Err(_), StopReason::Cancelled) => {
            tracing::info!(job = %id, "transcode cancelled");
            bookkeep("record the cancellation", || jobs.job_cancelled(&job)).await?;
            return Ok(());
        }
        (Err(_), StopReason::Shutdown) => {
            tracing::info!(job = %id, "released at shutdown; it will run again");
            bookkeep("release the job", || jobs.job_release(&job)).await?;
            return Ok(());
        }
        (Err(_), StopReason::Timeout) => Err(JobError::Transient(format!(
            "the job exceeded its time limit of {} s",
            jobs.config().workers.job_timeout_s
        ))),
        (r, _) => r,
    };
    match result {
        Ok(()) => {}
        Err(JobError::Permanent(msg)) => {
            tracing::info!(job = %id, asset = %job.asset_id, "transcode failed: {msg}");
            bookkeep("record the failure", || jobs.job_failed(&job, &msg)).await?;
        }
        Err(JobError::Transient(msg)) if attempt >= max => {
            tracing::warn!(job = %id, attempt, "transcode failed, no attempts left: {msg}");
            let msg = format!("gave up after {attempt} attempts: {msg}");
            bookkeep("record the last failure", || jobs.job_dead(&job, &msg)).await?;
        }
        Err(JobError::Transient(msg)) => {
            let delay = bookkeep("schedule the retry", || {
                jobs.job_retry_later(&job, attempt, &msg)
            })
            .await?;
            tracing::warn!(job = %id, attempt, ?delay, "transcode failed, will retry: {msg}");
        }
    }
    // apalis never retries by itself: the outcome is recorded above, durably.
    Ok(())
}

/// Watches a running job about once a second: stores progress, and raises the stop flag
/// when the job is cancelled (by any gateway), overruns its time limit, or the process
/// must stop.
fn spawn_monitor(
    ctx: &Arc<Ctx>,
    job: &TranscodeJob,
    stop: Arc<Stop>,
) -> (tokio::task::JoinHandle<()>, watch::Sender<f64>) {
    let (ptx, mut prx) = watch::channel(0.0f64);
    let jobs = ctx.jobs.clone();
    let job = job.clone();
    let mut hard_stop = ctx.hard_stop.clone();
    let deadline = Instant::now() + Duration::from_secs(jobs.config().workers.job_timeout_s);
    let handle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut stored = -1.0f64;
        let beat_every = Duration::from_secs(jobs.config().workers.heartbeat_s);
        let mut beat = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = hard_stop.wait_for(|s| *s) => {
                    stop.raise(StopReason::Shutdown);
                    return;
                }
            }
            if Instant::now() >= deadline {
                stop.raise(StopReason::Timeout);
            }
            match jobs.job_cancel_requested(&job).await {
                Ok(true) => stop.raise(StopReason::Cancelled),
                Ok(false) => {}
                Err(e) => tracing::warn!("cancel check failed: {e}"),
            }
            // The job's heartbeat: a second delivery of it starts it only when this
            // worker has gone silent for two heartbeats.
            if beat.elapsed() >= beat_every {
                if let Err(e) = jobs.job_heartbeat(&job).await {
                    tracing::warn!("job heartbeat failed: {e}");
                }
                beat = Instant::now();
            }
            let p = *prx.borrow_and_update();
            if p > stored {
                if let Err(e) = jobs.job_progress(&job, p).await {
                    tracing::warn!("progress update failed: {e}");
                }
                stored = p;
            }
        }
    });
    (handle, ptx)
}

/// The transcode options of a job: its preset (snapshotted at enqueue time) and the
/// server's stall timeout.
fn options(jobs: &JobReporter, preset: &TranscodePreset) -> TranscodeOptions {
    TranscodeOptions {
        segment_duration: Duration::from_secs_f64(preset.segment_duration_s),
        x264_preset: preset.x264_preset.clone(),
        audio_bitrate: preset.audio_bitrate,
        stall_timeout: Duration::from_secs(jobs.config().transcode.stall_timeout_s),
        // Not configurable yet: the default suits seek-bar previews at every length.
        storyboard_interval: crate::media::thumbs::DEFAULT_STORYBOARD_INTERVAL,
        audio_only: preset.audio_only,
        thumbnails: true,
        segment_format: preset.segment_format,
    }
}

async fn run_job(
    ctx: &Ctx,
    job: &TranscodeJob,
    scratch: &Path,
    stop: &Stop,
    progress: watch::Sender<f64>,
) -> Result<(), JobError> {
    let jobs = &ctx.jobs;
    let _ = tokio::fs::remove_dir_all(scratch).await;
    tokio::fs::create_dir_all(scratch)
        .await
        .map_err(|e| JobError::Transient(format!("cannot create {}: {e}", scratch.display())))?;
    let spec = jobs.job_spec(job).await?;
    if spec.live_copy {
        return run_live_copy(ctx, job, scratch, stop, &progress).await;
    }
    let source = jobs.source_file(job, scratch).await?;

    let src = source.clone();
    let probe = blocking(move || media::probe::probe(&src, Duration::from_secs(30))).await??;
    jobs.job_probed(
        job,
        (probe.duration_s * 1000.0).round() / 1000.0,
        serde_json::to_value(&probe).unwrap_or_default(),
    )
    .await?;
    let video = probe
        .video
        .as_ref()
        .ok_or_else(|| JobError::from(MediaError::NoVideo))?;
    check_limits(
        video.width,
        video.height,
        probe.duration_s,
        &jobs.config().transcode,
        spec.preset.max_duration_s,
    )
    .map_err(JobError::Permanent)?;
    let mut rungs = plan_ladder(&spec.preset.ladder, video.width, video.height);
    let mut opts = options(jobs, &spec.preset);
    if let Some(name) = &spec.rendition {
        // Re-run one rendition: the same plan (so the same size and bit rate), only that
        // rung; the shared outputs (thumbnails, audio-only) stay as published.
        rungs.retain(|r| r.name == *name);
        if rungs.is_empty() {
            return Err(JobError::Permanent(format!(
                "rendition {name} is not part of this asset's ladder"
            )));
        }
        opts.audio_only = false;
        opts.thumbnails = false;
    }

    stop.check()?;
    let out_dir = scratch.join("out");
    let flag = stop.flag.clone();
    let (src, out, pr) = (source.clone(), out_dir.clone(), probe.clone());
    let output: TranscodeOutput = blocking(move || {
        let mut report = |p: f64| {
            let _ = progress.send(p);
        };
        transcode(&src, &out, &pr, &rungs, &opts, &mut report, &flag)
    })
    .await??;
    stop.check()?;

    let rendition = |v: &VariantOutput| Rendition {
        name: v.rung.name.clone(),
        width: v.rung.width,
        height: v.rung.height,
        bandwidth: v.bandwidth,
        codecs: v.codecs.clone(),
    };
    if spec.rendition.is_some() {
        let v = output
            .variants
            .first()
            .ok_or_else(|| JobError::Transient("the re-run produced no rendition".into()))?;
        publish_rendition(&ctx.storage, job, &out_dir, v).await?;
        jobs.job_rendition_succeeded(job, &rendition(v)).await?;
        tracing::info!(job = %job.job_id, asset = %job.asset_id, rendition = %v.rung.name, "rendition re-published");
        return Ok(());
    }

    publish(&ctx.storage, job, &out_dir).await?;
    let renditions: Vec<Rendition> = output
        .variants
        .iter()
        .chain(&output.audio_only)
        .map(rendition)
        .collect();
    let duration_s = (output.duration_s * 1000.0).round() / 1000.0;
    jobs.job_succeeded(job, &renditions, duration_s).await?;
    tracing::info!(job = %job.job_id, asset = %job.asset_id, variants = renditions.len(), "asset ready");
    Ok(())
}

/// A live recording kept as pushed: probe a sample of each rendition (its first segment)
/// for the master playlist's resolution and codecs, then let the jobs publish the
/// segments by server-side copies.
async fn run_live_copy(
    ctx: &Ctx,
    job: &TranscodeJob,
    scratch: &Path,
    stop: &Stop,
    progress: &watch::Sender<f64>,
) -> Result<(), JobError> {
    let permanent = |e: sluice_engine::Error| {
        if e.is_retryable() {
            JobError::Transient(e.to_string())
        } else {
            JobError::Permanent(e.to_string())
        }
    };
    let jobs = &ctx.jobs;
    let plan = jobs.live_copy_plan(job).await.map_err(permanent)?;
    let mut probes = Vec::with_capacity(plan.renditions.len());
    for (i, r) in plan.renditions.iter().enumerate() {
        stop.check()?;
        let sample = scratch.join(format!("sample-{i}"));
        ctx.storage
            .get_concat_to_file(&r.sample_keys, &sample, false)
            .await?;
        let path = sample.clone();
        let info = blocking(move || media::probe_sample(&path, Duration::from_secs(30))).await??;
        let (width, height) = info.video.as_ref().map_or((0, 0), |v| (v.width, v.height));
        let codecs: Vec<String> = [
            info.video.as_ref().and_then(|v| v.hls_codec.clone()),
            info.audio.as_ref().and_then(|a| a.hls_codec.clone()),
        ]
        .into_iter()
        .flatten()
        .collect();
        probes.push(sluice_engine::live::vod::RenditionProbe {
            width,
            height,
            codecs: codecs.join(","),
        });
        let _ = progress.send((i + 1) as f64 / (plan.renditions.len() + 1) as f64);
    }
    stop.check()?;
    let (renditions, duration_s) = jobs
        .publish_live_copy(job, &plan, &probes)
        .await
        .map_err(permanent)?;
    jobs.job_succeeded(job, &renditions, duration_s).await?;
    tracing::info!(job = %job.job_id, asset = %job.asset_id, renditions = renditions.len(), "live recording published as pushed");
    Ok(())
}

/// Refuse sources beyond the configured limits before spending a decode on them: a header
/// can claim any size, and a 16384×16384 frame would exhaust memory across the ladder.
fn check_limits(
    width: u32,
    height: u32,
    duration_s: f64,
    limits: &sluice_engine::config::TranscodeConfig,
    tenant_max_duration_s: Option<f64>,
) -> Result<(), String> {
    let pixels = u64::from(width) * u64::from(height);
    if width == 0 || height == 0 {
        return Err(format!(
            "the video stream has no usable size ({width}x{height})"
        ));
    }
    if pixels > limits.max_pixels {
        return Err(format!(
            "the video is {width}x{height}, larger than the {} pixels per frame this server accepts",
            limits.max_pixels
        ));
    }
    if duration_s > limits.max_duration_s {
        return Err(format!(
            "the video lasts {duration_s:.0} s, longer than the {:.0} s this server accepts",
            limits.max_duration_s
        ));
    }
    if let Some(max) = tenant_max_duration_s
        && duration_s > max
    {
        return Err(format!(
            "the video lasts {duration_s:.1} s, longer than the {max:.1} s limit of this tenant's preset"
        ));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, JobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| JobError::Transient(format!("media thread failed: {e}")))
}

/// Every file under `dir`, as paths relative to it, sorted.
fn walk(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let p = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push(rel.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Upload the job's output under its staging prefix, then promote it into the asset's
/// published prefix in an order that never shows a partial ladder (`Storage::publish`:
/// segments, then variant playlists, then the master playlist).
async fn publish(storage: &Storage, job: &TranscodeJob, out_dir: &Path) -> Result<(), JobError> {
    let staging = keys::staging_prefix(&job.tenant_id, &job.asset_id, &job.job_id);
    let published = keys::hls_prefix(&job.tenant_id, &job.asset_id);
    let files = walk(out_dir)
        .map_err(|e| JobError::Transient(format!("cannot list transcode output: {e}")))?;
    let rels: Vec<String> = files
        .iter()
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .collect();
    if !rels.iter().any(|r| r == "master.m3u8") {
        return Err(JobError::Transient(
            "transcode produced no master playlist".into(),
        ));
    }
    let staged = rels
        .iter()
        .map(|rel| (rel.clone(), Source::File(out_dir.join(rel))))
        .collect();
    storage.publish(&staging, staged).await?;
    // A previous attempt may have left a partial output: clear it first.
    storage.delete_prefix(&published).await?;
    let promoted = rels
        .iter()
        .map(|rel| (rel.clone(), Source::Object(format!("{staging}{rel}"))))
        .collect();
    storage.publish(&published, promoted).await?;
    storage.delete_prefix(&staging).await?;
    Ok(())
}

/// Publish a re-run of one rendition without ever showing a broken ladder. Its segments
/// keep their names, durations (within a frame) and keyframe positions, so a player that
/// loaded the old variant playlist finds a valid segment at every URI throughout:
/// everything is staged first; then the segments replace the old ones (each copy is
/// atomic), then the variant playlist, then the master playlist, rewritten with the
/// rendition's new figures and every other entry unchanged (`Storage::publish` keeps that
/// order); segments the new playlist no longer names go last.
async fn publish_rendition(
    storage: &Storage,
    job: &TranscodeJob,
    out_dir: &Path,
    v: &VariantOutput,
) -> Result<(), JobError> {
    let staging = keys::staging_prefix(&job.tenant_id, &job.asset_id, &job.job_id);
    let published = keys::hls_prefix(&job.tenant_id, &job.asset_id);
    let name = &v.rung.name;
    let master_key = format!("{published}master.m3u8");
    let master = storage.get_bytes(&master_key).await?;
    let master = std::str::from_utf8(&master)
        .ok()
        .and_then(|m| replace_variant(m, &Variant::from(v)))
        .ok_or_else(|| {
            JobError::Permanent(format!(
                "the published master playlist has no entry for rendition {name}"
            ))
        })?;

    let mut staged: Vec<(String, Source)> = v
        .segments
        .iter()
        .map(|s| format!("{name}/{}", s.uri))
        .chain([format!("{name}/index.m3u8")])
        .map(|rel| {
            let file = out_dir.join(&rel);
            (rel, Source::File(file))
        })
        .collect();
    staged.push((
        "master.m3u8".to_owned(),
        Source::Bytes(bytes::Bytes::from(master.into_bytes())),
    ));
    let rels: Vec<String> = staged.iter().map(|(rel, _)| rel.clone()).collect();
    storage.publish(&staging, staged).await?;
    let old = storage.list(&format!("{published}{name}/")).await?;
    let promoted = rels
        .iter()
        .map(|rel| (rel.clone(), Source::Object(format!("{staging}{rel}"))))
        .collect();
    storage.publish(&published, promoted).await?;
    for o in old {
        let rel = o.key.strip_prefix(&published).unwrap_or(&o.key);
        if !rels.iter().any(|r| r == rel) {
            storage.delete(&o.key).await?;
        }
    }
    storage.delete_prefix(&staging).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_limits;
    use sluice_engine::config::TranscodeConfig;

    #[test]
    fn source_limits() {
        let l = TranscodeConfig::default();
        assert_eq!(check_limits(1920, 1080, 60.0, &l, None), Ok(()));
        assert_eq!(check_limits(8192, 4320, 60.0, &l, Some(60.0)), Ok(()));
        assert_eq!(
            check_limits(1280, 720, 60.5, &l, Some(60.0)),
            Err(
                "the video lasts 60.5 s, longer than the 60.0 s limit of this tenant's preset"
                    .into()
            )
        );
        assert_eq!(
            check_limits(16384, 16384, 10.0, &l, None),
            Err("the video is 16384x16384, larger than the 35389440 pixels per frame this server accepts".into())
        );
        assert_eq!(
            check_limits(1280, 720, 30_000.0, &l, None),
            Err("the video lasts 30000 s, longer than the 21600 s this server accepts".into())
        );
        assert!(check_limits(0, 720, 1.0, &l, None).is_err());
    }
}
