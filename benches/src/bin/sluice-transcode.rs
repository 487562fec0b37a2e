//! Runs the worker's transcode exactly as a job does (probe → default ladder → one-decode
//! pipeline → HLS) on one file, for the peer comparison with ffmpeg
//! (`benches/peer/transcode_vs_ffmpeg.py`). Usage: `sluice-transcode INPUT OUT_DIR`.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use sluice_workers::media::{self, TranscodeOptions, default_ladder, plan_ladder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: sluice-transcode INPUT OUT_DIR".into());
    };
    let (input, out) = (PathBuf::from(input), PathBuf::from(out));
    media::init()?;
    let probe = media::probe(&input, Duration::from_secs(30))?;
    let video = probe.require_video()?;
    let rungs = plan_ladder(&default_ladder(), video.width, video.height);
    let opts = TranscodeOptions::default();
    let cancel = AtomicBool::new(false);
    let output = media::transcode(&input, &out, &probe, &rungs, &opts, &mut |_| {}, &cancel)?;
    println!(
        "{}",
        serde_json::json!({
            "duration_s": output.duration_s,
            "variants": output.variants.iter().map(|v| serde_json::json!({
                "name": v.rung.name, "width": v.rung.width, "height": v.rung.height,
                "bandwidth": v.bandwidth, "segments": v.segments.len(),
            })).collect::<Vec<_>>(),
        })
    );
    Ok(())
}
