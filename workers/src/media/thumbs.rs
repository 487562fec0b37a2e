//! Thumbnails made from the frames the transcode already decodes: a poster frame, a
//! storyboard sprite sheet and its WebVTT index (`storyboard.jpg#xywh=X,Y,W,H` cues, the
//! media-fragment form players use for seek-bar previews).
//!
//! Decoding is the expensive part of a thumbnail, and the transcode pipeline already does
//! it, so the frames come from one more branch off the video tee (after the fixed-rate
//! `videorate`, so timestamps are regular):
//!
//! ```text
//! tee ─ queue(time-bounded) ─ appsink(sync=false, async=false)
//! ```
//!
//! The appsink callback keeps the few frames it needs (one per storyboard interval, plus the
//! poster) and scales each one right away with GStreamer's `VideoConverter` (the engine
//! behind `videoscale`/`videoconvert`) into a small RGB picture; every other frame is
//! released at once. The branch has no element that can fail to negotiate or return an
//! error flow, so it cannot fail the transcode, and its queue lets the tee move on while a
//! kept frame is scaled (a few milliseconds, once per interval). Memory is bounded by the
//! tile cap: at most [`MAX_TILES`] small tiles and one poster-sized frame.
//!
//! After the pipeline has finished, `ThumbnailBranch::finish` lays the tiles out in a grid,
//! encodes both pictures with `jpegenc` (libjpeg-turbo, through a tiny appsrc pipeline) and
//! writes the files. Everything that decides *what* to produce (sizes, interval, grid, cue
//! text, which frames to keep) is pure and unit-tested.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use serde::{Deserialize, Serialize};

use super::MediaError;
use super::elements::{set, time_queue};
use super::files::write_atomically;

/// The poster frame, in the output directory.
pub const POSTER_FILE: &str = "poster.jpg";
/// The storyboard sprite sheet, in the output directory.
pub const STORYBOARD_FILE: &str = "storyboard.jpg";
/// The WebVTT index of the sprite sheet, in the output directory.
pub const STORYBOARD_VTT_FILE: &str = "storyboard.vtt";

/// Default time between two storyboard tiles.
pub const DEFAULT_STORYBOARD_INTERVAL: Duration = Duration::from_secs(2);
/// Shortest accepted storyboard interval. The output frame rate is at least 1 fps, so every
/// interval of a second or more gets a frame of its own.
pub const MIN_STORYBOARD_INTERVAL: Duration = Duration::from_secs(1);
/// Longest accepted storyboard interval.
pub const MAX_STORYBOARD_INTERVAL: Duration = Duration::from_secs(600);
/// Most tiles in one sprite sheet; longer videos get a wider interval instead. 100 tiles of
/// 160×90 make a 1600×900 sheet of 100–300 kB, small enough to load on the first hover.
pub const MAX_TILES: u32 = 100;
/// Most tiles per row of the sprite sheet.
pub const MAX_COLUMNS: u32 = 10;

/// Box a tile is fitted into. The width is what players expect of a seek-bar preview; the
/// height limit only matters for extreme portrait sources and keeps the sheet (and the
/// memory holding its tiles) bounded.
const TILE_BOX: (u32, u32) = (160, 320);
/// Box the poster is fitted into (same reasoning as [`TILE_BOX`]).
const POSTER_BOX: (u32, u32) = (640, 1280);
/// Where the poster is taken, as a fraction of the duration: far enough in to skip black
/// leaders and title fades, early enough to spoil nothing.
const POSTER_POSITION: f64 = 0.1;
/// Clips shorter than this use their first frame as the poster: 10% of a second or two is
/// not a meaningfully better picture.
const POSTER_MIN_DURATION_S: f64 = 2.0;
/// libjpeg quality: visually clean for photos and UI previews at a modest size.
const JPEG_QUALITY: i32 = 85;
/// How long encoding one JPEG may take; it is milliseconds in practice.
const ENCODE_TIMEOUT: Duration = Duration::from_secs(10);

/// The thumbnails of a transcode; file names are relative to the output directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thumbnails {
    /// Poster frame (JPEG), `poster.jpg`.
    pub poster: String,
    /// Storyboard sprite sheet (JPEG), `storyboard.jpg`.
    pub storyboard: String,
    /// WebVTT index of the sheet, `storyboard.vtt`.
    pub storyboard_vtt: String,
    /// Width of one tile in pixels.
    pub tile_width: u32,
    /// Height of one tile in pixels.
    pub tile_height: u32,
    /// Number of tiles (and cues).
    pub tiles: u32,
    /// Seconds between two tiles.
    pub interval_s: f64,
}

// ---------------------------------------------------------------------------------------
// Pure decisions
// ---------------------------------------------------------------------------------------

/// Scales `width`×`height` down (never up) to fit `max_width`×`max_height`, keeping the
/// aspect ratio, with even dimensions (what 4:2:0 JPEG and video tooling expect).
pub fn fit_within(width: u32, height: u32, max_width: u32, max_height: u32) -> (u32, u32) {
    let (max_w, max_h) = ((max_width & !1).max(2), (max_height & !1).max(2));
    if width == 0 || height == 0 {
        return (max_w, max_h);
    }
    let scale = (f64::from(max_w) / f64::from(width))
        .min(f64::from(max_h) / f64::from(height))
        .min(1.0);
    let even = |v: f64| ((v / 2.0).round() as u32 * 2).max(2);
    (
        even(f64::from(width) * scale).min(max_w),
        even(f64::from(height) * scale).min(max_h),
    )
}

/// Milliseconds between storyboard tiles: the requested interval, widened for long videos
/// so that at most [`MAX_TILES`] tiles cover the whole duration.
pub fn storyboard_interval_ms(duration_s: f64, requested: Duration) -> u64 {
    let requested_ms = u64::try_from(requested.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let duration_ms = if duration_s.is_finite() && duration_s > 0.0 {
        (duration_s * 1000.0).ceil() as u64
    } else {
        0
    };
    requested_ms.max(duration_ms.div_ceil(u64::from(MAX_TILES)))
}

/// Millisecond at which the poster is taken: 10% into the video, or the first frame of
/// clips shorter than 2 s.
pub fn poster_time_ms(duration_s: f64) -> u64 {
    if !duration_s.is_finite() || duration_s < POSTER_MIN_DURATION_S {
        return 0;
    }
    (duration_s * POSTER_POSITION * 1000.0).round() as u64
}

/// Grid of the sprite sheet: tiles fill rows of at most [`MAX_COLUMNS`], left to right,
/// top to bottom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpriteLayout {
    /// Tiles per row.
    pub columns: u32,
    /// Rows.
    pub rows: u32,
    /// Tile width in pixels.
    pub tile_width: u32,
    /// Tile height in pixels.
    pub tile_height: u32,
}

impl SpriteLayout {
    /// The smallest grid of at most [`MAX_COLUMNS`] columns holding `tiles` tiles (at least
    /// one cell).
    pub fn new(tiles: u32, tile_width: u32, tile_height: u32) -> Self {
        let columns = tiles.clamp(1, MAX_COLUMNS);
        Self {
            columns,
            rows: tiles.max(1).div_ceil(columns),
            tile_width,
            tile_height,
        }
    }

    /// Sheet width in pixels.
    pub fn width(&self) -> u32 {
        self.columns * self.tile_width
    }

    /// Sheet height in pixels.
    pub fn height(&self) -> u32 {
        self.rows * self.tile_height
    }

    /// Top-left corner of tile `index`.
    pub fn origin(&self, index: u32) -> (u32, u32) {
        (
            (index % self.columns) * self.tile_width,
            (index / self.columns) * self.tile_height,
        )
    }
}

/// `HH:MM:SS.mmm`, the WebVTT timestamp form with hours (hours may exceed 99).
fn vtt_timestamp(ms: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// The WebVTT storyboard index: one cue per tile, tile `i` shown from `i × interval` until
/// the next tile starts, the last one until `end_ms` (the end of the video).
///
/// Each cue's payload is `image#xywh=X,Y,W,H`, the W3C media-fragment form that Video.js,
/// JW Player, Shaka, Plyr and others read for seek-bar previews.
pub fn storyboard_vtt(
    image: &str,
    layout: &SpriteLayout,
    tiles: u32,
    interval_ms: u64,
    end_ms: u64,
) -> String {
    let mut vtt = String::from("WEBVTT\n");
    for i in 0..tiles {
        let start = u64::from(i) * interval_ms;
        let end = if i + 1 == tiles {
            end_ms
        } else {
            start + interval_ms
        };
        // A cue must end after it starts, even if the caller's end is off by a frame.
        let end = end.max(start + 1);
        let (x, y) = layout.origin(i);
        // Writing to a String cannot fail.
        let _ = write!(
            vtt,
            "\n{} --> {}\n{image}#xywh={x},{y},{},{}\n",
            vtt_timestamp(start),
            vtt_timestamp(end),
            layout.tile_width,
            layout.tile_height
        );
    }
    vtt
}

/// What to do with one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pick {
    /// Storyboard slots this frame fills (normally 0 or 1; more only if frames are further
    /// apart than the interval).
    pub tile_slots: u32,
    /// Whether the frame becomes the poster (possibly replaced by a later one).
    pub poster: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PosterState {
    /// No frame seen yet.
    Missing,
    /// Holding an earlier frame in case the stream ends before the poster time.
    Provisional,
    /// Holding the frame at (or just after) the poster time.
    Final,
}

/// Decides, frame by frame in running-time order, which frames become tiles and which the
/// poster.
///
/// Times count from the first frame, which is where the HLS timeline starts (segment
/// durations are measured from it too), whatever running time the stream starts at.
/// Storyboard slot `k` gets the first frame at least `k × interval` in; the poster is the
/// first frame at or after the poster time, with the first frame kept in the meantime so
/// that a stream ending early still has one.
#[derive(Clone, Debug)]
pub(crate) struct FramePicker {
    interval_ns: u64,
    poster_at_ns: u64,
    max_tiles: u32,
    /// Running time of the first frame.
    origin_ns: Option<u64>,
    next_slot: u32,
    poster: PosterState,
}

impl FramePicker {
    pub fn new(interval_ms: u64, poster_at_ms: u64, max_tiles: u32) -> Self {
        Self {
            interval_ns: interval_ms.max(1).saturating_mul(1_000_000),
            poster_at_ns: poster_at_ms.saturating_mul(1_000_000),
            max_tiles,
            origin_ns: None,
            next_slot: 0,
            poster: PosterState::Missing,
        }
    }

    pub fn pick(&mut self, running_ns: u64) -> Pick {
        let mut pick = Pick::default();
        let t = running_ns.saturating_sub(*self.origin_ns.get_or_insert(running_ns));
        // Slots whose start time this frame has reached.
        let reached = (t / self.interval_ns)
            .saturating_add(1)
            .min(u64::from(self.max_tiles)) as u32;
        if reached > self.next_slot {
            pick.tile_slots = reached - self.next_slot;
            self.next_slot = reached;
        }
        let at_poster_time = t >= self.poster_at_ns;
        match self.poster {
            PosterState::Final => {}
            PosterState::Missing => {
                pick.poster = true;
                self.poster = if at_poster_time {
                    PosterState::Final
                } else {
                    PosterState::Provisional
                };
            }
            PosterState::Provisional if at_poster_time => {
                pick.poster = true;
                self.poster = PosterState::Final;
            }
            PosterState::Provisional => {}
        }
        pick
    }

    /// Whether no later frame can be picked.
    pub fn is_done(&self) -> bool {
        self.next_slot >= self.max_tiles && self.poster == PosterState::Final
    }
}

/// Lays packed RGB tiles (`tile_width × 3` bytes per row, no padding) out on a black sheet
/// whose rows are `stride` bytes apart. Tiles of the wrong size are left out (black).
pub(crate) fn compose_sprite(layout: &SpriteLayout, tiles: &[Vec<u8>], stride: usize) -> Vec<u8> {
    let row_bytes = layout.tile_width as usize * 3;
    let tile_height = layout.tile_height as usize;
    let mut sheet = vec![0u8; stride * layout.height() as usize];
    for (i, tile) in (0u32..).zip(tiles) {
        if tile.len() != row_bytes * tile_height {
            continue;
        }
        let (x, y) = layout.origin(i);
        for (row, src) in tile.chunks_exact(row_bytes).enumerate() {
            let at = (y as usize + row) * stride + x as usize * 3;
            if let Some(dst) = sheet.get_mut(at..at + row_bytes) {
                dst.copy_from_slice(src);
            }
        }
    }
    sheet
}

// ---------------------------------------------------------------------------------------
// The pipeline branch
// ---------------------------------------------------------------------------------------

/// Output sizes, fixed by the first frame's display size.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    tile: (u32, u32),
    poster: (u32, u32),
}

/// Scales and converts frames to RGB at one size, reusing the converter (its filter
/// tables) while the input format stays the same.
struct Scaler {
    size: (u32, u32),
    converter: Option<(
        gst_video::VideoInfo,
        gst_video::VideoInfo,
        gst_video::VideoConverter,
    )>,
}

impl Scaler {
    fn new(size: (u32, u32)) -> Self {
        Self {
            size,
            converter: None,
        }
    }

    fn convert(
        &mut self,
        frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
    ) -> Result<(gst::Buffer, gst_video::VideoInfo), String> {
        let in_info = frame.info();
        let reusable = matches!(&self.converter, Some((cached, _, _)) if cached == in_info);
        if !reusable {
            // The converter refuses to change the frame rate or interlacing: copy both.
            let out_info = gst_video::VideoInfo::builder(
                gst_video::VideoFormat::Rgb,
                self.size.0,
                self.size.1,
            )
            .fps(in_info.fps())
            .par(gst::Fraction::new(1, 1))
            .interlace_mode(in_info.interlace_mode())
            .build()
            .map_err(|e| format!("no RGB format at {}x{}: {e}", self.size.0, self.size.1))?;
            let converter = gst_video::VideoConverter::new(in_info, &out_info, None)
                .map_err(|e| format!("cannot scale {:?} frames: {e}", in_info.format()))?;
            self.converter = Some((in_info.clone(), out_info, converter));
        }
        let Some((_, out_info, converter)) = &self.converter else {
            return Err("no converter".into());
        };
        let mut out = gst::Buffer::with_size(out_info.size())
            .map_err(|e| format!("cannot allocate a frame: {e}"))?;
        {
            let out_ref = out.make_mut();
            let mut dest = gst_video::VideoFrameRef::from_buffer_ref_writable(out_ref, out_info)
                .map_err(|e| format!("cannot map a frame: {e}"))?;
            converter.frame_ref(frame, &mut dest);
        }
        Ok((out, out_info.clone()))
    }
}

/// Copies an RGB frame into packed rows (no stride padding).
fn packed_rgb(buffer: &gst::BufferRef, info: &gst_video::VideoInfo) -> Result<Vec<u8>, String> {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info)
        .map_err(|e| format!("cannot map a tile: {e}"))?;
    let row_bytes = info.width() as usize * 3;
    let stride = usize::try_from(frame.plane_stride()[0]).map_err(|_| "negative stride")?;
    let data = frame
        .plane_data(0)
        .map_err(|e| format!("cannot read a tile: {e}"))?;
    let mut packed = Vec::with_capacity(row_bytes * info.height() as usize);
    for row in 0..info.height() as usize {
        let row_data = data
            .get(row * stride..row * stride + row_bytes)
            .ok_or("tile smaller than its format")?;
        packed.extend_from_slice(row_data);
    }
    Ok(packed)
}

/// Everything the appsink callback builds up, read once the pipeline has stopped.
struct Collector {
    picker: FramePicker,
    sizes: Option<Sizes>,
    tile_scaler: Option<Scaler>,
    /// Packed RGB tiles in slot order; at most `MAX_TILES`.
    tiles: Vec<Vec<u8>>,
    /// RGB poster at `sizes.poster`.
    poster: Option<(gst::Buffer, gst_video::VideoInfo)>,
    /// The first thing that went wrong; the branch stops working after it.
    failure: Option<String>,
}

impl Collector {
    fn on_sample(&mut self, sample: &gst::Sample) {
        if self.failure.is_some() || self.picker.is_done() {
            return;
        }
        if let Err(e) = self.try_on_sample(sample) {
            self.failure = Some(e);
        }
    }

    fn try_on_sample(&mut self, sample: &gst::Sample) -> Result<(), String> {
        let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
            return Ok(());
        };
        let running = buffer.pts().and_then(|pts| {
            sample
                .segment()?
                .downcast_ref::<gst::format::Time>()?
                .to_running_time(pts)
        });
        // Frames outside the segment (none after videorate) have no place in time.
        let Some(running) = running else {
            return Ok(());
        };
        let pick = self.picker.pick(running.nseconds());
        if pick.tile_slots == 0 && !pick.poster {
            return Ok(());
        }

        let info = gst_video::VideoInfo::from_caps(caps)
            .map_err(|e| format!("unreadable video caps {caps}: {e}"))?;
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
            .map_err(|e| format!("cannot map a video frame: {e}"))?;
        let sizes = *self.sizes.get_or_insert_with(|| {
            // Sizes follow the picture as displayed: square the pixels first.
            let par = info.par();
            let width = if par.numer() > 0 && par.denom() > 0 {
                (f64::from(info.width()) * f64::from(par.numer()) / f64::from(par.denom())).round()
                    as u32
            } else {
                info.width()
            };
            Sizes {
                tile: fit_within(width, info.height(), TILE_BOX.0, TILE_BOX.1),
                poster: fit_within(width, info.height(), POSTER_BOX.0, POSTER_BOX.1),
            }
        });

        if pick.tile_slots > 0 {
            let scaler = self
                .tile_scaler
                .get_or_insert_with(|| Scaler::new(sizes.tile));
            let (tile, tile_info) = scaler.convert(&frame)?;
            let packed = packed_rgb(&tile, &tile_info)?;
            for _ in 1..pick.tile_slots {
                self.tiles.push(packed.clone());
            }
            self.tiles.push(packed);
        }
        if pick.poster {
            // Converted at most twice per transcode: no converter worth caching.
            self.poster = Some(Scaler::new(sizes.poster).convert(&frame)?);
        }
        Ok(())
    }
}

fn lock(state: &Mutex<Collector>) -> MutexGuard<'_, Collector> {
    // A panic while holding the lock can only have come from GStreamer bindings; the data
    // is still consistent enough to be reported as a failure.
    state.lock().unwrap_or_else(|poisoned| {
        let mut guard = poisoned.into_inner();
        guard
            .failure
            .get_or_insert_with(|| "the thumbnail collector panicked".into());
        guard
    })
}

/// The thumbnail branch of a transcode pipeline.
pub(crate) struct ThumbnailBranch {
    state: Arc<Mutex<Collector>>,
    interval_ms: u64,
}

/// Adds the thumbnail branch to `tee`.
///
/// `duration_s` (the probed duration) places the poster and widens the storyboard interval
/// for long videos. Elements are named `thumbs-*`.
pub(crate) fn attach(
    pipeline: &gst::Pipeline,
    tee: &gst::Element,
    duration_s: f64,
    interval: Duration,
    queue_time: Duration,
) -> Result<ThumbnailBranch, MediaError> {
    let interval_ms = storyboard_interval_ms(duration_s, interval);
    let state = Arc::new(Mutex::new(Collector {
        picker: FramePicker::new(interval_ms, poster_time_ms(duration_s), MAX_TILES),
        sizes: None,
        tile_scaler: None,
        tiles: Vec::new(),
        poster: None,
        failure: None,
    }));

    let err = |e: &dyn std::fmt::Display| MediaError::Pipeline(format!("thumbnail branch: {e}"));
    let queue = time_queue("thumbs-queue", queue_time)?;
    let callback_state = state.clone();
    let sink = gst_app::AppSink::builder()
        .name("thumbs-sink")
        // Not a clock-synchronised renderer: take frames as fast as they come.
        .sync(false)
        // Do not take part in preroll: the pipeline's state changes must never wait for a
        // branch that may have stopped caring about frames.
        .async_(false)
        .qos(false)
        // The last sample would pin one source-sized frame for the whole transcode.
        .enable_last_sample(false)
        .callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    // Every sample is pulled here, so the appsink's own queue never grows.
                    // The flow is always OK: nothing in this branch may stop the transcode.
                    if let Ok(sample) = sink.pull_sample() {
                        lock(&callback_state).on_sample(&sample);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        )
        .build();

    pipeline
        .add_many([&queue, sink.upcast_ref()])
        .map_err(|e| err(&e))?;
    let linked = (|| -> Result<(), MediaError> {
        queue.link(&sink).map_err(|e| err(&e))?;
        let src = tee
            .request_pad_simple("src_%u")
            .ok_or_else(|| err(&"the tee refused a pad"))?;
        let sink_pad = queue
            .static_pad("sink")
            .ok_or_else(|| err(&"queue without a sink pad"))?;
        if let Err(e) = src.link(&sink_pad) {
            tee.release_request_pad(&src);
            return Err(err(&format!("{e:?}")));
        }
        Ok(())
    })();
    if let Err(e) = linked {
        // Leave the pipeline as it was, so the transcode runs without thumbnails.
        let _ = pipeline.remove_many([&queue, sink.upcast_ref()]);
        return Err(e);
    }
    Ok(ThumbnailBranch { state, interval_ms })
}

impl ThumbnailBranch {
    /// Builds and writes the poster, the sprite sheet and its index into `out_dir`, once
    /// the pipeline has stopped. `end_s` is the duration of the transcoded video (the end
    /// of the last cue).
    pub(crate) fn finish(self, out_dir: &Path, end_s: f64) -> Result<Thumbnails, MediaError> {
        let started = Instant::now();
        let (tiles, poster, sizes) = {
            let mut state = lock(&self.state);
            if let Some(failure) = state.failure.take() {
                return Err(MediaError::Pipeline(failure));
            }
            (
                std::mem::take(&mut state.tiles),
                state.poster.take(),
                state.sizes,
            )
        };
        let (Some((poster, poster_info)), Some(sizes)) = (poster, sizes) else {
            return Err(MediaError::Pipeline("no frame reached the poster".into()));
        };
        let count = u32::try_from(tiles.len()).unwrap_or(u32::MAX);
        if count == 0 {
            return Err(MediaError::Pipeline(
                "no frame reached the storyboard".into(),
            ));
        }

        let layout = SpriteLayout::new(count, sizes.tile.0, sizes.tile.1);
        let sheet_info = gst_video::VideoInfo::builder(
            gst_video::VideoFormat::Rgb,
            layout.width(),
            layout.height(),
        )
        .build()
        .map_err(|e| MediaError::Pipeline(format!("no sprite format: {e}")))?;
        let stride = usize::try_from(sheet_info.stride()[0])
            .map_err(|_| MediaError::Pipeline("negative sprite stride".into()))?;
        let sheet = compose_sprite(&layout, &tiles, stride);
        drop(tiles);
        if sheet.len() != sheet_info.size() {
            return Err(MediaError::Pipeline(format!(
                "sprite of {} bytes, its format needs {}",
                sheet.len(),
                sheet_info.size()
            )));
        }

        let poster_jpeg = encode_jpeg(poster, &poster_info)?;
        let sheet_jpeg = encode_jpeg(gst::Buffer::from_mut_slice(sheet), &sheet_info)?;
        let end_ms = if end_s.is_finite() && end_s > 0.0 {
            (end_s * 1000.0).round() as u64
        } else {
            0
        };
        let vtt = storyboard_vtt(STORYBOARD_FILE, &layout, count, self.interval_ms, end_ms);

        // The index last: it names the sheet.
        write_atomically(&out_dir.join(POSTER_FILE), &poster_jpeg)?;
        write_atomically(&out_dir.join(STORYBOARD_FILE), &sheet_jpeg)?;
        write_atomically(&out_dir.join(STORYBOARD_VTT_FILE), vtt)?;
        tracing::debug!(
            elapsed = ?started.elapsed(),
            tiles = count,
            poster_bytes = poster_jpeg.len(),
            storyboard_bytes = sheet_jpeg.len(),
            "thumbnails written"
        );
        Ok(Thumbnails {
            poster: POSTER_FILE.to_owned(),
            storyboard: STORYBOARD_FILE.to_owned(),
            storyboard_vtt: STORYBOARD_VTT_FILE.to_owned(),
            tile_width: layout.tile_width,
            tile_height: layout.tile_height,
            tiles: count,
            interval_s: self.interval_ms as f64 / 1000.0,
        })
    }
}

/// Removes the thumbnail files of an earlier or failed attempt, so that no stale or partial
/// set gets published next to a fresh ladder.
pub(crate) fn remove_files(out_dir: &Path) -> Result<(), std::io::Error> {
    for name in [STORYBOARD_VTT_FILE, STORYBOARD_FILE, POSTER_FILE] {
        match std::fs::remove_file(out_dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Sets a pipeline to NULL when dropped.
struct StopOnDrop(gst::Pipeline);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// Encodes one raw frame as a baseline 4:2:0 JPEG with `jpegenc` (appsrc → videoconvert →
/// I420 → jpegenc → appsink).
fn encode_jpeg(buffer: gst::Buffer, info: &gst_video::VideoInfo) -> Result<Vec<u8>, MediaError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        MediaError::Pipeline(format!("JPEG encoding: {what}: {e}"))
    };
    let caps = info.to_caps().map_err(|e| fail("caps", &e))?;
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .build();
    let make = |factory: &str| {
        gst::ElementFactory::make(factory)
            .build()
            .map_err(|_| fail("missing element", &factory))
    };
    let convert = make("videoconvert")?;
    let i420 = make("capsfilter")?;
    set(
        &i420,
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            // JFIF means full-range BT.601 YCbCr; without saying so videoconvert picks
            // limited range and the pictures come out washed out.
            .field("colorimetry", "1:4:0:0")
            .build(),
    )?;
    let encoder = make("jpegenc")?;
    set(&encoder, "quality", JPEG_QUALITY)?;
    let sink = gst_app::AppSink::builder().sync(false).build();

    let pipeline = gst::Pipeline::with_name("sluice-jpeg");
    pipeline
        .add_many([
            src.upcast_ref(),
            &convert,
            &i420,
            &encoder,
            sink.upcast_ref(),
        ])
        .map_err(|e| fail("pipeline", &e))?;
    gst::Element::link_many([
        src.upcast_ref(),
        &convert,
        &i420,
        &encoder,
        sink.upcast_ref(),
    ])
    .map_err(|e| fail("link", &e))?;
    let _stop = StopOnDrop(pipeline.clone());
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| fail("start", &e))?;

    let mut buffer = buffer;
    {
        let b = buffer.make_mut();
        b.set_pts(gst::ClockTime::ZERO);
    }
    src.push_buffer(buffer)
        .map_err(|e| fail("push", &format!("{e:?}")))?;
    src.end_of_stream()
        .map_err(|e| fail("end of stream", &format!("{e:?}")))?;

    let timeout = gst::ClockTime::from_nseconds(ENCODE_TIMEOUT.as_nanos() as u64);
    let Some(sample) = sink.try_pull_sample(timeout) else {
        let reason = pipeline
            .bus()
            .and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]))
            .and_then(|msg| match msg.view() {
                gst::MessageView::Error(e) => Some(e.error().to_string()),
                _ => None,
            })
            .unwrap_or_else(|| "no picture came out".into());
        return Err(fail("encoder", &reason));
    };
    let jpeg = sample
        .buffer()
        .ok_or_else(|| fail("encoder", &"empty sample"))?
        .map_readable()
        .map_err(|e| fail("read", &e))?
        .to_vec();
    Ok(jpeg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fit_the_box_keep_aspect_and_are_even() {
        assert_eq!(fit_within(640, 360, 640, 1280), (640, 360));
        assert_eq!(fit_within(1920, 1080, 640, 1280), (640, 360));
        assert_eq!(fit_within(1920, 1080, 160, 320), (160, 90));
        assert_eq!(fit_within(1280, 720, 160, 320), (160, 90));
        // Portrait: 160 × 16/9 = 284.4.
        assert_eq!(fit_within(360, 640, 160, 320), (160, 284));
        assert_eq!(fit_within(1080, 1920, 640, 1280), (640, 1138));
        // Extremely tall: the height limit wins.
        assert_eq!(fit_within(100, 1000, 160, 320), (32, 320));
        // Never upscaled; odd sizes become even.
        assert_eq!(fit_within(120, 90, 160, 320), (120, 90));
        assert_eq!(fit_within(121, 91, 160, 320), (122, 92));
        assert_eq!(fit_within(641, 361, 640, 1280), (640, 360));
        // Degenerate input still gives a usable size.
        assert_eq!(fit_within(0, 0, 160, 320), (160, 320));
        assert_eq!(fit_within(2000, 1, 160, 320), (160, 2));
    }

    #[test]
    fn interval_widens_only_for_long_videos() {
        let two = Duration::from_secs(2);
        assert_eq!(storyboard_interval_ms(5.0, two), 2000);
        assert_eq!(storyboard_interval_ms(1.0, two), 2000);
        assert_eq!(storyboard_interval_ms(200.0, two), 2000); // exactly 100 tiles
        assert_eq!(storyboard_interval_ms(200.5, two), 2005);
        assert_eq!(storyboard_interval_ms(3600.0, two), 36_000);
        assert_eq!(
            storyboard_interval_ms(3600.0, Duration::from_secs(60)),
            60_000
        );
        assert_eq!(storyboard_interval_ms(0.0, two), 2000);
        assert_eq!(storyboard_interval_ms(f64::NAN, two), 2000);
    }

    #[test]
    fn poster_is_ten_percent_in_or_the_first_frame() {
        assert_eq!(poster_time_ms(5.0), 500);
        assert_eq!(poster_time_ms(3600.0), 360_000);
        assert_eq!(poster_time_ms(2.0), 200);
        assert_eq!(poster_time_ms(1.99), 0);
        assert_eq!(poster_time_ms(1.0), 0);
        assert_eq!(poster_time_ms(f64::INFINITY), 0);
    }

    #[test]
    fn layout_of_short_and_long_videos() {
        // 5 s at 2 s: three tiles on one row.
        let short = SpriteLayout::new(3, 160, 90);
        assert_eq!(
            short,
            SpriteLayout {
                columns: 3,
                rows: 1,
                tile_width: 160,
                tile_height: 90
            }
        );
        assert_eq!((short.width(), short.height()), (480, 90));
        assert_eq!(short.origin(2), (320, 0));

        // One hour: 100 tiles every 36 s, a full 10 × 10 sheet.
        let interval = storyboard_interval_ms(3600.0, Duration::from_secs(2));
        let mut picker = FramePicker::new(interval, poster_time_ms(3600.0), MAX_TILES);
        let tiles: u32 = (0..3600 * 30u64)
            .map(|f| picker.pick(f * 1_000_000_000 / 30).tile_slots)
            .sum();
        assert_eq!((interval, tiles), (36_000, 100));
        let long = SpriteLayout::new(tiles, 160, 90);
        assert_eq!((long.columns, long.rows), (10, 10));
        assert_eq!((long.width(), long.height()), (1600, 900));
        assert_eq!(long.origin(99), (1440, 810));

        // 23 tiles: two full rows and a partial third.
        let partial = SpriteLayout::new(23, 160, 284);
        assert_eq!((partial.columns, partial.rows), (10, 3));
        assert_eq!(partial.origin(10), (0, 284));
        assert_eq!(partial.origin(22), (320, 568));
        // A single tile still makes a one-cell sheet.
        assert_eq!(SpriteLayout::new(1, 160, 90).width(), 160);
        assert_eq!(SpriteLayout::new(0, 160, 90).height(), 90);
    }

    #[test]
    fn vtt_cues_cover_the_video_with_media_fragments() {
        let layout = SpriteLayout::new(3, 160, 90);
        assert_eq!(
            storyboard_vtt("storyboard.jpg", &layout, 3, 2000, 5000),
            "WEBVTT\n\
             \n\
             00:00:00.000 --> 00:00:02.000\n\
             storyboard.jpg#xywh=0,0,160,90\n\
             \n\
             00:00:02.000 --> 00:00:04.000\n\
             storyboard.jpg#xywh=160,0,160,90\n\
             \n\
             00:00:04.000 --> 00:00:05.000\n\
             storyboard.jpg#xywh=320,0,160,90\n"
        );
    }

    #[test]
    fn vtt_wraps_rows_and_formats_hours() {
        let layout = SpriteLayout::new(12, 100, 50);
        let vtt = storyboard_vtt("s.jpg", &layout, 12, 36_000, 3_725_042);
        let cues: Vec<&str> = vtt.split("\n\n").collect();
        assert_eq!(cues.len(), 13);
        assert_eq!(cues[0], "WEBVTT");
        // cues[0] is the header: tile 10 opens the second row.
        assert_eq!(
            cues[11],
            "00:06:00.000 --> 00:06:36.000\ns.jpg#xywh=0,50,100,50"
        );
        assert_eq!(
            cues[12],
            "00:06:36.000 --> 01:02:05.042\ns.jpg#xywh=100,50,100,50\n"
        );
        // An end before the last start still yields a valid cue.
        let one = storyboard_vtt("s.jpg", &SpriteLayout::new(1, 2, 2), 1, 2000, 0);
        assert_eq!(
            one,
            "WEBVTT\n\n00:00:00.000 --> 00:00:00.001\ns.jpg#xywh=0,0,2,2\n"
        );
    }

    #[test]
    fn picker_keeps_one_frame_per_interval_and_the_poster() {
        // 5 s at 30 fps, 2 s interval, poster at 0.5 s.
        let mut picker = FramePicker::new(2000, 500, MAX_TILES);
        let picks: Vec<(u64, Pick)> = (0..150u64)
            .map(|f| (f, picker.pick(f * 1_000_000_000 / 30)))
            .filter(|(_, p)| *p != Pick::default())
            .collect();
        let p = |tile_slots, poster| Pick { tile_slots, poster };
        assert_eq!(
            picks,
            vec![
                (0, p(1, true)), // first frame: tile 0 and provisional poster
                (15, p(0, true)),
                (60, p(1, false)),
                (120, p(1, false)),
            ]
        );
        assert!(!picker.is_done());
    }

    #[test]
    fn picker_handles_short_clips_gaps_and_the_cap() {
        // Poster at 0: the first frame is final.
        let mut picker = FramePicker::new(2000, 0, 3);
        assert_eq!(
            picker.pick(0),
            Pick {
                tile_slots: 1,
                poster: true
            }
        );
        assert_eq!(picker.pick(33_000_000), Pick::default());
        // A frame 5 s later fills slots 1 and 2; the cap stops there.
        assert_eq!(
            picker.pick(5_000_000_000),
            Pick {
                tile_slots: 2,
                poster: false
            }
        );
        assert!(picker.is_done());
        assert_eq!(picker.pick(7_000_000_000), Pick::default());

        // Until the poster time the first frame is kept, in case the stream ends early.
        let mut early = FramePicker::new(2000, 10_000, MAX_TILES);
        assert!(early.pick(0).poster);
        assert!(!early.pick(9_000_000_000).poster);
        assert!(early.pick(10_000_000_000).poster);
        assert!(!early.pick(11_000_000_000).poster);

        // Times count from the first frame, not from running time zero.
        let mut late = FramePicker::new(2000, 500, MAX_TILES);
        let start = 1_400_000_000;
        assert_eq!(
            late.pick(start),
            Pick {
                tile_slots: 1,
                poster: true
            }
        );
        assert_eq!(
            late.pick(start + 1_000_000_000),
            Pick {
                tile_slots: 0,
                poster: true
            }
        );
        assert_eq!(late.pick(start + 1_999_999_999), Pick::default());
        assert_eq!(late.pick(start + 2_000_000_000).tile_slots, 1);
    }

    #[test]
    fn sprite_places_tiles_row_by_row() {
        let layout = SpriteLayout::new(3, 2, 2);
        // Grid 3 × 1 of 2 × 2 tiles: 6 pixels wide = 18 bytes, padded to a 20-byte stride.
        let tile = |v: u8| vec![v; 2 * 2 * 3];
        let sheet = compose_sprite(&layout, &[tile(1), tile(2), vec![9; 5]], 20);
        assert_eq!(sheet.len(), 40);
        let row = |r: usize| &sheet[r * 20..r * 20 + 20];
        let expect: Vec<u8> = [1u8; 6]
            .iter()
            .chain(&[2u8; 6])
            .chain(&[0u8; 8]) // the malformed third tile stays black, then the padding
            .copied()
            .collect();
        assert_eq!(row(0), expect.as_slice());
        assert_eq!(row(1), expect.as_slice());

        let two_rows = SpriteLayout::new(11, 1, 1);
        let tiles: Vec<Vec<u8>> = (0..11u8).map(|v| vec![v; 3]).collect();
        let sheet = compose_sprite(&two_rows, &tiles, 32);
        assert_eq!(sheet.len(), 64);
        assert_eq!(&sheet[27..30], &[9, 9, 9]);
        assert_eq!(&sheet[32..35], &[10, 10, 10]);
        assert_eq!(&sheet[35..38], &[0, 0, 0]);
    }
}
