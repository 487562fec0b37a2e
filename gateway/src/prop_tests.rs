//! Property tests of the gateway's parsers of untrusted input: tus headers, byte ranges,
//! playback and ingest paths, and the endpoint table. None may panic on any input; where
//! a writer exists, what it writes reads back.

use base64::Engine as _;
use http::Method;
use proptest::prelude::*;

use crate::endpoint::{Endpoint, Route};
use crate::paths;
use crate::playback::{RangeReq, parse_range};
use crate::tus;

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::HEAD),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::PATCH),
        Just(Method::DELETE),
        Just(Method::OPTIONS),
        "[A-Z]{1,10}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

/// Paths built from the route table's words, ids and hostile segments.
fn path() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        Just("v1".to_string()),
        Just("play".to_string()),
        Just("assets".to_string()),
        Just("uploads".to_string()),
        Just("live".to_string()),
        Just("ingest".to_string()),
        Just("jobs".to_string()),
        Just("edge".to_string()),
        Just("objects".to_string()),
        Just("..".to_string()),
        Just("%2e%2e".to_string()),
        Just(String::new()),
        "[A-Za-z0-9._%-]{1,30}",
        "\\PC{0,20}",
    ];
    prop::collection::vec(seg, 0..9).prop_map(|s| format!("/{}", s.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn tus_headers_never_panic(h in "\\PC{0,300}", key in "[!-~]{1,20}", value in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = tus::parse_metadata(&h);
        let _ = tus::parse_checksum(&h);
        let encoded = base64::engine::general_purpose::STANDARD.encode(&value);
        let _ = tus::parse_metadata(&format!("{key} {encoded},filename {encoded}"));
        let _ = tus::parse_checksum(&format!("sha1 {encoded}"));
    }

    #[test]
    fn an_encoded_filename_reads_back(name in "[^\\p{Cc}]{0,200}", other in "[a-z]{1,10}") {
        let b64 = base64::engine::general_purpose::STANDARD.encode(name.as_bytes());
        let header = format!("{other} {b64},filename {b64}");
        let m = tus::parse_metadata(&header).unwrap();
        prop_assert_eq!(m.header, header);
        let want: String = name.chars().take(255).collect();
        prop_assert_eq!(m.filename.as_deref(), Some(want.as_str()));
    }

    #[test]
    fn ranges_stay_inside_the_object(v in "\\PC{0,40}", a in any::<u64>(), b in any::<u64>(), size in any::<u64>()) {
        for value in [v, format!("bytes={a}-{b}"), format!("bytes=-{a}"), format!("bytes={a}-")] {
            match parse_range(Some(&value), size) {
                RangeReq::Partial(s, e) => prop_assert!(s < e && e <= size, "{value}: {s}..{e} of {size}"),
                RangeReq::Full | RangeReq::Unsatisfiable => {}
            }
        }
    }

    #[test]
    fn a_satisfiable_range_is_exact(size in 1u64..u64::MAX, a in any::<u64>(), len in any::<u64>()) {
        let start = a % size;
        let end = start.saturating_add(len);
        match parse_range(Some(&format!("bytes={start}-{end}")), size) {
            RangeReq::Partial(s, e) => {
                prop_assert_eq!(s, start);
                prop_assert_eq!(e, end.saturating_add(1).min(size));
            }
            _ => prop_assert!(false, "bytes={}-{} of {} refused", start, end, size),
        }
    }

    #[test]
    fn the_endpoint_table_never_panics_and_labels_are_fixed(m in method(), p in path(), raw in "\\PC{0,200}") {
        for path in [p.as_str(), raw.as_str()] {
            let e = Endpoint::parse(&m, path);
            prop_assert!(Route::ALL.contains(&e.route()));
            let _ = paths::parse_playback(path);
            let _ = paths::parse_ingest(path);
            let _ = paths::upload_id_of(path);
        }
    }

    #[test]
    fn a_playback_path_reads_back(
        tenant in "[A-Z0-9]{26}",
        asset in "[A-Z0-9]{26}",
        token in "[A-Za-z0-9_-]{1,20}\\.[0-9]{1,10}\\._\\.[A-Za-z0-9_-]{22}",
        entry in "[a-z0-9]{1,8}(/[a-z0-9_]{1,12}\\.(ts|m3u8))?",
    ) {
        let g = sluice_engine::PlaybackGrant { tenant, asset, token, entry, expires: 0, client: None };
        let written = paths::playback(&g);
        let p = paths::parse_playback(&written).unwrap();
        prop_assert_eq!((p.tenant, p.asset, p.token, p.entry), (g.tenant.as_str(), g.asset.as_str(), g.token.as_str(), g.entry.as_str()));
        match Endpoint::parse(&Method::GET, &written) {
            Endpoint::Play(q) => prop_assert_eq!(q, p),
            other => prop_assert!(false, "{:?}", other),
        }
    }
}
