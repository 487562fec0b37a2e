//! Running a built pipeline: the bus loop, progress, stall and cancellation checks, and
//! what the encoders report back.

use super::*;

/// Runs the pipeline to EOS, collecting each sink's fragments, reporting progress and
/// watching for errors, stalls and cancellation.
pub(super) fn run(
    built: &BuiltPipeline,
    duration_s: f64,
    stall_timeout: Duration,
    progress: &mut dyn FnMut(f64),
    cancel: &AtomicBool,
) -> Result<(Vec<Vec<Fragment>>, Vec<Fragment>), MediaError> {
    let pipeline = &built.pipeline;
    let bus = pipeline
        .bus()
        .ok_or_else(|| MediaError::Pipeline("the pipeline has no bus".into()))?;
    // One list per rendition, and a last one for the audio-only rendition.
    let mut fragments: Vec<Vec<Fragment>> = vec![Vec::new(); built.branches.len() + 1];

    if pipeline.set_state(gst::State::Playing).is_err() {
        // The reason (e.g. an unreadable file) is on the bus.
        while let Some(msg) = bus.timed_pop(gst::ClockTime::ZERO) {
            if let gst::MessageView::Error(err) = msg.view() {
                return Err(bus_error(err));
            }
        }
        return Err(MediaError::Pipeline(
            "the transcode pipeline refused to start".into(),
        ));
    }

    let started = Instant::now();
    let mut last_position = 0u64;
    let mut last_advance = started;
    let mut last_report: Option<Instant> = None;
    let mut reported = 0.0f64;
    let mut last_tick = started;
    let mut eos = false;

    while !eos {
        if cancel.load(Ordering::Relaxed) {
            return Err(MediaError::Cancelled);
        }
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(TICK.as_nanos() as u64)) {
            eos = handle_message(&msg, built, &mut fragments)?;
        }
        if last_tick.elapsed() < TICK {
            continue;
        }
        last_tick = Instant::now();

        let position = min_position(built);
        if position > last_position {
            last_position = position;
            last_advance = Instant::now();
        } else if last_advance.elapsed() >= stall_timeout {
            return Err(MediaError::Stalled(stall_timeout));
        }
        if last_report.is_none_or(|t| t.elapsed() >= PROGRESS_INTERVAL) && duration_s > 0.0 {
            let fraction = (position as f64 / 1e9 / duration_s)
                .clamp(0.0, 1.0)
                .max(reported);
            reported = fraction;
            last_report = Some(Instant::now());
            progress(fraction);
        }
    }
    // Late element messages (the last fragment-closed) may still be queued.
    while let Some(msg) = bus.timed_pop(gst::ClockTime::ZERO) {
        handle_message(&msg, built, &mut fragments)?;
    }
    tracing::debug!(elapsed = ?started.elapsed(), "transcode pipeline reached EOS");
    let audio = fragments.pop().unwrap_or_default();
    Ok((fragments, audio))
}

/// Handles one bus message; `Ok(true)` at EOS.
pub(super) fn handle_message(
    msg: &gst::Message,
    built: &BuiltPipeline,
    fragments: &mut [Vec<Fragment>],
) -> Result<bool, MediaError> {
    match msg.view() {
        gst::MessageView::Eos(_) => return Ok(true),
        gst::MessageView::Error(err) => return Err(bus_error(err)),
        gst::MessageView::Warning(w) => {
            let src = w
                .src()
                .map(|s| s.path_string().to_string())
                .unwrap_or_default();
            tracing::warn!(element = %src, "GStreamer warning: {} ({:?})", w.error(), w.debug());
        }
        gst::MessageView::Element(el) => {
            let Some(s) = el.structure() else {
                return Ok(false);
            };
            let opened = s.name() == "splitmuxsink-fragment-opened";
            let closed = s.name() == "splitmuxsink-fragment-closed";
            if !opened && !closed {
                return Ok(false);
            }
            let is_audio_only = built
                .audio_only
                .as_ref()
                .is_some_and(|a| msg.src() == Some(a.sink.upcast_ref()));
            let Some(index) = built
                .branches
                .iter()
                .position(|b| msg.src() == Some(b.sink.upcast_ref()))
                .or(is_audio_only.then_some(built.branches.len()))
            else {
                return Ok(false);
            };
            let (Ok(location), Ok(rt)) =
                (s.get::<String>("location"), s.get::<u64>("running-time"))
            else {
                return Err(MediaError::Pipeline(format!(
                    "malformed {} message",
                    s.name()
                )));
            };
            let list = &mut fragments[index];
            if opened {
                list.push(Fragment {
                    location,
                    start_ns: rt,
                    closed_ns: None,
                });
            } else if let Some(f) = list.iter_mut().rev().find(|f| f.location == location) {
                f.closed_ns = Some(rt);
            }
        }
        _ => {}
    }
    Ok(false)
}

pub(super) fn bus_error(err: &gst::message::Error) -> MediaError {
    let origin = err.src().map(|s| s.name().to_string()).unwrap_or_default();
    let details = err.debug().map(|d| d.to_string());
    tracing::debug!(element = %origin, "GStreamer error: {} ({:?})", err.error(), details);
    from_gst_error(&origin, &err.error(), details.as_deref())
}

/// How far the slowest rendition has got, in ns of running time.
///
/// Measured with the encoded-output tracker of each rendition (what enters its
/// `splitmuxsink`), and the minimum is taken: the pipeline's own position is the *maximum*
/// over its sinks, i.e. the fastest rendition. Querying the `splitmuxsink`s does not work
/// either: on GStreamer 1.22 they answer with the position inside the current fragment,
/// which falls back to ~0 at every new segment.
pub(super) fn min_position(built: &BuiltPipeline) -> u64 {
    built
        .branches
        .iter()
        .map(|b| b.end_ns.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0)
}

/// The `profile` and `level` that h264parse negotiated, read before the pipeline stops.
pub(super) fn h264_profile_level(parser: &gst::Element) -> Option<(String, String)> {
    let caps = parser.static_pad("src")?.current_caps()?;
    let s = caps.structure(0)?;
    Some((
        s.get::<String>("profile").ok()?,
        s.get::<String>("level").ok()?,
    ))
}
