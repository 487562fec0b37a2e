//! The per-request work of a segment request before any I/O: verify the playback token and
//! build the object key. It runs for every segment a viewer fetches, so it must stay in
//! the low microseconds.

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_cdn::{PlaybackKey, PlaybackSigner};
use sluice_storage::keys;
use std::hint::black_box;

fn playback_path(c: &mut Criterion) {
    let key = PlaybackKey::new("k1", b"0123456789abcdef0123456789abcdef".to_vec()).unwrap();
    let signer = PlaybackSigner::new(key);
    let resource = "01JTENANT000000000000000000/01JASSET0000000000000000000";
    let token = signer.sign(resource, 4_000_000_000, None);
    c.bench_function("token_verify", |b| {
        b.iter(|| signer.verify(black_box(resource), black_box(&token), 1_700_000_000, None))
    });
    c.bench_function("token_sign", |b| {
        b.iter(|| signer.sign(black_box(resource), black_box(4_000_000_000), None))
    });
    c.bench_function("segment_key", |b| {
        b.iter(|| {
            keys::hls_object(
                black_box("01JTENANT000000000000000000"),
                black_box("01JASSET0000000000000000000"),
                black_box("720p/seg_00042.ts"),
            )
        })
    });
}

criterion_group!(benches, playback_path);
criterion_main!(benches);
