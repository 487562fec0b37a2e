"""What players and CDNs rely on from the playback path, checked on the wire: content
types, the cache policy of each kind, strong ETags per representation, Last-Modified,
conditional requests, ranges, HEAD, gzip and brotli playlists, and the playback cache
(a burst of requests for one new segment reads the store once)."""

import re
import subprocess
import threading

import pytest
import requests

from conftest import Sluice

# A long cache lifetime, so that the burst below is answered from one read however long
# a loaded machine takes to send it (the default second would let a slow burst re-read).
CONFIG = """
[gateway]
cache_ttl_ms = 600000

[transcode]
ladder = [
  {name = "180p", height = 180, video_bitrate = 200000},
]
"""


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    d = tmp_path_factory.mktemp("delivery")
    srv = Sluice(d / "data", CONFIG)
    try:
        key, asset_id = srv.ready_asset(d, "delivery")
        url = requests.post(
            f"{srv.url}/v1/assets/{asset_id}/playback",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        ).json()["url"]
        yield srv, url.rsplit("/", 1)[0]
    finally:
        srv.stop()


def reads(srv):
    text = requests.get(f"{srv.url}/metrics", timeout=10).text
    m = re.search(r'^sluice_storage_reads_total\{tier="hot"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_headers_by_kind(played):
    _srv, base = played
    master = requests.get(f"{base}/master.m3u8", timeout=10)
    assert master.status_code == 200
    assert master.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert master.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert master.headers["vary"] == "Accept-Encoding"
    assert master.headers["access-control-allow-origin"] == "*"
    assert re.fullmatch(r'"[^"]+"', master.headers["etag"]), master.headers
    assert master.headers["last-modified"].endswith(" GMT")
    seg = requests.get(f"{base}/180p/seg_00000.ts", timeout=10)
    assert seg.status_code == 200 and seg.content[0] == 0x47
    assert seg.headers["content-type"] == "video/mp2t"
    assert seg.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "vary" not in seg.headers and "content-encoding" not in seg.headers
    poster = requests.get(f"{base}/poster.jpg", timeout=10)
    assert poster.status_code == 200 and poster.headers["content-type"] == "image/jpeg"
    assert poster.content[:2] == b"\xff\xd8"
    missing = requests.get(f"{base}/180p/seg_99999.ts", timeout=10)
    assert missing.status_code == 404 and missing.headers["cache-control"] == "no-store"


def test_compressed_playlists_are_their_own_representations(played):
    _srv, base = played
    url = f"{base}/180p/index.m3u8"
    plain = requests.get(url, headers={"Accept-Encoding": "identity"}, timeout=10)
    assert "content-encoding" not in plain.headers
    gz = requests.get(url, headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert gz.headers["content-encoding"] == "gzip"
    assert gz.text == plain.text  # requests decodes gzip
    assert gz.headers["etag"] != plain.headers["etag"]
    raw_len = int(requests.head(url, headers={"Accept-Encoding": "gzip"}, timeout=10)
                  .headers["content-length"])
    assert raw_len < len(plain.content)
    # brotli, decoded by curl (its own decoder), must give the same text.
    out = subprocess.run(
        ["curl", "-sS", "--compressed", "-H", "Accept-Encoding: br", "-D", "-", url],
        capture_output=True, check=True, timeout=30,
    ).stdout.decode()
    head, body = out.split("\r\n\r\n", 1)
    assert re.search(r"^content-encoding: br\r?$", head, re.M | re.I), head
    assert body == plain.text
    # A conditional request with the gzip ETag is answered for the gzip representation.
    r = requests.get(url, headers={"Accept-Encoding": "gzip",
                                   "If-None-Match": gz.headers["etag"]}, timeout=10)
    assert r.status_code == 304 and r.headers["etag"] == gz.headers["etag"]
    # The identity ETag does not validate the gzip representation.
    r = requests.get(url, headers={"Accept-Encoding": "gzip",
                                   "If-None-Match": plain.headers["etag"]}, timeout=10)
    assert r.status_code == 200


def test_conditional_range_and_head(played):
    _srv, base = played
    url = f"{base}/180p/seg_00000.ts"
    full = requests.get(url, timeout=10)
    size = len(full.content)
    assert int(full.headers["content-length"]) == size
    r = requests.get(url, headers={"If-None-Match": full.headers["etag"]}, timeout=10)
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == full.headers["etag"]
    r = requests.get(url, headers={"If-Modified-Since": full.headers["last-modified"]}, timeout=10)
    assert r.status_code == 304
    r = requests.get(url, headers={"If-Modified-Since": "Thu, 01 Jan 1970 00:00:01 GMT"}, timeout=10)
    assert r.status_code == 200 and r.content == full.content
    r = requests.get(url, headers={"Range": "bytes=188-375"}, timeout=10)
    assert r.status_code == 206 and r.content == full.content[188:376]
    assert r.headers["content-range"] == f"bytes 188-375/{size}"
    r = requests.get(url, headers={"Range": "bytes=-10"}, timeout=10)
    assert r.status_code == 206 and r.content == full.content[-10:]
    r = requests.get(url, headers={"Range": f"bytes={size}-"}, timeout=10)
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
    # An If-Range that no longer matches gets the whole object.
    r = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'}, timeout=10)
    assert r.status_code == 200 and r.content == full.content
    h = requests.head(url, timeout=10)
    assert h.status_code == 200 and h.content == b""
    assert int(h.headers["content-length"]) == size and h.headers["etag"] == full.headers["etag"]


def test_a_burst_for_a_new_segment_reads_the_store_once(played):
    srv, base = played
    url = f"{base}/180p/seg_00002.ts"
    before = reads(srv)
    start = threading.Barrier(200)
    results = []

    def viewer():
        s = requests.Session()
        start.wait()
        for _ in range(5):
            r = s.get(url, timeout=30)
            results.append((r.status_code, len(r.content)))

    threads = [threading.Thread(target=viewer) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 1000 and {s for s, _ in results} == {200}
    assert len({n for _, n in results}) == 1
    assert reads(srv) - before == 1


def test_http2_without_tls(played):
    """h2c with prior knowledge (what an edge or a load balancer speaking HTTP/2 to its
    origin does), checked with curl's own HTTP/2 client."""
    _srv, base = played
    url = f"{base}/180p/seg_00000.ts"
    out = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null",
         "-w", "%{http_version} %{http_code} %{size_download}", url],
        capture_output=True, check=True, timeout=30,
    ).stdout.decode().split()
    size = len(requests.get(url, timeout=10).content)
    assert out == ["2", "200", str(size)], out
