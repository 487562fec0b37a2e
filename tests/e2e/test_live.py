"""Live HLS push with real encoders: ffmpeg `-f hls -method PUT` (TS and fMP4, with and
without persistent connections) and GStreamer's hlssink2 with PUT streams
(tools/hlssink2_push.py), played while live through the signed playback URL and as a VOD
asset after the stream ends; refused pushes show in the stream's state and metrics."""

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import Sluice, ffmpeg, ffprobe_json, raw_request, wait_for

CONFIG = """
[live]
stall_after_s = 2
idle_timeout_s = 12
sweep_interval_s = 1
max_segment_bytes = 2097152

[transcode]
ladder = [{name = "240p", height = 240, video_bitrate = 400000}]
"""


@pytest.fixture(scope="module")
def live_server(workdir):
    s = Sluice(workdir / "live-data", config_text=CONFIG)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def key(live_server):
    return live_server.tenant("live-tenant")["api_key"]


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def create_stream(srv, key, **body):
    r = requests.post(f"{srv.url}/v1/live", json=body, headers=auth(key), timeout=10)
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["ingest_url"].startswith(srv.url) and s["ingest_url"].endswith("/")
    assert s["state"] == "idle"
    return s


def stream_state(srv, key, sid):
    r = requests.get(f"{srv.url}/v1/live/{sid}", headers=auth(key), timeout=10)
    assert r.status_code == 200, r.text
    assert "ingest_url" not in r.json() and "ingest_path" not in r.json()
    return r.json()


def playback_url(srv, key, sid):
    r = requests.post(f"{srv.url}/v1/live/{sid}/playback", json={}, headers=auth(key), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["url"]


def media_entries(text):
    """(duration, uri) of each segment of a media playlist."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.startswith("#EXTINF:"):
            out.append((float(line[8:].split(",")[0]), lines[i + 1]))
    return out


def tag_value(text, tag):
    for line in text.splitlines():
        if line.startswith(tag + ":"):
            return line.split(":", 1)[1]
    return None


def push(ingest_url, seconds, extra=(), name="index.m3u8"):
    """ffmpeg encoding a test pattern in real time and pushing it as HLS over PUT."""
    args = [
        "ffmpeg", "-v", "error", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=426x240:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(seconds),
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-keyint_min", "25",
        "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
        "-f", "hls", "-hls_time", "1", "-hls_list_size", "4",
        "-hls_flags", "delete_segments", "-method", "PUT", *extra,
        ingest_url + name,
    ]
    return subprocess.Popen(args, stderr=subprocess.PIPE)


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize(
    "variant,extra",
    [
        ("ts", ()),
        ("fmp4-persistent", ("-hls_segment_type", "fmp4", "-http_persistent", "1")),
    ],
)
def test_ffmpeg_push_plays_live_then_as_vod(live_server, key, variant, extra):
    srv = live_server
    s = create_stream(srv, key, name=f"cam-{variant}")
    sid = s["id"]
    enc = push(s["ingest_url"], 9, extra)
    try:
        st = wait_for(
            lambda: (x := stream_state(srv, key, sid))["segments_received"] >= 3 and x,
            20,
            "three segments",
        )
        assert st["state"] == "receiving", st
        url = playback_url(srv, key, sid)
        assert "/live/index.m3u8" in url
        r = requests.get(url, timeout=10)  # no headers: a player's request
        assert r.status_code == 200
        # Fresh for half a target duration, then stale-while-revalidate for one more.
        td = int(tag_value(r.text, "#EXT-X-TARGETDURATION"))
        assert r.headers["cache-control"] == (
            f"public, max-age={td // 2}, stale-while-revalidate={td}"
        )
        assert r.headers["access-control-allow-origin"] == "*"
        assert "#EXT-X-ENDLIST" not in r.text
        entries = media_entries(r.text)
        assert entries, r.text
        if variant.startswith("fmp4"):
            assert '#EXT-X-MAP:URI="' in r.text
        # Every segment a live playlist names is already stored and immutable.
        base = url.rsplit("/", 1)[0]
        for _, uri in entries:
            seg = requests.get(f"{base}/{uri}", timeout=10)
            assert seg.status_code == 200, uri
            assert "immutable" in seg.headers["cache-control"]
        probe = ffprobe_json("-show_streams", url)
        kinds = sorted(st["codec_type"] for st in probe["streams"])
        assert kinds == ["audio", "video"], probe
    finally:
        _, err = enc.communicate(timeout=60)
    assert enc.returncode == 0, err.decode()

    # ffmpeg ends with #EXT-X-ENDLIST: the stream ends and becomes a VOD asset.
    ended = wait_for(
        lambda: (x := stream_state(srv, key, sid))["state"] == "ended" and x, 20, "stream end"
    )
    assert ended["end_reason"] == "endlist"
    assert ended["rejected_requests"] == 0, ended
    final = requests.get(url, timeout=10).text
    assert final.rstrip().endswith("#EXT-X-ENDLIST")
    total = sum(d for d, _ in media_entries(final))
    # The encoder's own window was 4 segments; the DVR window keeps all of them.
    assert 8.0 <= total <= 10.5, final
    asset = srv.wait_asset(key, s["asset_id"])
    assert asset["status"] == "ready", asset
    assert abs(asset["duration_s"] - total) < 1.0, (asset, total, final)
    r = requests.post(
        f"{srv.url}/v1/assets/{s['asset_id']}/playback", json={}, headers=auth(key), timeout=10
    )
    vod = ffprobe_json("-show_format", r.json()["url"])
    assert abs(float(vod["format"]["duration"]) - total) < 1.0


def push_two_variants(ingest_url, seconds):
    """ffmpeg pushing two fMP4 renditions and a master playlist (var_stream_map)."""
    args = [
        "ffmpeg", "-v", "error", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(seconds),
        "-filter_complex", "[0:v]split=2[hi][lo0];[lo0]scale=320:180[lo]",
        "-map", "[hi]", "-map", "[lo]", "-map", "1:a", "-map", "1:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-keyint_min", "25",
        "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-b:v:0", "900k", "-b:v:1", "250k",
        "-c:a", "aac", "-b:a", "64k",
        "-f", "hls", "-hls_time", "1", "-hls_list_size", "4",
        "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init_%v.mp4",
        "-master_pl_name", "master.m3u8", "-var_stream_map", "v:0,a:0 v:1,a:1",
        "-method", "PUT", ingest_url + "stream_%v.m3u8",
    ]
    return subprocess.Popen(args, stderr=subprocess.PIPE)


def master_variants(text):
    """(attributes, uri) of each variant of a master playlist."""
    lines = text.splitlines()
    return [
        (lines[i][len("#EXT-X-STREAM-INF:"):], lines[i + 1])
        for i in range(len(lines))
        if lines[i].startswith("#EXT-X-STREAM-INF:")
    ]


@pytest.mark.parametrize("variant", ["ts", "fmp4-two-renditions"])
def test_copy_vod_publishes_the_pushed_renditions(live_server, key, variant):
    """`vod: "copy"`: no transcode; the asset plays the encoder's own segments, byte for
    byte, with a master playlist that names their resolution and codecs."""
    srv = live_server
    s = create_stream(srv, key, name=f"copy-{variant}", vod="copy")
    assert s["vod"] == "copy"
    sid = s["id"]
    if variant == "ts":
        enc = push(s["ingest_url"], 6)
    else:
        enc = push_two_variants(s["ingest_url"], 6)
    _, err = enc.communicate(timeout=60)
    assert enc.returncode == 0, err.decode()
    ended = wait_for(
        lambda: (x := stream_state(srv, key, sid))["state"] == "ended" and x, 20, "stream end"
    )
    assert ended["rejected_requests"] == 0, ended
    live_url = playback_url(srv, key, sid)

    asset = srv.wait_asset(key, s["asset_id"], timeout=60)
    assert asset["status"] == "ready", asset
    job = requests.get(f"{srv.url}/v1/jobs/{asset['job_id']}", headers=auth(key), timeout=10)
    assert job.json()["kind"] == "live_copy", job.text
    expected = {"ts": [(426, 240)], "fmp4-two-renditions": [(640, 360), (320, 180)]}[variant]
    assert [(r["width"], r["height"]) for r in asset["renditions"]] == expected, asset
    for r in asset["renditions"]:
        assert r["codecs"].startswith("avc1.") and r["codecs"].endswith(",mp4a.40.2"), r
        assert r["bandwidth"] > 50_000, r

    r = requests.post(
        f"{srv.url}/v1/assets/{s['asset_id']}/playback", json={}, headers=auth(key), timeout=10
    )
    url = r.json()["url"]
    master = requests.get(url, timeout=10)
    assert master.status_code == 200
    variants = master_variants(master.text)
    assert len(variants) == len(expected), master.text
    base = url.rsplit("/", 1)[0]
    vod_total = None
    for attrs, uri in variants:
        # The contract: BANDWIDTH, RESOLUTION and CODECS on every variant.
        assert "BANDWIDTH=" in attrs and "RESOLUTION=" in attrs and 'CODECS="' in attrs, attrs
        media = requests.get(f"{base}/{uri}", timeout=10).text
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in media and media.rstrip().endswith("#EXT-X-ENDLIST")
        total = sum(d for d, _ in media_entries(media))
        assert 5.0 <= total <= 7.5, media
        vod_total = vod_total or total
        if variant != "ts":
            assert '#EXT-X-MAP:URI="' in media
    if variant == "ts":
        # Without a pushed master one is written from the probe.
        assert "RESOLUTION=426x240" in variants[0][0] and 'CODECS="avc1.' in variants[0][0]
        # The VOD segments are the pushed bytes: compare with what the live playlist served.
        live_media = requests.get(live_url, timeout=10).text
        live_base = live_url.rsplit("/", 1)[0]
        live_first = media_entries(live_media)[0][1]
        vod_media = requests.get(f"{base}/{variants[0][1]}", timeout=10).text
        vod_first = media_entries(vod_media)[0][1]
        vod_dir = f"{base}/{variants[0][1].rsplit('/', 1)[0]}"
        a = requests.get(f"{live_base}/{live_first}", timeout=10).content
        b = requests.get(f"{vod_dir}/{vod_first}", timeout=10).content
        assert len(a) > 1000 and a == b
    assert abs(asset["duration_s"] - vod_total) < 0.01, (asset, vod_total)
    probe = ffprobe_json("-show_format", "-show_streams", url)
    assert abs(float(probe["format"]["duration"]) - vod_total) < 1.0, probe["format"]
    assert sorted({st["codec_type"] for st in probe["streams"]}) == ["audio", "video"]
    # The renditions were not transcoded here: there is nothing to re-run.
    rerun = requests.post(
        f"{srv.url}/v1/assets/{s['asset_id']}/renditions/{asset['renditions'][0]['name']}/rerun",
        headers=auth(key),
        timeout=10,
    )
    assert rerun.status_code == 409, rerun.text


def test_vod_mode_is_validated(live_server, key):
    r = requests.post(
        f"{live_server.url}/v1/live", json={"vod": "keep"}, headers=auth(key), timeout=10
    )
    assert r.status_code == 400, r.text
    assert "transcode" in r.json()["error"]["message"]


# GStreamer's Python bindings come from the system (python3-gi, gir1.2-gstreamer-1.0, installed
# by scripts/setup.sh), not from the test venv.
SYSTEM_PYTHON = "/usr/bin/python3"
HLSSINK2_PUSH = Path(__file__).resolve().parent / "tools" / "hlssink2_push.py"


def require_gst_python():
    """Fail (never skip) when the system Python cannot drive GStreamer's hlssink2."""
    check = (
        "import gi; gi.require_version('Gst', '1.0'); from gi.repository import Gio, Gst; "
        "Gst.init(None); "
        "missing = [f for f in ('hlssink2', 'x264enc', 'videotestsrc', 'audiotestsrc') "
        "if not Gst.ElementFactory.find(f)]; "
        "assert not missing, missing; assert Gio.UnixOutputStream"
    )
    try:
        r = subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True, timeout=60)
    except FileNotFoundError:
        pytest.fail(f"{SYSTEM_PYTHON} is missing: the hlssink2 test needs the system Python")
    if r.returncode != 0:
        pytest.fail(
            "GStreamer's Python bindings or plugins are missing for the hlssink2 push test "
            "(scripts/setup.sh installs python3-gi, gir1.2-gstreamer-1.0, "
            f"gir1.2-gst-plugins-base-1.0): {r.stderr.decode()[-500:]}"
        )


def metric_value(srv, name, labels):
    """One sample of a Prometheus counter on the server (0 when not exported yet)."""
    text = requests.get(f"{srv.url}/metrics", timeout=10).text
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def watch_viewer_playlist(url, stop):
    """Poll a viewer playlist until `stop` is set; returns {position: first time seen}."""
    seen = {}

    def run():
        while not stop.is_set():
            try:
                r = requests.get(url, timeout=5)
            except requests.RequestException:
                continue
            now = time.time()
            if r.status_code == 200:
                first = int(tag_value(r.text, "#EXT-X-MEDIA-SEQUENCE") or 0)
                for i, _ in enumerate(media_entries(r.text)):
                    seen.setdefault(first + i, now)
            time.sleep(0.1)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return seen, th


@pytest.mark.parametrize("late_copies", [False, True], ids=["in-order", "late-playlist-copies"])
def test_hlssink2_push_plays_live_then_as_vod(live_server, key, tmp_path, late_copies):
    """GStreamer's hlssink2 writing through Gio output streams that PUT (and DELETE) under
    the ingest URL, as GStreamer applications push HLS over HTTP. With late copies, each
    playlist is followed by the previous version again (uploads overtaking each other)."""
    require_gst_python()
    srv = live_server
    s = create_stream(srv, key, name=f"gst-hlssink2-{'late' if late_copies else 'ordered'}")
    sid = s["id"]
    url = playback_url(srv, key, sid)
    deletes_before = metric_value(srv, "sluice_live_requests_total", '{kind="delete",result="ok"}')
    events = tmp_path / "hlssink2-events.jsonl"
    seconds = 10
    enc = subprocess.Popen(
        [SYSTEM_PYTHON, str(HLSSINK2_PUSH), s["ingest_url"], "--duration", str(seconds),
         "--target-duration", "1", "--max-files", "3", "--playlist-length", "3",
         "--events", str(events),
         *(["--late-playlist-copies"] if late_copies else ["--fail-on-http-error"])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    stop = threading.Event()
    seen, watcher = watch_viewer_playlist(url, stop)
    try:
        st = wait_for(
            lambda: (x := stream_state(srv, key, sid))["segments_received"] >= 3 and x,
            30,
            "three segments from hlssink2",
        )
        assert st["state"] == "receiving", st
        r = requests.get(url, timeout=10)
        assert r.status_code == 200 and "#EXT-X-ENDLIST" not in r.text, r.text
        entries = media_entries(r.text)
        assert len(entries) >= 2, r.text
        base = url.rsplit("/", 1)[0]
        for _, uri in entries:
            seg = requests.get(f"{base}/{uri}", timeout=10)
            assert seg.status_code == 200 and seg.content[0] == 0x47, uri
        probe = ffprobe_json("-show_streams", url)
        kinds = sorted(x["codec_type"] for x in probe["streams"])
        assert kinds == ["audio", "video"], probe
    finally:
        out, err = enc.communicate(timeout=90)
        encoder_done = time.time()
        time.sleep(1.0)  # one more look at the viewer playlist for the last segment
        stop.set()
        watcher.join(10)
    assert enc.returncode == 0, err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    log = [json.loads(line) for line in events.read_text().splitlines()]
    if late_copies:
        assert summary["late_copies"] == summary["playlists"] - 1, summary
        # Every late copy was accepted, but the one after the final playlist may find the
        # stream ended already (409).
        refused = [e for e in log if e["status"] not in (201, 204)]
        assert all(e["late_copy"] and e["status"] == 409 for e in refused), refused
        assert len(refused) <= 1, refused
    else:
        assert summary["http_errors"] == 0, (summary, err.decode())
    assert summary["segments"] >= seconds - 2, summary
    # max-files 3: hlssink2 asked to delete every segment but the last three.
    assert summary["deletes"] == summary["segments"] - 3, summary
    deletes = metric_value(srv, "sluice_live_requests_total", '{kind="delete",result="ok"}')
    assert deletes - deletes_before >= summary["deletes"], (deletes, deletes_before, summary)

    # Quickly available: a segment is in the viewer playlist right after both its bytes and
    # the playlist naming it are in (the polling here is every 0.1 s plus a request).
    puts = [e for e in log if e["method"] == "PUT" and not e["late_copy"]]
    seg_done = {int(e["name"][7:12]): e["done"] for e in puts if e["name"].startswith("segment")}
    playlist_done = [e["done"] for e in puts if e["name"] == "index.m3u8"]
    assert len(seg_done) == summary["segments"] and len(playlist_done) == summary["playlists"]
    delays = []
    for k, done in sorted(seg_done.items()):
        ready = max(done, playlist_done[k])  # the k-th playlist is the first naming segment k
        assert k in seen, (k, sorted(seen))
        delays.append(seen[k] - ready)
    # The lag itself is measured in benches/latency.py; here a bound that only a stuck
    # playlist misses.
    print(f"\nhlssink2: viewer playlist lag after the segment and its playlist were in: "
          f"max {max(delays):.2f}s, mean {sum(delays) / len(delays):.2f}s")
    assert max(delays) < 10.0, delays
    # Most were watchable well before the encoder finished (the last ones close at EOS).
    live_seen = [k for k in seen if seen[k] < encoder_done - 1.0]
    assert len(live_seen) >= summary["segments"] // 2, (seen, encoder_done)

    # hlssink2 ends with #EXT-X-ENDLIST (after EOS): the stream ends and becomes a VOD asset.
    ended = wait_for(
        lambda: (x := stream_state(srv, key, sid))["state"] == "ended" and x, 20, "stream end"
    )
    assert ended["end_reason"] == "endlist", ended
    assert ended["rejected_requests"] == 0, ended  # a request after the end is not recorded
    assert ended["segments_received"] == summary["segments"], (ended, summary)
    assert "#EXT-X-DISCONTINUITY" not in requests.get(url, timeout=10).text
    final = requests.get(url, timeout=10).text
    assert final.rstrip().endswith("#EXT-X-ENDLIST")
    finals = media_entries(final)
    assert len(finals) == summary["segments"], final  # the DELETEs removed nothing
    total = sum(d for d, _ in finals)
    assert seconds - 2.5 <= total <= seconds + 1.0, final
    asset = srv.wait_asset(key, s["asset_id"])
    assert asset["status"] == "ready", asset
    assert abs(asset["duration_s"] - total) < 1.0, (asset, total, final)
    r = requests.post(
        f"{srv.url}/v1/assets/{s['asset_id']}/playback", json={}, headers=auth(key), timeout=10
    )
    vod = ffprobe_json("-show_format", "-show_streams", r.json()["url"])
    assert abs(float(vod["format"]["duration"]) - total) < 1.0, vod["format"]
    assert sorted(x["codec_type"] for x in vod["streams"]) == ["audio", "video"]


@pytest.fixture(scope="module")
def segments(tmp_path_factory):
    """Real 1 s TS segments and their playlist, made by ffmpeg into a directory."""
    d = tmp_path_factory.mktemp("hls")
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-t", "6",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-sc_threshold", "0",
        "-pix_fmt", "yuv420p", "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
        str(d / "index.m3u8"),
    )
    segs = sorted(d.glob("index*.ts"), key=lambda p: int(p.stem[5:]))
    assert len(segs) == 6
    return [p.read_bytes() for p in segs]


def playlist(first, durations, end=False):
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:1", f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    for i, d in enumerate(durations):
        lines += [f"#EXTINF:{d:.3f},", f"index{first + i}.ts"]
    if end:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def test_playlist_before_segments_dvr_window_and_idle_end(live_server, key, segments):
    srv = live_server
    s = create_stream(srv, key, dvr_window_s=3)
    ing = s["ingest_url"]
    url = playback_url(srv, key, s["id"])

    def viewer():
        r = requests.get(url, timeout=10)
        assert r.status_code == 200
        return r.text

    # The playlist names two segments before either arrives: viewers see neither.
    assert requests.put(ing + "index.m3u8", data=playlist(0, [1, 1])).status_code == 201
    assert media_entries(viewer()) == []
    # The second arrives first: still nothing (order is kept), then both.
    assert requests.put(ing + "index1.ts", data=segments[1]).status_code == 201
    assert media_entries(viewer()) == []
    assert requests.put(ing + "index0.ts", data=segments[0]).status_code == 201
    text = viewer()
    assert len(media_entries(text)) == 2
    # Chunked bodies with no Content-Type, as ffmpeg sends them.
    for i in range(2, 6):
        body = iter([segments[i][:1000], segments[i][1000:]])
        assert requests.put(ing + f"index{i}.ts", data=body).status_code == 201
        r = requests.put(ing + "index.m3u8", data=playlist(max(0, i - 3), [1] * min(i + 1, 4)))
        assert r.status_code == 201
        # The encoder deletes what left its window: acknowledged, kept for the DVR.
        if i >= 4:
            d = requests.delete(ing + f"index{i - 4}.ts")
            assert d.status_code == 204
    text = viewer()
    entries = media_entries(text)
    # DVR window of 3 s: the last three 1 s segments, sequence advanced to match.
    assert len(entries) == 3, text
    assert tag_value(text, "#EXT-X-MEDIA-SEQUENCE") == "3"
    base = url.rsplit("/", 1)[0]
    assert requests.get(f"{base}/{entries[0][1]}", timeout=10).content == segments[3]

    # An encoder restart reuses names from 0: a new, discontinuous run; nothing already
    # served is overwritten.
    assert requests.put(ing + "index0.ts", data=segments[0]).status_code == 201
    assert requests.put(ing + "index.m3u8", data=playlist(0, [1])).status_code == 201
    text = viewer()
    assert "#EXT-X-DISCONTINUITY" in text
    entries = media_entries(text)
    assert requests.get(f"{base}/{entries[-1][1]}", timeout=10).content == segments[0]
    assert len({uri for _, uri in entries}) == len(entries)

    # No more requests: after the idle timeout the stream ends and is recorded in full.
    ended = wait_for(
        lambda: (x := stream_state(srv, key, s["id"]))["state"] == "ended" and x, 40, "idle end"
    )
    assert ended["end_reason"] == "idle"
    assert viewer().rstrip().endswith("#EXT-X-ENDLIST")
    src = requests.get(f"{srv.url}/v1/assets/{s['asset_id']}/source", headers=auth(key), timeout=30)
    assert src.status_code == 200
    assert src.content == b"".join(segments) + segments[0]
    asset = srv.wait_asset(key, s["asset_id"])
    assert asset["status"] == "ready", asset


def test_refused_pushes_are_visible(live_server, key, segments):
    srv = live_server
    s = create_stream(srv, key)
    ing = s["ingest_url"]
    sid = s["id"]

    r = requests.put(ing + "index.m3u8", data="#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:two,\na.ts\n")
    assert r.status_code == 400
    assert "line 3" in r.json()["error"]["message"]
    st = stream_state(srv, key, sid)
    assert st["state"] == "rejected"
    assert st["last_error"]["code"] == "invalid_request"
    assert "not a number" in st["last_error"]["message"]

    r = requests.put(ing + "index0.ts", data=b"<html>not video</html>" * 20)
    assert r.status_code == 415
    assert r.json()["error"]["code"] == "unsupported_media"
    r = requests.put(ing + "big.ts", data=segments[0] * (2_200_000 // len(segments[0]) + 1))
    assert r.status_code == 413
    # Dot segments and encoded slashes, sent as raw bytes (an HTTP library would
    # normalise them away before the server saw them).
    ing_path = "/" + ing.split("/", 3)[3]
    for name in ["../escape.ts", "%2e%2e/escape.ts", "..%2fescape.ts", "..%2Fx%2F..%2F..%2Fescape.ts",
                 "%2E%2E%2Fescape.ts"]:
        status, _ = raw_request(srv.url, "PUT", ing_path + name, body=segments[0])
        assert status in (400, 404), (name, status)
    r = requests.put(ing + "notes.txt", data=b"x")
    assert r.status_code == 400
    st = stream_state(srv, key, sid)
    assert st["state"] == "rejected"
    assert st["rejected_requests"] >= 4
    assert st["segments_received"] == 0

    # A good segment and playlist: receiving again.
    assert requests.put(ing + "index0.ts", data=segments[0]).status_code == 201
    assert requests.put(ing + "index.m3u8", data=playlist(0, [1])).status_code == 201
    assert stream_state(srv, key, sid)["state"] == "receiving"
    # Then silence: stalled before the idle timeout ends it.
    wait_for(lambda: stream_state(srv, key, sid)["state"] == "stalled", 10, "stalled")

    # A wrong ingest token reveals nothing and records nothing.
    bad = ing.replace("/ingest/", "/ingest/x")
    assert requests.put(bad + "index0.ts", data=segments[0]).status_code == 404
    # Another tenant cannot see the stream.
    other = srv.tenant("other")["api_key"]
    assert requests.get(f"{srv.url}/v1/live/{sid}", headers=auth(other), timeout=10).status_code == 404

    m = requests.get(f"{srv.url}/metrics", timeout=10).text
    assert 'sluice_live_requests_total{kind="segment",result="unsupported_media"}' in m
    assert 'sluice_live_requests_total{kind="playlist",result="invalid_request"}' in m

    # Ending it through the API; a push after the end is refused with a reason.
    r = requests.post(f"{srv.url}/v1/live/{sid}/end", headers=auth(key), timeout=30)
    assert r.status_code == 202 and r.json()["state"] in ("ending", "ended"), r.text
    wait_for(lambda: requests.get(f"{srv.url}/v1/live/{sid}", headers=auth(key), timeout=10)
             .json()["state"] == "ended", 60, "the ended stream")
    r = requests.put(ing + "index1.ts", data=segments[1])
    assert r.status_code == 409
