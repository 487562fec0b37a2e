//! Job handlers and the worker runtime. `media` holds the GStreamer side (probe, ladder,
//! transcode, playlists); `runtime` pulls jobs from the queue, runs them and publishes
//! their output.
pub mod media;
pub mod runtime;
pub mod webhooks;

pub use runtime::run;
