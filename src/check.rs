//! `sluice serve --check`: what a valid configuration resolves to, printed without opening
//! anything (no database, store or port) and without a secret.

use std::fmt::Write as _;
use std::path::Path;

use sluice_engine::Config;

/// A short, secret-free summary of a configuration that loaded and validated.
pub fn summary(file: Option<&Path>, config: &Config) -> String {
    let mut out = String::new();
    let source = match file {
        Some(p) => p.display().to_string(),
        None => "the embedded default (no --config)".to_string(),
    };
    let _ = writeln!(out, "config OK: {source}");
    let _ = writeln!(out, "  listen: {}", config.addr);
    let database = match &config.database_url {
        Some(_) => "postgresql",
        None => "sqlite (in the data dir)",
    };
    let _ = writeln!(out, "  database: {database}");
    let hot = match (
        &config.storage.s3,
        config.storage.stores.contains_key("hot"),
    ) {
        (Some(s3), _) => format!("[storage.s3] bucket {}", s3.bucket),
        (None, true) => "[storage.stores.hot]".to_string(),
        (None, false) => "local directory".to_string(),
    };
    let _ = writeln!(out, "  hot store: {hot}");
    let stores: Vec<&str> = config.storage.stores.keys().map(String::as_str).collect();
    let _ = writeln!(out, "  named stores: {}", list(&stores));
    let t = &config.storage.tiers;
    let _ = writeln!(
        out,
        "  tiers: hot={} warm={} cold={}",
        t.hot.as_deref().unwrap_or("hot"),
        t.warm.as_deref().unwrap_or("-"),
        t.cold.as_deref().unwrap_or("-")
    );
    let backend = serde_json::to_value(config.rate_limit.backend)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let _ = writeln!(out, "  rate limit backend: {backend}");
    let _ = writeln!(
        out,
        "  jwt: {}",
        if config.auth.jwt.is_some() {
            "on"
        } else {
            "off"
        }
    );
    let _ = writeln!(
        out,
        "  cloudfront signing: {}",
        if config.cdn.cloudfront.is_some() {
            "on"
        } else {
            "off"
        }
    );
    out
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "-".to_string()
    } else {
        names.join(", ")
    }
}
