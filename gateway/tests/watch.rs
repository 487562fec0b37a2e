//! The watch page and the player's files, served by the gateway's handlers against a real
//! engine (SQLite and a local hot tier in a temporary directory): content types, the
//! Content-Security-Policy, cache policies, and the token check shared with every playback
//! file.

use std::sync::Arc;

use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use sluice_cdn::CachePolicy;
use sluice_engine::{Config, Engine, PlaybackGrant, Principal};
use sluice_gateway::paths::{self, PlayEntry};
use sluice_gateway::{App, playback, watch};

struct Fixture {
    app: Arc<App>,
    /// A live stream's grant: `live/index.m3u8` until an encoder pushes a playlist.
    grant: PlaybackGrant,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let (engine, _) = Engine::open(config, Some("watch-test-admin-key".into()))
        .await
        .unwrap();
    let tenant = engine
        .create_tenant(&Principal::Admin, "watch")
        .await
        .unwrap();
    let who = engine.authenticate(&tenant.api_key).await.unwrap();
    let stream = engine
        .create_live(&who, Some("cam"), None, None)
        .await
        .unwrap();
    let grant = engine
        .live_playback_grant(&who, &stream.id, Default::default())
        .await
        .unwrap();
    let app = Arc::new(App::new(
        engine.clone(),
        engine.storage().clone(),
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle(),
    ));
    Fixture {
        app,
        grant,
        _dir: dir,
    }
}

fn get(path: &str) -> Request<()> {
    Request::builder().uri(path).body(()).unwrap()
}

async fn text(res: http::Response<sluice_gateway::body::Body>) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Serve a watch page or player file path as the router would.
fn serve(app: &App, req: &Request<()>) -> sluice_gateway::ApiResult {
    let path = req.uri().path();
    let p = paths::parse_playback(path).expect("a playback path");
    match paths::play_entry(p.entry) {
        PlayEntry::WatchPage { playlist_stem } => watch::serve_page(app, &p, playlist_stem, req),
        PlayEntry::PlayerFile(name) => watch::serve_file(app, &p, name, req),
        PlayEntry::Object => panic!("{path} is an object"),
    }
}

fn header(res: &http::Response<sluice_gateway::body::Body>, name: header::HeaderName) -> &str {
    res.headers()
        .get(&name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn live_page_is_html_with_a_strict_policy_and_relative_urls() {
    let f = fixture().await;
    let url = paths::watch(&f.grant);
    assert!(url.ends_with("/live/index.watch.html"), "{url}");
    let res = serve(&f.app, &get(&url)).unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(&res, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        CachePolicy::WatchPage.header_value()
    );
    let csp = header(&res, header::CONTENT_SECURITY_POLICY);
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(&res, header::REFERRER_POLICY), "no-referrer");
    let page = text(res).await;
    // The playlist beside the page; the player's files at the root of the prefix, one
    // level up; a live stream has no poster or storyboard yet.
    assert!(page.contains(r#"data-src="index.m3u8""#), "{page}");
    for file in [&watch::HLS_JS, &watch::WATCH_JS, &watch::WATCH_CSS] {
        assert!(page.contains(&format!(r#""../{}""#, file.name)), "{page}");
    }
    assert!(!page.contains("poster"), "{page}");
    assert!(!page.contains("<track"), "{page}");
    // No inline script or style: everything the page runs comes from a file.
    assert!(!page.contains("<script>") && !page.contains("<style") && !page.contains(" style="));
    assert!(!page.contains("{{"), "an unfilled placeholder: {page}");
}

#[tokio::test]
async fn vod_page_shows_poster_and_storyboard() {
    let f = fixture().await;
    let vod = PlaybackGrant {
        entry: "master.m3u8".into(),
        ..f.grant.clone()
    };
    let url = paths::watch(&vod);
    assert!(url.ends_with("/master.watch.html"), "{url}");
    let res = serve(&f.app, &get(&url)).unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let page = text(res).await;
    assert!(page.contains(r#"data-src="master.m3u8""#), "{page}");
    assert!(page.contains(r#" poster="poster.jpg""#), "{page}");
    assert!(
        page.contains(r#"<track kind="metadata" label="storyboard" src="storyboard.vtt" default>"#),
        "{page}"
    );
    assert!(
        page.contains(&format!(r#"src="{}""#, watch::HLS_JS.name)),
        "{page}"
    );

    // HEAD: the headers, no body.
    let head = Request::builder()
        .method(Method::HEAD)
        .uri(&url)
        .body(())
        .unwrap();
    let res = serve(&f.app, &head).unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        header(&res, header::CONTENT_LENGTH)
            .parse::<usize>()
            .unwrap()
            > 0
    );
    assert_eq!(text(res).await, "");
}

#[tokio::test]
async fn player_files_are_immutable_and_revalidate() {
    let f = fixture().await;
    let root = paths::playback(&PlaybackGrant {
        entry: String::new(),
        ..f.grant.clone()
    });
    let hls = format!("{root}{}", watch::HLS_JS.name);
    let res = serve(&f.app, &get(&hls)).unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(&res, header::CONTENT_TYPE),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    let etag = header(&res, header::ETAG).to_string();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), watch::HLS_JS.bytes.len());
    assert!(body.len() > 100_000, "hls.min.js is {} bytes", body.len());

    let css = serve(&f.app, &get(&format!("{root}{}", watch::WATCH_CSS.name))).unwrap();
    assert_eq!(
        header(&css, header::CONTENT_TYPE),
        "text/css; charset=utf-8"
    );

    let again = Request::builder()
        .uri(&hls)
        .header(header::IF_NONE_MATCH, &etag)
        .body(())
        .unwrap();
    assert_eq!(
        serve(&f.app, &again).unwrap().status(),
        StatusCode::NOT_MODIFIED
    );

    // A name from another build (or none at all) is not served.
    let err = serve(&f.app, &get(&format!("{root}hls.000000000000.js"))).unwrap_err();
    assert_eq!(err.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_bad_token_is_refused_like_for_every_playback_file() {
    let f = fixture().await;
    let tampered = PlaybackGrant {
        token: format!("{}x", f.grant.token),
        ..f.grant.clone()
    };
    // What a playlist request with this token gets…
    let object = paths::playback(&tampered);
    let p = paths::parse_playback(&object).unwrap();
    let want = playback::serve(&f.app, p.tenant, p.asset, p.token, p.entry, &get(&object))
        .await
        .unwrap_err()
        .status;
    assert!(
        want == StatusCode::FORBIDDEN || want == StatusCode::NOT_FOUND,
        "{want}"
    );
    // …the page and the player's files get too.
    let root = paths::playback(&PlaybackGrant {
        entry: String::new(),
        ..tampered.clone()
    });
    for path in [
        paths::watch(&tampered),
        format!("{root}{}", watch::HLS_JS.name),
        format!("{root}{}", watch::WATCH_JS.name),
    ] {
        let err = serve(&f.app, &get(&path)).unwrap_err();
        assert_eq!(err.status, want, "{path}");
    }
    // Another asset's token does not open this one's page either.
    let other = PlaybackGrant {
        asset: "01OTHERASSET".into(),
        ..f.grant.clone()
    };
    let err = serve(&f.app, &get(&paths::watch(&other))).unwrap_err();
    assert_eq!(err.status, want);
}
