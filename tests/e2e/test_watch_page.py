"""The watch page (`watch_url`) in headless Chromium (Playwright, Debian's chromium): an
uploaded asset and a live stream play in it with hls.js, the quality menu switches
rendition, the poster and the storyboard load and the storyboard shows over the seek bar;
and the page plays the same through a caching nginx in front of Sluice that forwards paths
unchanged. Screenshots are kept as artifacts: in $SLUICE_TEST_ARTIFACTS if set, else in a
directory under pytest's temporary directory (its path is printed)."""

import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import sync_playwright

from conftest import Edge, Sluice, make_clip
from test_live import create_stream, push_two_variants, stream_state, wait_for

CHROMIUM = "/usr/bin/chromium"  # Debian's package, installed by scripts/setup.sh

# A small ladder and short clips keep this quick.
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


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = os.environ.get("SLUICE_TEST_ARTIFACTS")
    path = Path(d) if d else tmp_path_factory.mktemp("artifacts")
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nwatch page screenshots: {path}")
    return path


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "chromium is missing: run scripts/setup.sh"
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--autoplay-policy=no-user-gesture-required",
            ],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def srv(workdir):
    s = Sluice(workdir / "watch-data", config_text=CONFIG)
    yield s
    s.stop()


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def playback(srv, key, what, id_):
    r = requests.post(f"{srv.url}/v1/{what}/{id_}/playback", json={}, headers=auth(key), timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    # The page sits under the same signed prefix as the playlist it plays.
    prefix = body["url"].rsplit("/", 1)[0] + "/"
    assert body["watch_url"].startswith(prefix), body
    assert body["watch_url"].endswith(".watch.html"), body
    return body


class Watch:
    """One open watch page, with what the browser reported while it ran."""

    def __init__(self, browser, url):
        self.page = browser.new_page(viewport={"width": 960, "height": 600})
        self.responses = []
        self.console = []
        self.page.on("response", lambda r: self.responses.append((r.url, r.status, r.headers)))
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.main = self.page.goto(url)

    def js(self, expr, arg=None):
        return self.page.evaluate(expr, arg)

    def wait(self, expr, timeout_s=30, arg=None):
        # Polled from here: Playwright's wait_for_function evaluates a string predicate
        # with eval(), which the page's Content-Security-Policy rightly refuses.
        deadline = time.time() + timeout_s
        while not self.js(expr, arg):
            if time.time() > deadline:
                raise AssertionError(f"timed out waiting for {expr} ({self.state()})")
            self.page.wait_for_timeout(100)

    def state(self):
        return self.js(
            "() => ({t: document.getElementById('video').currentTime,"
            " errors: window.sluicePlayer && sluicePlayer.errors,"
            " track: document.querySelector('track') && [document.querySelector('track').readyState,"
            " document.querySelector('track').track.mode,"
            " (document.querySelector('track').track.cues || []).length]})"
        ) | {"vtt": [(s, h.get("content-type")) for _, s, h in self.fetched(".vtt")]}

    def fetched(self, suffix):
        return [(u, s, h) for u, s, h in self.responses if urlsplit(u).path.endswith(suffix)]

    def close(self):
        self.page.close()


def check_page_and_player(w):
    """The page is HTML with its CSP, and what plays is hls.js on Media Source Extensions
    (Chromium would also play the m3u8 itself)."""
    assert w.main.status == 200
    headers = w.main.headers
    assert headers["content-type"].startswith("text/html"), headers
    assert "script-src 'self'" in headers["content-security-policy"], headers
    assert w.js("Hls.isSupported()") is True
    w.wait("window.sluicePlayer && sluicePlayer.hls && sluicePlayer.hls.levels.length > 0")
    assert w.js("sluicePlayer.hls.media === document.getElementById('video')")
    assert w.js("document.getElementById('video').src").startswith("blob:")
    # The player's files came from the page's own prefix, cacheable for good.
    hls_js = [r for r in w.responses if "/hls." in urlsplit(r[0]).path and r[0].endswith(".js")]
    assert hls_js and hls_js[0][1] == 200, w.responses
    assert "immutable" in hls_js[0][2]["cache-control"], hls_js[0][2]


def plays_for(w, seconds, timeout_s=40):
    """Playback time advances by `seconds` from where it is once playing (a live stream
    starts late in its timeline), with frames decoded."""
    w.wait("document.getElementById('video').currentTime > 0", timeout_s)
    t0 = w.js("document.getElementById('video').currentTime")
    w.wait(f"document.getElementById('video').currentTime > {t0 + seconds}", timeout_s)
    frames = w.js("document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames")
    assert frames > 0, frames


def switches_rendition(w):
    """Choosing a rendition in the quality menu makes hls.js switch to it."""
    labels = w.js("Array.from(document.querySelectorAll('#quality option'), o => o.textContent)")
    assert labels[0].startswith("Auto") and sorted(labels[1:]) == ["180p", "360p"], labels
    playing = w.js("sluicePlayer.hls.currentLevel")
    target = w.js(
        "cur => sluicePlayer.hls.levels.findIndex((l, i) => i !== cur)", playing
    )
    w.js("sluicePlayer.levelSwitches = []")
    w.page.select_option("#quality", str(target))
    w.wait("t => sluicePlayer.levelSwitches.includes(t)", arg=target)
    assert w.js("sluicePlayer.hls.currentLevel") == target
    assert w.js("sluicePlayer.hls.autoLevelEnabled") is False
    height = w.js("t => sluicePlayer.hls.levels[t].height", target)
    w.wait(f"document.getElementById('video').videoHeight === {height}", 20)
    t = w.js("document.getElementById('video').currentTime")
    w.wait(f"document.getElementById('video').currentTime > {t + 1}", 20)


def no_trouble(w):
    fatal = [e for e in w.js("sluicePlayer.errors") if e.endswith(":fatal")]
    assert fatal == [], w.js("sluicePlayer.errors")
    csp = [m for m in w.console if "Content Security Policy" in m or "pageerror" in m]
    assert csp == [], w.console


def screenshot(w, artifacts, name):
    path = artifacts / name
    w.page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    assert path.stat().st_size > 0


def storyboard_on_seek_bar(w):
    """The storyboard track loads, and hovering the seek bar shows its tile of the sprite."""
    w.wait("document.querySelector('track').readyState === 2 && sluicePlayer.storyboard.length > 0")
    box = w.page.locator("#seek").bounding_box()
    w.page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2)
    w.wait("!document.getElementById('preview').hidden")
    w.wait("document.getElementById('preview-image').style.backgroundImage.includes('storyboard.jpg')")
    deadline = time.time() + 10
    while not any(s == 200 for _, s, _ in w.fetched("/storyboard.jpg")) and time.time() < deadline:
        w.page.wait_for_timeout(100)
    assert any(s == 200 for _, s, _ in w.fetched("/storyboard.jpg")), w.responses


def poster_loads(w):
    size = w.js(
        """async () => {
            const i = new Image();
            i.src = document.getElementById('video').poster;
            await i.decode();
            return [i.naturalWidth, i.naturalHeight];
        }"""
    )
    assert size[0] > 0 and size[1] > 0, size
    assert w.js("document.getElementById('video').poster").endswith("/poster.jpg")


def ready_asset(srv, key, workdir, name):
    clip = make_clip(workdir / f"{name}.mp4", seconds=8, size="640x360")
    asset_id = srv.tus_upload(key, clip)
    a = srv.wait_asset(key, asset_id)
    assert a["status"] == "ready", a
    return asset_id


def test_watch_page_plays_an_asset(srv, browser, artifacts, workdir):
    key = srv.tenant("watch-vod")["api_key"]
    asset_id = ready_asset(srv, key, workdir, "watch-vod")
    url = playback(srv, key, "assets", asset_id)["watch_url"]
    w = Watch(browser, url)
    try:
        check_page_and_player(w)
        plays_for(w, 3.0)
        poster_loads(w)
        switches_rendition(w)
        storyboard_on_seek_bar(w)
        screenshot(w, artifacts, "watch-asset.png")
        no_trouble(w)
    finally:
        w.close()


def test_watch_page_plays_a_live_stream(srv, browser, artifacts):
    key = srv.tenant("watch-live")["api_key"]
    s = create_stream(srv, key, name="watch-cam")
    enc = push_two_variants(s["ingest_url"], 24)
    w = None
    try:
        wait_for(lambda: stream_state(srv, key, s["id"])["segments_received"] >= 6, 30, "segments")
        url = playback(srv, key, "live", s["id"])["watch_url"]
        assert url.endswith("/live/master.watch.html"), url
        w = Watch(browser, url)
        check_page_and_player(w)
        plays_for(w, 3.0)
        assert w.js("sluicePlayer.hls.latestLevelDetails.live") is True
        switches_rendition(w)
        # A live stream has no poster or storyboard yet: the page asks for none.
        assert w.js("document.getElementById('video').poster") == ""
        assert w.js("document.querySelector('track')") is None
        screenshot(w, artifacts, "watch-live.png")
        no_trouble(w)
    finally:
        if w:
            w.close()
        enc.communicate(timeout=60)


@pytest.fixture
def edge(srv):
    """The caching edge `sluice edge nginx` writes, in front of Sluice."""
    e = Edge(srv.url)
    yield e.url
    e.stop()


def test_watch_page_plays_through_a_caching_edge(srv, browser, artifacts, workdir, edge):
    key = srv.tenant("watch-edge")["api_key"]
    asset_id = ready_asset(srv, key, workdir, "watch-edge")
    origin_url = playback(srv, key, "assets", asset_id)["watch_url"]
    parts = urlsplit(origin_url)
    url = edge + parts.path
    for attempt in ("MISS", "HIT"):
        w = Watch(browser, url)
        try:
            check_page_and_player(w)
            plays_for(w, 2.0)
            # Everything the page loaded came through the edge, hls.js included (`blob:`
            # URLs are hls.js's worker and the Media Source, made in the page).
            loaded = [u for u, _, _ in w.responses if not u.startswith("blob:")]
            assert loaded and all(u.startswith(edge + "/") for u in loaded), loaded
            hls_js = [h for u, _, h in w.responses if "/hls." in u and u.endswith(".js")]
            assert hls_js[0].get("x-cache-status") == attempt, hls_js[0]
            no_trouble(w)
            if attempt == "HIT":
                screenshot(w, artifacts, "watch-edge.png")
        finally:
            w.close()
