//! Queue overhead: no-op transcode jobs per second through the engine's own queue
//! configuration (apalis on SQLite, durable pragmas, one task per fetch), pushed in bulk
//! and consumed by one worker. Usage: `queue-noop [JOBS] [CONCURRENCY] [POSTGRES_URL]`
//! (without a URL: the embedded SQLite queue).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apalis::prelude::{BoxDynError, Data, TaskSink, WorkerBuilder, WorkerBuilderExt};
use sluice_engine::{Config, Engine, TranscodeJob, TranscodeQueue};

async fn noop(_job: TranscodeJob, done: Data<Arc<AtomicUsize>>) -> Result<(), BoxDynError> {
    done.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let jobs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let concurrency: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(4);
    let database_url = args.next();
    let backend = if database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let dir = tempfile::tempdir()?;
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        database_url,
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
    match engine.transcode_queue() {
        TranscodeQueue::Sqlite(mut q) => q.push_bulk(tasks).await?,
        TranscodeQueue::Postgres(mut q) => q.push_bulk(tasks).await?,
    }
    let push = t0.elapsed();

    let done = Arc::new(AtomicUsize::new(0));
    let watch = done.clone();
    let finished = async move {
        while watch.load(Ordering::Relaxed) < jobs {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok::<(), std::io::Error>(())
    };
    let t1 = Instant::now();
    macro_rules! consume {
        ($q:expr) => {
            WorkerBuilder::new("queue-noop")
                .backend($q)
                .concurrency(concurrency)
                .data(done.clone())
                .build(noop)
                .run_until(finished)
                .await?
        };
    }
    match engine.transcode_queue() {
        TranscodeQueue::Sqlite(q) => consume!(q),
        TranscodeQueue::Postgres(q) => consume!(q),
    }
    let run = t1.elapsed();
    println!(
        "{backend} queue: pushed {jobs} jobs in {:.2} s ({:.0}/s); consumed at concurrency {concurrency} in {:.2} s: {:.0} no-op jobs/s",
        push.as_secs_f64(),
        jobs as f64 / push.as_secs_f64(),
        run.as_secs_f64(),
        jobs as f64 / run.as_secs_f64()
    );
    Ok(())
}
