"""The caching edge `sluice edge nginx` writes, run by Debian's nginx in front of the real
binary: one cache entry per object whatever the viewer's token, a burst of misses reaching
the origin once, tokens refused at the edge (tampered, expired), and the admin purge."""

import re
import threading
import time
import urllib.parse

import pytest
import requests

from conftest import Edge, Sluice

CONFIG = """
[transcode]
ladder = [
  {name = "180p", height = 180, video_bitrate = 200000},
]
"""


def metric(srv, name, labels):
    text = requests.get(f"{srv.url}/metrics", timeout=10).text
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def storage_reads(srv):
    return metric(srv, "sluice_storage_reads_total", '{tier="hot"}')


def origin_segments(srv):
    return metric(srv, "sluice_http_requests_total", '{route="play_segment",status="200"}')


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("edge")
    srv = Sluice(d / "data", CONFIG)
    edge = None
    try:
        key, asset_id = srv.ready_asset(d, "edge", seconds=8)
        edge = Edge(srv.url)
        yield srv, edge, key, asset_id
    finally:
        if edge:
            edge.stop()
        srv.stop()


def playback(srv, key, asset_id, **body):
    r = requests.post(f"{srv.url}/v1/assets/{asset_id}/playback",
                      headers={"Authorization": f"Bearer {key}"}, json=body, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["url"]


def test_second_fetch_hits_and_tokens_share_one_entry(setup):
    srv, edge, key, asset_id = setup
    one = edge.via(playback(srv, key, asset_id)).rsplit("/", 1)[0]
    other = edge.via(playback(srv, key, asset_id, ttl_s=600)).rsplit("/", 1)[0]
    assert one != other  # two viewers, two tokens
    url = "/180p/seg_00000.ts"
    origin = requests.get(playback(srv, key, asset_id).rsplit("/", 1)[0] + url, timeout=10)
    first = requests.get(one + url, timeout=10)
    assert first.status_code == 200 and first.headers["x-cache-status"] == "MISS"
    assert first.content == origin.content
    second = requests.get(one + url, timeout=10)
    assert second.headers["x-cache-status"] == "HIT" and second.content == origin.content
    # Another token, the same object: the same edge entry.
    third = requests.get(other + url, timeout=10)
    assert third.status_code == 200 and third.headers["x-cache-status"] == "HIT"
    # The API passes through uncached.
    api = requests.get(f"{edge.url}/v1/assets/{asset_id}",
                       headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert api.status_code == 200 and api.headers["x-cache-status"] == "BYPASS"
    # A playback URL asked for through the edge points at the edge.
    r = requests.post(f"{edge.url}/v1/assets/{asset_id}/playback",
                      headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.json()["url"].startswith(edge.url + "/v1/play/")
    master = requests.get(r.json()["url"], timeout=10)
    assert master.status_code == 200 and master.text.startswith("#EXTM3U")


def test_a_burst_for_a_new_segment_reaches_the_origin_once(setup):
    srv, edge, key, asset_id = setup
    base = edge.via(playback(srv, key, asset_id)).rsplit("/", 1)[0]
    url = base + "/180p/seg_00002.ts"
    reads, served = storage_reads(srv), origin_segments(srv)
    start = threading.Barrier(200)
    results = []

    def viewer():
        start.wait()
        r = requests.get(url, timeout=60)
        results.append((r.status_code, len(r.content), r.headers.get("x-cache-status")))

    threads = [threading.Thread(target=viewer) for _ in range(200)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 200 and {s for s, _, _ in results} == {200}, results[:5]
    assert len({n for _, n, _ in results}) == 1
    assert origin_segments(srv) - served == 1
    assert storage_reads(srv) - reads == 1


def test_bad_tokens_are_refused_at_the_edge(setup):
    srv, edge, key, asset_id = setup
    good = edge.via(playback(srv, key, asset_id))
    base, entry = good.rsplit("/", 1)
    assert requests.get(good, timeout=10).status_code == 200  # now cached at the edge
    parts = base.split("/")
    tok = parts[-1]
    tampered = "/".join(parts[:-1] + [tok[:-1] + ("A" if tok[-1] != "A" else "B")])
    for _ in range(2):  # refused, then refused from the edge's cached verdict
        r = requests.get(f"{tampered}/{entry}", timeout=10)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "invalid_token"
        assert r.headers["x-cache-status"] == "REFUSED"
    # A short-lived token works, then is refused once it has expired, although the edge
    # has granted it and holds the object.
    short = edge.via(playback(srv, key, asset_id, ttl_s=2))
    assert requests.get(short, timeout=10).status_code == 200
    time.sleep(3.2)
    r = requests.get(short, timeout=10)
    assert r.status_code == 403 and r.headers["x-cache-status"] == "REFUSED"


def test_purge_needs_the_admin_key_and_replaces_the_entry(setup, tmp_path):
    srv, edge, key, asset_id = setup
    base = edge.via(playback(srv, key, asset_id)).rsplit("/", 1)[0]
    tenant_id = urllib.parse.urlsplit(base).path.split("/")[3]  # /v1/play/{tenant}/…
    url = base + "/180p/index.m3u8"
    before = requests.get(url, timeout=10)
    assert before.status_code == 200
    assert requests.get(url, timeout=10).headers["x-cache-status"] == "HIT"
    # The origin's copy changes (as a rendition re-run rewrites a playlist).
    stored = srv.data_dir / "hot" / "tenants" / tenant_id / "assets" / asset_id / "hls" / "180p" / "index.m3u8"
    assert stored.exists(), stored
    stored.write_text(before.text + "# purged\n")
    assert requests.get(url, timeout=10).text == before.text  # the edge still has the old
    purge = f"{edge.url}/_sluice/purge/{tenant_id}/{asset_id}/180p/index.m3u8"
    assert requests.get(purge, timeout=10).status_code in (401, 403)
    assert requests.get(purge, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 403
    r = requests.get(purge, headers={"Authorization": f"Bearer {srv.admin_key}"}, timeout=10)
    assert r.status_code == 200 and r.headers["x-cache-status"] == "PURGED"
    assert r.text.endswith("# purged\n")
    assert requests.get(url, timeout=10).text.endswith("# purged\n")
