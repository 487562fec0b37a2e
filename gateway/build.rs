//! Embeds the watch page's player files into the gateway.
//!
//! hls.js is an npm dependency (`web/package.json`, pinned in `web/package-lock.json`),
//! installed by `scripts/setup.sh` into `web/node_modules`; it is never copied into the
//! repository. `SLUICE_HLS_JS` may name another `hls.min.js` (a packager's own copy).
//!
//! Each file is served under a name carrying a hash of its bytes, so a browser or an edge
//! may cache it forever: a new build that changes a file changes its name. The names are
//! handed to the crate as `SLUICE_WATCH_*_NAME`, the files' paths as `SLUICE_WATCH_*_PATH`.

use std::path::{Path, PathBuf};

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-env-changed=SLUICE_HLS_JS");
    let hls = match std::env::var_os("SLUICE_HLS_JS") {
        Some(p) => PathBuf::from(p),
        None => dir.join("web/node_modules/hls.js/dist/hls.min.js"),
    };
    if !hls.is_file() {
        // Watching the lock stamp too: `npm ci` creates the file, and cargo then rebuilds.
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("web/package-lock.json").display()
        );
        println!("cargo:rerun-if-changed={}", hls.display());
        println!(
            "cargo::error=the watch page's player library is missing ({}): run scripts/setup.sh, \
             which installs hls.js from gateway/web/package-lock.json with npm (or run \
             `npm ci` in gateway/web, or set SLUICE_HLS_JS to an hls.min.js)",
            hls.display()
        );
        return;
    }
    embed("HLS", &hls, "hls", "js");
    embed("JS", &dir.join("web/watch.js"), "watch", "js");
    embed("CSS", &dir.join("web/watch.css"), "watch", "css");
    let page = dir.join("web/watch.html");
    println!("cargo:rerun-if-changed={}", page.display());
    println!("cargo:rustc-env=SLUICE_WATCH_PAGE_PATH={}", page.display());
}

/// Hand one file to the crate: its path and its content-hashed name (`stem.HASH.ext`).
fn embed(var: &str, path: &Path, stem: &str, ext: &str) {
    println!("cargo:rerun-if-changed={}", path.display());
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    println!("cargo:rustc-env=SLUICE_WATCH_{var}_PATH={}", path.display());
    println!(
        "cargo:rustc-env=SLUICE_WATCH_{var}_NAME={stem}.{:012x}.{ext}",
        fnv1a(&bytes) >> 16
    );
}

/// FNV-1a, 64 bits: a cache-busting fingerprint, not a security measure.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
