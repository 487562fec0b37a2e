//! Building the one pipeline of a transcode: decode once, a tee per rendition, one AAC
//! encode, muxers per segment format, the thumbnail branch (see the parent's diagram).

use super::*;

/// The muxer `splitmuxsink` restarts for every segment: MPEG-TS, or gst-plugins-rs'
/// `isofmp4mux` (one ftyp+moov+moof+mdat file per segment, split into `init.mp4` and bare
/// fragments afterwards by [`fmp4::split_init`](super::fmp4::split_init)). Decode times are
/// the stream's running time, so the fragments of consecutive files follow each other.
pub(super) fn make_segment_muxer(
    format: SegmentFormat,
    name: &str,
) -> Result<gst::Element, MediaError> {
    match format {
        SegmentFormat::Ts => make("mpegtsmux", name),
        SegmentFormat::Fmp4 => {
            let m = make("isofmp4mux", name)?;
            // One fragment per segment file: the segment is closed (EOS) long before this.
            set(&m, "fragment-duration", 3_600_000_000_000u64)?;
            Ok(m)
        }
    }
}

/// `splitmuxsink` finds a muxer's pads by template name (`video`, `audio_%u`, or
/// mpegtsmux's `sink_%d`); `isofmp4mux` names them `sink_%u`, so map them explicitly.
pub(super) fn set_pad_map(
    sink: &gst::Element,
    format: SegmentFormat,
    pads: &[&str],
) -> Result<(), MediaError> {
    if format != SegmentFormat::Fmp4 {
        return Ok(());
    }
    let mut map = gst::Structure::builder("x-pad-map");
    for (i, pad) in pads.iter().enumerate() {
        map = map.field(*pad, format!("sink_{i}"));
    }
    sink.set_property("muxer-pad-map", map.build());
    Ok(())
}

pub(super) fn link(elements: &[&gst::Element]) -> Result<(), MediaError> {
    gst::Element::link_many(elements.iter().copied())
        .map_err(|e| MediaError::Pipeline(format!("could not link the pipeline: {e}")))
}

pub(super) fn link_pads(src: &gst::Pad, sink: &gst::Pad) -> Result<(), MediaError> {
    src.link(sink).map(|_| ()).map_err(|e| {
        MediaError::Pipeline(format!(
            "could not link {} to {}: {e:?}",
            src.name(),
            sink.name()
        ))
    })
}

pub(super) fn request_pad(el: &gst::Element, template: &str) -> Result<gst::Pad, MediaError> {
    el.request_pad_simple(template)
        .ok_or_else(|| MediaError::Pipeline(format!("{} refused a {template} pad", el.name())))
}

pub(super) fn static_pad(el: &gst::Element, name: &str) -> Result<gst::Pad, MediaError> {
    el.static_pad(name)
        .ok_or_else(|| MediaError::Pipeline(format!("{} has no {name} pad", el.name())))
}

/// x264's own `rc_lookahead` for each speed preset (x264's preset table).
pub(super) fn preset_lookahead(preset: &str) -> i32 {
    match preset {
        "ultrafast" | "superfast" => 0,
        "veryfast" => 10,
        "faster" => 20,
        "fast" => 30,
        "medium" => 40,
        "slow" => 50,
        _ => 60, // slower, veryslow, placebo
    }
}

/// Frames a rendition's raw-video queue holds: the encoder's lookahead plus slack for
/// B-frames, frame threads and the muxer.
pub(super) fn video_queue_frames(preset: &str) -> u32 {
    preset_lookahead(preset).max(0) as u32 + VIDEO_QUEUE_SLACK_FRAMES
}

/// A queue bounded by a number of buffers only.
pub(super) fn frame_queue(name: &str, frames: u32) -> Result<gst::Element, MediaError> {
    let q = make("queue", name)?;
    set(&q, "max-size-time", 0u64)?;
    set(&q, "max-size-bytes", 0u32)?;
    set(&q, "max-size-buffers", frames)?;
    Ok(q)
}

/// Prefer FFmpeg's AAC encoder (better quality than voaacenc at the same rate).
pub(super) fn make_aac_encoder(bitrate: u32) -> Result<gst::Element, MediaError> {
    for factory in ["avenc_aac", "voaacenc"] {
        if gst::ElementFactory::find(factory).is_some() {
            let enc = make(factory, "aac-encoder")?;
            if !set_int(&enc, "bitrate", i64::from(bitrate))? {
                return Err(MediaError::Pipeline(format!(
                    "{factory} has no bitrate property"
                )));
            }
            return Ok(enc);
        }
    }
    Err(MediaError::Pipeline(
        "no AAC encoder (avenc_aac or voaacenc) is installed".into(),
    ))
}

pub(super) fn build_pipeline(plan: &PipelinePlan<'_>) -> Result<BuiltPipeline, MediaError> {
    let pipeline = gst::Pipeline::with_name("sluice-transcode");

    // Decoders tolerate a few broken frames by default and paper over mid-file corruption;
    // we want damaged uploads to fail. Decoders are created inside decodebin3 later, hence
    // the deep-element-added hook.
    pipeline.connect_deep_element_added(|_, _, element| {
        if element.find_property("max-errors").is_some()
            && let Err(e) = set_int(element, "max-errors", 0)
        {
            tracing::warn!("cannot make {} strict: {e}", element.name());
        }
    });

    let src = make("filesrc", "source")?;
    set(&src, "location", plan.input)?;
    let decodebin = make("decodebin3", "decoder")?;

    // Shared video chain: convert once, deinterlace if the caps say interlaced (a
    // passthrough otherwise), apply the rotation tag, fix the frame rate, pick I420
    // (anything else and x264 may produce High 4:4:4, which browsers reject).
    let vconvert = make("videoconvert", "video-convert")?;
    let deinterlace = make("deinterlace", "deinterlace")?;
    let vflip = make("videoflip", "video-flip")?;
    set_enum(&vflip, "video-direction", "auto")?;
    let vrate = make("videorate", "video-rate")?;
    let vcaps = make("capsfilter", "video-rate-caps")?;
    set(
        &vcaps,
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("framerate", gst::Fraction::new(plan.fps.0, plan.fps.1))
            .build(),
    )?;
    let vtee = make("tee", "video-tee")?;
    pipeline
        .add_many([
            &src,
            &decodebin,
            &vconvert,
            &deinterlace,
            &vflip,
            &vrate,
            &vcaps,
            &vtee,
        ])
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    link(&[&src, &decodebin])?;
    link(&[&vconvert, &deinterlace, &vflip, &vrate, &vcaps, &vtee])?;

    // Shared audio chain, only when there is audio.
    let audio = match plan.audio_channels {
        Some(channels) => {
            let aconvert = make("audioconvert", "audio-convert")?;
            let aresample = make("audioresample", "audio-resample")?;
            let acaps = make("capsfilter", "audio-caps")?;
            set(
                &acaps,
                "caps",
                gst::Caps::builder("audio/x-raw")
                    .field("rate", AUDIO_RATE)
                    .field("channels", channels)
                    .build(),
            )?;
            let aenc = make_aac_encoder(plan.opts.audio_bitrate)?;
            let aparse = make("aacparse", "aac-parse")?;
            let atee = make("tee", "audio-tee")?;
            pipeline
                .add_many([&aconvert, &aresample, &acaps, &aenc, &aparse, &atee])
                .map_err(|e| MediaError::Pipeline(e.to_string()))?;
            link(&[&aconvert, &aresample, &acaps, &aenc, &aparse, &atee])?;
            Some((static_pad(&aconvert, "sink")?, atee))
        }
        None => None,
    };

    let mut branches = Vec::with_capacity(plan.rungs.len());
    for (i, rung) in plan.rungs.iter().enumerate() {
        let queue = frame_queue(
            &format!("video-queue-{i}"),
            video_queue_frames(&plan.opts.x264_preset),
        )?;
        let scale = make("videoscale", &format!("scale-{i}"))?;
        let scaled_caps = make("capsfilter", &format!("scale-caps-{i}"))?;
        set(
            &scaled_caps,
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .field("width", rung.width as i32)
                .field("height", rung.height as i32)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build(),
        )?;
        let enc = make("x264enc", &format!("x264-{i}"))?;
        // Rate control: GStreamer's "cbr" pass is x264 ABR with the VBV max rate set to
        // the bit rate, so segment sizes stay bounded.
        set_enum(&enc, "pass", "cbr")?;
        set(&enc, "bitrate", (rung.video_bitrate / 1000).max(1))?;
        set_enum(&enc, "speed-preset", &plan.opts.x264_preset)?;
        set(&enc, "key-int-max", plan.gop)?;
        // x264enc applies its own rc-lookahead (40) over the preset's; use the preset's value
        // as libx264 does, or a 1080p encoder holds ~30 extra raw frames for no gain at
        // fast presets.
        set(
            &enc,
            "rc-lookahead",
            preset_lookahead(&plan.opts.x264_preset),
        )?;
        set(&enc, "bframes", BFRAMES)?;
        set(&enc, "vbv-buf-capacity", VBV_BUFFER_MS)?;
        // Fixed, closed GOPs: with scene-cut detection off, keyframes fall exactly every
        // key-int-max frames (x264's default GOPs are closed), so every rendition has them
        // at the same frames. min-keyint is belt and braces (x264 clamps it to keyint/2+1).
        set(
            &enc,
            "option-string",
            format!("scenecut=0:min-keyint={}", plan.gop),
        )?;
        let h264_caps = make("capsfilter", &format!("h264-caps-{i}"))?;
        set(
            &h264_caps,
            "caps",
            gst::Caps::builder("video/x-h264")
                .field("profile", "high")
                .build(),
        )?;
        let parser = make("h264parse", &format!("h264parse-{i}"))?;
        // SPS/PPS before every IDR: each segment must decode on its own.
        set(&parser, "config-interval", -1i32)?;

        let sink = make("splitmuxsink", &format!("mux-{i}"))?;
        let muxer = make_segment_muxer(plan.opts.segment_format, &format!("segmux-{i}"))?;
        set(&sink, "muxer", &muxer)?;
        set_pad_map(&sink, plan.opts.segment_format, &["video", "audio_0"])?;
        set(
            &sink,
            "location",
            format!(
                "{}/{}/seg_%05d.{}",
                escape_location(plan.out_dir),
                rung.name,
                plan.opts.segment_format.segment_ext()
            ),
        )?;
        set(
            &sink,
            "max-size-time",
            plan.opts.segment_duration.as_nanos() as u64,
        )?;
        set(&sink, "max-size-bytes", 0u64)?;
        set(&sink, "async-finalize", false)?;
        // Keyframe requests would reach each encoder at a slightly different frame and
        // break alignment; the fixed GOP already puts keyframes where we split.
        set(&sink, "send-keyframe-requests", false)?;

        pipeline
            .add_many([
                &queue,
                &scale,
                &scaled_caps,
                &enc,
                &h264_caps,
                &parser,
                &sink,
            ])
            .map_err(|e| MediaError::Pipeline(e.to_string()))?;
        link(&[&queue, &scale, &scaled_caps, &enc, &h264_caps, &parser])?;
        link_pads(&request_pad(&vtee, "src_%u")?, &static_pad(&queue, "sink")?)?;
        link_pads(&static_pad(&parser, "src")?, &request_pad(&sink, "video")?)?;

        if let Some((_, atee)) = &audio {
            let aqueue = time_queue(&format!("audio-queue-{i}"), AUDIO_QUEUE_TIME)?;
            pipeline
                .add(&aqueue)
                .map_err(|e| MediaError::Pipeline(e.to_string()))?;
            link_pads(&request_pad(atee, "src_%u")?, &static_pad(&aqueue, "sink")?)?;
            link_pads(
                &static_pad(&aqueue, "src")?,
                &request_pad(&sink, "audio_0")?,
            )?;
        }

        let end_ns = Arc::new(AtomicU64::new(0));
        track_end_time(&static_pad(&parser, "src")?, end_ns.clone(), plan.frame_ns);
        branches.push(Branch {
            sink,
            parser,
            end_ns,
        });
    }

    let audio_only = match (&audio, plan.opts.audio_only) {
        (Some((_, atee)), true) => Some(attach_audio_only(&pipeline, atee, plan)?),
        _ => None,
    };

    // Off the same tee, after the fixed-rate videorate: regular timestamps, no second
    // decode. Its queue is bounded by time like the renditions' and is nearly always empty:
    // the appsink releases every frame at once except one per storyboard interval, which
    // it scales down in a few milliseconds.
    let thumbs = if !plan.opts.thumbnails {
        None
    } else {
        match thumbs::attach(
            &pipeline,
            &vtee,
            plan.duration_s,
            plan.opts.storyboard_interval,
            VIDEO_QUEUE_TIME,
        ) {
            Ok(branch) => Some(branch),
            Err(e) => {
                tracing::warn!("transcode continues without thumbnails: {e}");
                None
            }
        }
    };

    connect_decoder_pads(
        &decodebin,
        &pipeline,
        static_pad(&vconvert, "sink")?,
        audio.map(|(pad, _)| pad),
    );
    Ok(BuiltPipeline {
        pipeline,
        branches,
        audio_only,
        thumbs,
    })
}

/// The audio-only rendition: one more branch off the AAC tee (no second encode) into its
/// own audio-only `splitmuxsink`. Every AAC frame can start a segment, so instead of a
/// size-based split (which would drift from the video's by up to a frame per segment), the
/// sink is told to split at the running times of the video keyframes, `k × GOP`: each
/// audio segment starts at the first AAC frame at or after its video segment's start.
pub(super) fn attach_audio_only(
    pipeline: &gst::Pipeline,
    atee: &gst::Element,
    plan: &PipelinePlan<'_>,
) -> Result<AudioOnlyBranch, MediaError> {
    let queue = time_queue("audio-only-queue", AUDIO_QUEUE_TIME)?;
    let sink = make("splitmuxsink", "mux-audio-only")?;
    let muxer = make_segment_muxer(plan.opts.segment_format, "segmux-audio-only")?;
    set(&sink, "muxer", &muxer)?;
    set_pad_map(&sink, plan.opts.segment_format, &["audio_0"])?;
    set(
        &sink,
        "location",
        format!(
            "{}/{AUDIO_ONLY_NAME}/seg_%05d.{}",
            escape_location(plan.out_dir),
            plan.opts.segment_format.segment_ext()
        ),
    )?;
    set(&sink, "max-size-time", 0u64)?;
    set(&sink, "max-size-bytes", 0u64)?;
    set(&sink, "async-finalize", false)?;
    set(&sink, "send-keyframe-requests", false)?;
    pipeline
        .add_many([&queue, &sink])
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    link_pads(&request_pad(atee, "src_%u")?, &static_pad(&queue, "sink")?)?;
    let src = static_pad(&queue, "src")?;
    link_pads(&src, &request_pad(&sink, "audio_0")?)?;

    let end_ns = Arc::new(AtomicU64::new(0));
    track_end_time(&src, end_ns.clone(), AAC_FRAME_NS);
    // Queue the split times when the first buffer arrives (the sink forgets them on state
    // changes), from its streaming thread, before the buffer reaches the sink.
    let times = std::sync::Mutex::new(Some(split_times(plan.fps, plan.gop, plan.duration_s)));
    let weak = sink.downgrade();
    src.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        let pending = times.lock().map(|mut t| t.take()).unwrap_or(None);
        if let (Some(times), Some(sink)) = (pending, weak.upgrade()) {
            for t in times {
                sink.emit_by_name::<()>("split-at-running-time", &[&t]);
            }
        }
        gst::PadProbeReturn::Remove
    });
    Ok(AudioOnlyBranch { sink, end_ns })
}

/// Records the running time at which the last encoded frame ends.
pub(super) fn track_end_time(pad: &gst::Pad, end_ns: Arc<AtomicU64>, frame_ns: u64) {
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(buffer) = info.buffer()
            && let Some(pts) = buffer.pts()
        {
            let end = pts
                + buffer
                    .duration()
                    .unwrap_or(gst::ClockTime::from_nseconds(frame_ns));
            let running = pad.sticky_event::<gst::event::Segment>(0).and_then(|ev| {
                ev.segment()
                    .downcast_ref::<gst::format::Time>()
                    .and_then(|s| s.to_running_time(end))
            });
            if let Some(rt) = running {
                end_ns.fetch_max(rt.nseconds(), Ordering::Relaxed);
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// Links decodebin3's output pads as they appear: the first video stream to the video
/// chain, the first audio stream to the audio chain (if any), everything else (subtitles,
/// extra streams, audio when no audio branch exists) to a fakesink so it cannot block.
pub(super) fn connect_decoder_pads(
    decodebin: &gst::Element,
    pipeline: &gst::Pipeline,
    video: gst::Pad,
    audio: Option<gst::Pad>,
) {
    let pipeline = pipeline.downgrade();
    decodebin.connect_pad_added(move |dbin, pad| {
        let stream_type = pad.stream().map(|s| s.stream_type());
        let name = pad.name();
        let is_video = stream_type.map_or(name.starts_with("video"), |t| {
            t.contains(gst::StreamType::VIDEO)
        });
        let is_audio = stream_type.map_or(name.starts_with("audio"), |t| {
            t.contains(gst::StreamType::AUDIO)
        });
        let target = if is_video {
            Some(&video)
        } else if is_audio {
            audio.as_ref()
        } else {
            None
        };
        // A second pad of the same kind loses the race to an already linked target.
        if let Some(target) = target
            && !target.is_linked()
            && pad.link(target).is_ok()
        {
            return;
        }
        tracing::debug!(pad = %name, "discarding an unused decoded stream");
        let Some(pipeline) = pipeline.upgrade() else {
            return;
        };
        let discard = || -> Result<(), MediaError> {
            let sink = gst::ElementFactory::make("fakesink")
                .build()
                .map_err(|e| MediaError::Pipeline(e.to_string()))?;
            set(&sink, "sync", false)?;
            set(&sink, "async", false)?;
            pipeline
                .add(&sink)
                .map_err(|e| MediaError::Pipeline(e.to_string()))?;
            sink.sync_state_with_parent()
                .map_err(|e| MediaError::Pipeline(e.to_string()))?;
            link_pads(pad, &static_pad(&sink, "sink")?)
        };
        if let Err(e) = discard() {
            gst::element_error!(
                dbin,
                gst::CoreError::Pad,
                ("could not discard stream {name}: {e}")
            );
        }
    });
}
