//! The endpoint table, exactly: every route, requests that reach no handler, and what each
//! route decides (label, deadline, credentials, class).

use super::*;

fn parse<'a>(method: &str, path: &'a str) -> Endpoint<'a> {
    Endpoint::parse(&Method::from_bytes(method.as_bytes()).unwrap(), path)
}

fn check(cases: &[(&str, &str, Endpoint<'_>, &str)]) {
    for (method, path, want, label) in cases {
        let got = parse(method, path);
        assert_eq!(got, *want, "{method} {path}");
        assert_eq!(got.route().label(), *label, "{method} {path}");
    }
}

#[test]
fn every_route() {
    use Endpoint as E;
    let tus = |op, target| E::Tus { op, target };
    let master = PlaybackPath {
        tenant: "T",
        asset: "A",
        token: "1700000000-sig",
        entry: "master.m3u8",
    };
    let segment = PlaybackPath {
        entry: "720p/seg_00001.ts",
        ..master
    };
    let ingest = |file| IngestPath {
        stream: "S",
        token: "k",
        file,
    };
    check(&[
        ("GET", "/healthz", E::Healthz, "healthz"),
        ("GET", "/readyz", E::Readyz, "readyz"),
        ("GET", "/metrics", E::Metrics, "metrics"),
        (
            "PATCH",
            "/v1/tenants/T",
            E::PatchTenant { id: "T" },
            "tenants",
        ),
        (
            "GET",
            "/v1/tenants/T",
            E::NotFound(Route::Tenants),
            "tenants",
        ),
        ("GET", "/v1/usage", E::GetUsage, "usage"),
        ("POST", "/v1/usage", E::NotFound(Route::Usage), "usage"),
        ("POST", "/v1/tenants", E::CreateTenant, "tenants"),
        (
            "POST",
            "/v1/uploads",
            tus(TusOp::Create, TusTarget::Collection),
            "tus_create",
        ),
        (
            "OPTIONS",
            "/v1/uploads",
            tus(TusOp::Other, TusTarget::Collection),
            "tus_other",
        ),
        (
            "HEAD",
            "/v1/uploads/U1",
            tus(TusOp::Head, TusTarget::Upload("U1")),
            "tus_head",
        ),
        (
            "PATCH",
            "/v1/uploads/U1",
            tus(TusOp::Patch, TusTarget::Upload("U1")),
            "tus_patch",
        ),
        (
            "DELETE",
            "/v1/uploads/U1",
            tus(TusOp::Other, TusTarget::Upload("U1")),
            "tus_other",
        ),
        // tus routes its own methods: these reach it (and its 405).
        (
            "GET",
            "/v1/uploads/U1",
            tus(TusOp::Other, TusTarget::Upload("U1")),
            "tus_other",
        ),
        (
            "POST",
            "/v1/uploads/U1",
            tus(TusOp::Create, TusTarget::Upload("U1")),
            "tus_create",
        ),
        (
            "PATCH",
            "/v1/uploads/U1/x",
            tus(TusOp::Patch, TusTarget::Deeper),
            "tus_patch",
        ),
        ("POST", "/v1/assets", E::RawUpload, "raw_upload"),
        ("GET", "/v1/assets/A", E::GetAsset { id: "A" }, "assets"),
        (
            "GET",
            "/v1/assets/A/source",
            E::GetSource { id: "A" },
            "asset_source",
        ),
        (
            "POST",
            "/v1/assets/A/playback",
            E::CreatePlayback { id: "A" },
            "asset_playback",
        ),
        (
            "POST",
            "/v1/assets/A/renditions/720p/rerun",
            E::RerunRendition {
                id: "A",
                name: "720p",
            },
            "assets",
        ),
        ("POST", "/v1/devices", E::CreateDevice, "devices"),
        ("GET", "/v1/devices", E::ListDevices, "devices"),
        ("GET", "/v1/devices/D", E::GetDevice { id: "D" }, "devices"),
        (
            "DELETE",
            "/v1/devices/D",
            E::DeleteDevice { id: "D" },
            "devices",
        ),
        (
            "POST",
            "/v1/devices/D/revoke",
            E::RevokeDevice { id: "D" },
            "devices",
        ),
        ("POST", "/v1/webhooks", E::CreateWebhook, "webhooks"),
        ("GET", "/v1/webhooks", E::ListWebhooks, "webhooks"),
        (
            "DELETE",
            "/v1/webhooks/W",
            E::DeleteWebhook { id: "W" },
            "webhooks",
        ),
        ("GET", "/v1/jobs", E::ListJobs, "jobs"),
        ("GET", "/v1/jobs/J", E::GetJob { id: "J" }, "jobs"),
        (
            "POST",
            "/v1/jobs/J/cancel",
            E::CancelJob { id: "J" },
            "jobs",
        ),
        ("POST", "/v1/jobs/J/retry", E::RetryJob { id: "J" }, "jobs"),
        ("POST", "/v1/live", E::CreateLive, "live"),
        ("GET", "/v1/live", E::ListLive, "live"),
        ("GET", "/v1/live/S", E::GetLive { id: "S" }, "live"),
        (
            "GET",
            "/v1/live/ingest",
            E::GetLive { id: "ingest" },
            "live",
        ),
        ("POST", "/v1/live/S/end", E::EndLive { id: "S" }, "live"),
        (
            "POST",
            "/v1/live/S/playback",
            E::LivePlayback { id: "S" },
            "live",
        ),
        (
            "PUT",
            "/v1/live/S/ingest/k/index.m3u8",
            E::LiveIngest(ingest("index.m3u8")),
            "live_ingest",
        ),
        (
            "POST",
            "/v1/live/S/ingest/k/seg/1.ts",
            E::LiveIngest(ingest("seg/1.ts")),
            "live_ingest",
        ),
        (
            "DELETE",
            "/v1/live/S/ingest/k/0.ts",
            E::LiveIngest(ingest("0.ts")),
            "live_ingest",
        ),
        // The ingest handler answers 405 to the other methods.
        (
            "GET",
            "/v1/live/S/ingest/k/0.ts",
            E::LiveIngest(ingest("0.ts")),
            "live_ingest",
        ),
        ("GET", "/v1/preset", E::GetPreset, "preset"),
        ("PUT", "/v1/preset", E::PutPreset, "preset"),
        ("DELETE", "/v1/preset", E::DeletePreset, "preset"),
        (
            "GET",
            "/v1/play/T/A/1700000000-sig/master.m3u8",
            E::Play(master),
            "play_playlist",
        ),
        (
            "HEAD",
            "/v1/play/T/A/1700000000-sig/master.m3u8",
            E::Play(master),
            "play_playlist",
        ),
        (
            "GET",
            "/v1/play/T/A/1700000000-sig/720p/seg_00001.ts",
            E::Play(segment),
            "play_segment",
        ),
        (
            "HEAD",
            "/v1/play/T/A/1700000000-sig/720p/seg_00001.ts",
            E::Play(segment),
            "play_segment",
        ),
        (
            "GET",
            "/v1/play/T/A/1700000000-sig/master.watch.html",
            E::WatchPage {
                path: PlaybackPath {
                    entry: "master.watch.html",
                    ..master
                },
                playlist_stem: "master",
            },
            "watch_page",
        ),
        (
            "HEAD",
            "/v1/play/T/A/1700000000-sig/live/index.watch.html",
            E::WatchPage {
                path: PlaybackPath {
                    entry: "live/index.watch.html",
                    ..master
                },
                playlist_stem: "live/index",
            },
            "watch_page",
        ),
        (
            "GET",
            "/v1/play/T/A/1700000000-sig/hls.0123456789ab.js",
            E::PlayerFile {
                path: PlaybackPath {
                    entry: "hls.0123456789ab.js",
                    ..master
                },
                name: "hls.0123456789ab.js",
            },
            "player_file",
        ),
    ]);
}

#[test]
fn slashes_are_read_as_before() {
    use Endpoint as E;
    check(&[
        ("GET", "/healthz/", E::Healthz, "healthz"),
        ("GET", "//v1/jobs//", E::ListJobs, "jobs"),
        // An empty segment is an id like any other (the engine finds nothing by it).
        ("POST", "/v1/jobs//cancel", E::CancelJob { id: "" }, "jobs"),
        ("GET", "/v1//jobs", E::NotFound(Route::Other), "other"),
        (
            "PATCH",
            "/v1/uploads//U1",
            E::Tus {
                op: TusOp::Patch,
                target: TusTarget::Deeper,
            },
            "tus_patch",
        ),
        (
            "POST",
            "/v1/uploads/",
            E::Tus {
                op: TusOp::Create,
                target: TusTarget::Collection,
            },
            "tus_create",
        ),
    ]);
}

#[test]
fn requests_no_handler_answers_keep_their_route() {
    use Endpoint as E;
    use Route as R;
    check(&[
        ("PUT", "/v1/jobs", E::NotFound(R::Jobs), "jobs"),
        ("GET", "/v1/jobs/J/cancel", E::NotFound(R::Jobs), "jobs"),
        ("POST", "/v1/jobs/J/other", E::NotFound(R::Jobs), "jobs"),
        ("HEAD", "/healthz", E::NotFound(R::Healthz), "healthz"),
        ("POST", "/readyz", E::NotFound(R::Readyz), "readyz"),
        ("POST", "/metrics", E::NotFound(R::Metrics), "metrics"),
        ("GET", "/v1/tenants", E::NotFound(R::Tenants), "tenants"),
        ("GET", "/v1/assets", E::NotFound(R::Assets), "assets"),
        ("PUT", "/v1/assets/A", E::NotFound(R::Assets), "assets"),
        (
            "POST",
            "/v1/assets/A/source",
            E::NotFound(R::AssetSource),
            "asset_source",
        ),
        (
            "GET",
            "/v1/assets/A/playback",
            E::NotFound(R::AssetPlayback),
            "asset_playback",
        ),
        (
            "GET",
            "/v1/assets/A/renditions/r/rerun",
            E::NotFound(R::Assets),
            "assets",
        ),
        (
            "GET",
            "/v1/devices/D/revoke",
            E::NotFound(R::Devices),
            "devices",
        ),
        (
            "PUT",
            "/v1/webhooks/W",
            E::NotFound(R::Webhooks),
            "webhooks",
        ),
        ("DELETE", "/v1/live/S", E::NotFound(R::Live), "live"),
        ("GET", "/v1/live/S/end", E::NotFound(R::Live), "live"),
        (
            "PUT",
            "/v1/live/S/ingest",
            E::NotFound(R::LiveIngest),
            "live_ingest",
        ),
        (
            "PUT",
            "/v1/live/S/ingest/k/",
            E::NotFound(R::LiveIngest),
            "live_ingest",
        ),
        ("PATCH", "/v1/preset", E::NotFound(R::Preset), "preset"),
        (
            "POST",
            "/v1/play/T/A/k/master.m3u8",
            E::NotFound(R::PlayPlaylist),
            "play_playlist",
        ),
        (
            "PUT",
            "/v1/play/T/A/k/0.ts",
            E::NotFound(R::PlaySegment),
            "play_segment",
        ),
        (
            "POST",
            "/v1/play/T/A/k/master.watch.html",
            E::NotFound(R::WatchPage),
            "watch_page",
        ),
        (
            "DELETE",
            "/v1/play/T/A/k/watch.0123456789ab.css",
            E::NotFound(R::PlayerFile),
            "player_file",
        ),
        (
            "GET",
            "/v1/play/T/A/k",
            E::NotFound(R::PlaySegment),
            "play_segment",
        ),
        (
            "GET",
            "/v1/play",
            E::NotFound(R::PlaySegment),
            "play_segment",
        ),
        (
            "GET",
            "/v1/play/x.m3u8",
            E::NotFound(R::PlayPlaylist),
            "play_playlist",
        ),
        // Paths Sluice does not know.
        ("GET", "/", E::NotFound(R::Other), "other"),
        ("GET", "/v1", E::NotFound(R::Other), "other"),
        ("GET", "/v2/jobs", E::NotFound(R::Other), "other"),
        ("GET", "/v1/playlists", E::NotFound(R::Other), "other"),
        ("GET", "/healthzz", E::NotFound(R::Other), "other"),
        ("POST", "/v1/tenants/x", E::NotFound(R::Tenants), "tenants"),
        ("GET", "/v1/preset/x", E::NotFound(R::Other), "other"),
        ("GET", "/v1/edge/verify", E::EdgeVerify, "edge_verify"),
        (
            "POST",
            "/v1/edge/verify",
            E::NotFound(R::EdgeVerify),
            "edge_verify",
        ),
        ("GET", "/v1/edge/admin", E::EdgeAdmin, "edge"),
        (
            "GET",
            "/v1/edge/objects/T/A/720p/seg_00001.ts",
            E::EdgeObject {
                tenant: "T",
                asset: "A",
                entry: "720p/seg_00001.ts",
            },
            "edge",
        ),
        (
            "HEAD",
            "/v1/edge/objects/T/A/master.m3u8",
            E::EdgeObject {
                tenant: "T",
                asset: "A",
                entry: "master.m3u8",
            },
            "edge",
        ),
        ("GET", "/v1/edge/objects/T/A", E::NotFound(R::Edge), "edge"),
        ("GET", "/v1/edge/objects/T/A/", E::NotFound(R::Edge), "edge"),
        (
            "DELETE",
            "/v1/edge/objects/T/A/x.ts",
            E::NotFound(R::Edge),
            "edge",
        ),
        ("GET", "/v1/edge", E::NotFound(R::Other), "other"),
    ]);
}

#[test]
fn labels_are_the_dashboards_names() {
    let labels: Vec<&str> = Route::ALL.iter().map(|r| r.label()).collect();
    assert_eq!(
        labels,
        [
            "healthz",
            "readyz",
            "metrics",
            "tenants",
            "tus_create",
            "tus_patch",
            "tus_head",
            "tus_other",
            "raw_upload",
            "asset_source",
            "asset_playback",
            "assets",
            "jobs",
            "webhooks",
            "devices",
            "live_ingest",
            "live",
            "preset",
            "play_playlist",
            "play_segment",
            "edge_verify",
            "edge",
            "watch_page",
            "player_file",
            "tiers",
            "usage",
            "lifecycle",
            "ops_lifecycle",
            "other",
            "keys",
            "audit",
            "admin_jwks",
            "ops",
        ]
    );
}

#[test]
fn what_each_route_decides() {
    use Credentials as C;
    use RouteClass as K;
    // (route, runs under the request deadline, credentials, class)
    let table = [
        (Route::Healthz, true, C::None, K::Ops),
        (Route::Readyz, true, C::None, K::Ops),
        (Route::Metrics, true, C::NoneButNoDevice, K::Ops),
        (Route::Tenants, true, C::Key, K::Admin),
        (Route::TusCreate, false, C::Uploader, K::Ingest),
        (Route::TusPatch, false, C::Uploader, K::Ingest),
        (Route::TusHead, true, C::Uploader, K::Ingest),
        (Route::TusOther, true, C::Uploader, K::Ingest),
        (Route::RawUpload, false, C::Uploader, K::Ingest),
        (Route::AssetSource, false, C::Key, K::Admin),
        (Route::AssetPlayback, true, C::Key, K::Admin),
        (Route::Assets, true, C::Key, K::Admin),
        (Route::Jobs, true, C::Key, K::Admin),
        (Route::Webhooks, true, C::Key, K::Admin),
        (Route::Devices, true, C::Key, K::Admin),
        (Route::LiveIngest, false, C::None, K::Ingest),
        (Route::Live, true, C::Key, K::Admin),
        (Route::Preset, true, C::Key, K::Admin),
        (Route::PlayPlaylist, true, C::None, K::Playback),
        (Route::PlaySegment, false, C::None, K::Playback),
        (Route::EdgeVerify, true, C::None, K::Playback),
        (Route::Edge, true, C::Key, K::Admin),
        (Route::WatchPage, true, C::None, K::Playback),
        (Route::PlayerFile, true, C::None, K::Playback),
        (Route::Tiers, true, C::Key, K::Admin),
        (Route::Usage, true, C::Key, K::Admin),
        (Route::Lifecycle, true, C::Key, K::Admin),
        (Route::OpsLifecycle, true, C::Key, K::Admin),
        (Route::Other, true, C::Key, K::Admin),
        (Route::Keys, true, C::Key, K::Admin),
        (Route::Audit, true, C::Key, K::Admin),
        (Route::AdminJwks, true, C::Key, K::Admin),
        (Route::Ops, true, C::Key, K::Admin),
    ];
    assert_eq!(table.map(|t| t.0), Route::ALL);
    for (route, deadline, credentials, class) in table {
        assert_eq!(route.has_deadline(), deadline, "{route:?}");
        assert_eq!(route.credentials(), credentials, "{route:?}");
        assert_eq!(route.class(), class, "{route:?}");
    }
    // A device key reaches the uploads and what needs no credentials; nothing else.
    let device: Vec<&str> = Route::ALL
        .iter()
        .filter(|r| r.credentials().device_may())
        .map(|r| r.label())
        .collect();
    assert_eq!(
        device,
        [
            "healthz",
            "readyz",
            "tus_create",
            "tus_patch",
            "tus_head",
            "tus_other",
            "raw_upload",
            "live_ingest",
            "play_playlist",
            "play_segment",
            "edge_verify",
            "watch_page",
            "player_file",
        ]
    );
}

#[test]
fn tier_and_lifecycle_routes() {
    use Endpoint as E;
    let p = |m: Method, path: &'static str| Endpoint::parse(&m, path);
    assert_eq!(
        p(Method::POST, "/v1/assets/A/tier"),
        E::AssetTier { id: "A" }
    );
    assert_eq!(
        p(Method::POST, "/v1/assets/A/restore"),
        E::AssetRestore { id: "A" }
    );
    assert_eq!(
        p(Method::PUT, "/v1/assets/A/tags"),
        E::AssetTags { id: "A" }
    );
    assert_eq!(
        p(Method::GET, "/v1/assets/A/lifecycle"),
        E::AssetLifecycle { id: "A" }
    );
    assert_eq!(
        p(Method::GET, "/v1/assets/A/tier"),
        E::NotFound(Route::Tiers)
    );
    assert_eq!(p(Method::GET, "/v1/usage"), E::GetUsage);
    assert_eq!(p(Method::POST, "/v1/usage"), E::NotFound(Route::Usage));
    assert_eq!(p(Method::GET, "/v1/lifecycle"), E::GetLifecycle);
    assert_eq!(p(Method::PUT, "/v1/lifecycle"), E::PutLifecycle);
    assert_eq!(
        p(Method::DELETE, "/v1/lifecycle"),
        E::NotFound(Route::Lifecycle)
    );
    assert_eq!(p(Method::POST, "/v1/ops/lifecycle/run"), E::RunLifecycle);
    assert_eq!(
        p(Method::GET, "/v1/ops/lifecycle/run"),
        E::NotFound(Route::OpsLifecycle)
    );
    assert_eq!(E::AssetRestore { id: "A" }.route(), Route::Tiers);
}

#[test]
fn ops_routes_parse_and_count_under_ops() {
    use http::Method;
    assert_eq!(
        Endpoint::parse(&Method::POST, "/v1/ops/migrations"),
        Endpoint::CreateMigration
    );
    assert_eq!(
        Endpoint::parse(&Method::GET, "/v1/ops/migrations"),
        Endpoint::NotFound(Route::Ops)
    );
    assert_eq!(
        Endpoint::parse(&Method::POST, "/v1/ops/unknown"),
        Endpoint::NotFound(Route::Ops)
    );
    assert_eq!(Endpoint::CreateMigration.route(), Route::Ops);
    assert_eq!(Route::Ops.credentials(), Credentials::Key);
}
