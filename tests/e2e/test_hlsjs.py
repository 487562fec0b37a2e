"""hls.js in headless Chromium (Playwright, Debian's chromium) plays what Sluice serves, from
a page on another origin (so CORS is exercised the way a player page needs it): a VOD
ladder with a forced switch between renditions, fMP4 segments, and a live stream while an
encoder pushes it. A real browser's MSE is stricter than ffprobe: a misdeclared CODECS, a
segment that does not start on a keyframe, or a timestamp gap after a switch stalls it."""

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest
import requests
from playwright.sync_api import sync_playwright

from conftest import Sluice, make_clip
from test_live import create_stream, playback_url, push, push_two_variants, stream_state, wait_for

JS = Path(__file__).parent / "js"
CHROMIUM = "/usr/bin/chromium"  # Debian's package, installed by scripts/setup.sh

CONFIG = """
[transcode]
ladder = [
  {name = "360p", height = 360, video_bitrate = 700000},
  {name = "180p", height = 180, video_bitrate = 200000},
]

[live]
stall_after_s = 2
idle_timeout_s = 4
sweep_interval_s = 1
"""

PAGE = """<!doctype html>
<html><body>
<video id="v" muted playsinline></video>
<script src="hls.min.js"></script>
<script>
window.result = {errors: [], levels: [], switched: [], frags: 0};
window.play = function (url) {
  const v = document.getElementById('v');
  const hls = new Hls({lowLatencyMode: false});
  hls.on(Hls.Events.ERROR, (e, d) => result.errors.push(
    `${d.type}:${d.details}${d.fatal ? ':fatal' : ''}`));
  hls.on(Hls.Events.MANIFEST_PARSED, (e, d) => {
    result.levels = d.levels.map(l => ({height: l.height, codecs: l.attrs.CODECS}));
    v.play();
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, (e, d) => result.switched.push(d.level));
  hls.on(Hls.Events.FRAG_BUFFERED, () => result.frags++);
  hls.loadSource(url);
  hls.attachMedia(v);
  window.hls = hls;
};
</script>
</body></html>
"""


@pytest.fixture(scope="module")
def page_origin(workdir):
    """The player page and hls.js, served from their own loopback origin."""
    root = workdir / "player"
    root.mkdir(exist_ok=True)
    (root / "index.html").write_text(PAGE)
    shutil.copy(JS / "node_modules" / "hls.js" / "dist" / "hls.min.js", root / "hls.min.js")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/index.html"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "chromium is missing: run scripts/setup.sh"
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def srv(workdir):
    s = Sluice(workdir / "hlsjs-data", config_text=CONFIG)
    yield s
    s.stop()


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def open_player(browser, page_origin, url):
    page = browser.new_page()
    page.goto(page_origin)
    page.evaluate("url => window.play(url)", url)
    return page


def played_until(page, seconds, timeout_s=30):
    page.wait_for_function(
        f"document.getElementById('v').currentTime > {seconds}", timeout=timeout_s * 1000
    )


def fatal(page):
    return [e for e in page.evaluate("result.errors") if e.endswith(":fatal")]


def ready_asset(srv, key, clip):
    asset_id = srv.tus_upload(key, clip)
    a = srv.wait_asset(key, asset_id)
    assert a["status"] == "ready", a
    r = requests.post(f"{srv.url}/v1/assets/{asset_id}/playback", json={}, headers=auth(key), timeout=10)
    assert r.status_code == 200, r.text
    return a, r.json()["url"]


def test_vod_ladder_plays_and_switches_renditions(srv, browser, page_origin, workdir):
    key = srv.tenant("hlsjs-vod")["api_key"]
    clip = make_clip(workdir / "hlsjs.mp4", seconds=10, size="640x360")
    a, url = ready_asset(srv, key, clip)
    page = open_player(browser, page_origin, url)
    try:
        played_until(page, 2.0)
        levels = page.evaluate("result.levels")
        assert sorted(l["height"] for l in levels) == [180, 360], levels
        assert all(l["codecs"].startswith("avc1.") for l in levels), levels
        # Force each rendition in turn: playback continues across the switches, which needs
        # segments that start on aligned keyframes.
        for level in range(len(levels)):
            page.evaluate(f"hls.currentLevel = {level}")
            t = page.evaluate("document.getElementById('v').currentTime")
            played_until(page, t + 1.5)
        assert set(page.evaluate("result.switched")) == set(range(len(levels)))
        w, h = page.evaluate("[document.getElementById('v').videoWidth, document.getElementById('v').videoHeight]")
        assert (w, h) in {(640, 360), (320, 180)}, (w, h)
        assert fatal(page) == [], page.evaluate("result.errors")
    finally:
        page.close()


def test_fmp4_segments_play(srv, browser, page_origin, workdir):
    key = srv.tenant("hlsjs-fmp4")["api_key"]
    r = requests.put(f"{srv.url}/v1/preset", json={"segment_format": "fmp4"}, headers=auth(key), timeout=10)
    assert r.status_code == 200, r.text
    clip = make_clip(workdir / "hlsjs-fmp4.mp4", seconds=6, size="640x360")
    _, url = ready_asset(srv, key, clip)
    page = open_player(browser, page_origin, url)
    try:
        played_until(page, 3.0)
        assert fatal(page) == [], page.evaluate("result.errors")
    finally:
        page.close()


def test_live_stream_plays_while_pushed(srv, browser, page_origin):
    key = srv.tenant("hlsjs-live")["api_key"]
    s = create_stream(srv, key, name="hlsjs-cam")
    enc = push(s["ingest_url"], 14)
    page = None
    try:
        wait_for(lambda: stream_state(srv, key, s["id"])["segments_received"] >= 3, 20, "segments")
        page = open_player(browser, page_origin, playback_url(srv, key, s["id"]))
        played_until(page, 3.0)
        assert fatal(page) == [], page.evaluate("result.errors")
        assert page.evaluate("hls.levels[0].details.live") is True
    finally:
        if page:
            page.close()
        enc.communicate(timeout=60)


def test_live_recording_published_as_pushed_plays(srv, browser, page_origin):
    """`vod: "copy"`: the encoder's two fMP4 renditions, published as they are, play and
    switch in a browser."""
    key = srv.tenant("hlsjs-copy")["api_key"]
    s = create_stream(srv, key, name="hlsjs-copy", vod="copy")
    enc = push_two_variants(s["ingest_url"], 6)
    _, err = enc.communicate(timeout=60)
    assert enc.returncode == 0, err.decode()
    wait_for(lambda: stream_state(srv, key, s["id"])["state"] == "ended", 20, "stream end")
    a = srv.wait_asset(key, s["asset_id"], timeout=60)
    assert a["status"] == "ready", a
    r = requests.post(f"{srv.url}/v1/assets/{a['id']}/playback", json={}, headers=auth(key), timeout=10)
    page = open_player(browser, page_origin, r.json()["url"])
    try:
        played_until(page, 1.5)
        assert sorted(l["height"] for l in page.evaluate("result.levels")) == [180, 360]
        page.evaluate("hls.currentLevel = 0")
        t = page.evaluate("document.getElementById('v').currentTime")
        played_until(page, t + 1.5)
        assert fatal(page) == [], page.evaluate("result.errors")
    finally:
        page.close()
