//! Benchmarks for Sluice. `benches/` holds criterion micro-benchmarks of the hot paths;
//! peer comparisons (Sluice vs nginx, @tus/server, ffmpeg) are scripts under `scripts/`
//! that run both on the same work in one run and print ratios.
