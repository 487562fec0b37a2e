//! Queue overhead: no-op transcode jobs per second through the engine's own queue
//! configuration (apalis on SQLite, durable pragmas, one task per fetch), pushed in bulk
//! and consumed by one worker. Usage: `queue-noop [JOBS] [CONCURRENCY]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apalis::prelude::{BoxDynError, Data, TaskSink, WorkerBuilder, WorkerBuilderExt};
use sluice_engine::{Config, Engine, TranscodeJob};

async fn noop(_job: TranscodeJob, done: Data<Arc<AtomicUsize>>) -> Result<(), BoxDynError> {
    done.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let jobs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let concurrency: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(4);
    let dir = tempfile::tempdir()?;
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let (engine, _) = Engine::open(config, Some("bench-admin".into())).await?;
    let tasks: Vec<TranscodeJob> = (0..jobs)
        .map(|i| TranscodeJob {
            job_id: format!("job-{i}"),
            tenant_id: "t".into(),
            asset_id: format!("a-{i}"),
        })
        .collect();
    let t0 = Instant::now();
    engine.transcode_queue().push_bulk(tasks).await?;
    let push = t0.elapsed();

    let done = Arc::new(AtomicUsize::new(0));
    let worker = WorkerBuilder::new("queue-noop")
        .backend(engine.transcode_queue())
        .concurrency(concurrency)
        .data(done.clone())
        .build(noop);
    let watch = done.clone();
    let t1 = Instant::now();
    worker
        .run_until(async move {
            while watch.load(Ordering::Relaxed) < jobs {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<(), std::io::Error>(())
        })
        .await?;
    let run = t1.elapsed();
    println!(
        "sqlite queue: pushed {jobs} jobs in {:.2} s ({:.0}/s); consumed at concurrency {concurrency} in {:.2} s: {:.0} no-op jobs/s",
        push.as_secs_f64(),
        jobs as f64 / push.as_secs_f64(),
        run.as_secs_f64(),
        jobs as f64 / run.as_secs_f64()
    );
    Ok(())
}
