"""Tenant quotas, black-box: each quota's boundary, the `quota_exceeded` answer naming the
quota with its usage and limit, and `GET /v1/usage`. Egress is counted exactly (a range
request counts its 206 body) and survives a restart; a viewer's permit is held for the
whole body and released when the client hangs up mid-body; concurrent uploads; transcode
minutes checked at enqueue and counted from the output's duration."""

import http.client
import socket
import threading

import pytest
import requests

from conftest import Sluice, ffmpeg, wait_for

ADMIN = "sk_admin_quota_test_key_0123456789"
# One rendition at a high bitrate of a noise clip: segments of over 8 MB, so that a
# viewer who stops reading keeps the body in flight. The cache is off, so bodies stream.
CONFIG = """
[gateway]
cache_bytes = 0
[transcode]
segment_duration_s = 6
ladder = [{name = "360p", height = 360, video_bitrate = 30000000}]
"""
IDENTITY = {"Accept-Encoding": "identity"}


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def noise_clip(path, seconds=6):
    ffmpeg(
        "-f", "lavfi", "-i", "nullsrc=s=640x360:r=25,geq=random(1)*255:128:128",
        "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0",
        "-pix_fmt", "yuv420p", str(path),
    )
    return path


@pytest.fixture(scope="module")
def srv(workdir):
    s = Sluice(workdir / "quota-data", config_text=CONFIG, env={"SLUICE_ADMIN_KEY": ADMIN})
    clip = noise_clip(workdir / "quota-noise.mp4")
    t = s.tenant("quotas")
    r = requests.post(
        f"{s.url}/v1/assets",
        data=clip.read_bytes(),
        headers={**auth(t["api_key"]), "Content-Type": "video/mp4"},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    a = s.wait_asset(t["api_key"], r.json()["id"])
    assert a["status"] == "ready", a
    state = {"server": s, "tenant": t, "asset": a}
    yield state
    state["server"].stop()


def usage(s, key):
    r = requests.get(f"{s.url}/v1/usage", headers=auth(key), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["quotas"]


def patch(s, tenant_id, quotas):
    r = requests.patch(
        f"{s.url}/v1/tenants/{tenant_id}", json={"quotas": quotas}, headers=auth(s.admin_key), timeout=10
    )
    assert r.status_code == 200, r.text
    return r.json()


def assert_quota_error(r, status, quota, used, limit):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == "quota_exceeded"
    assert quota in err["message"] and f"{used} used" in err["message"] and f"limit {limit}" in err["message"], err


def playlist_urls(s, key, asset_id):
    """(master URL, variant URL, first segment URL) of a fresh playback URL."""
    r = requests.post(f"{s.url}/v1/assets/{asset_id}/playback", headers=auth(key), timeout=10)
    assert r.status_code == 200, r.text
    master = r.json()["url"]
    base = master.rsplit("/", 1)[0]
    text = requests.get(master, headers=IDENTITY, timeout=10).text
    variant = base + "/" + next(l for l in text.splitlines() if l and not l.startswith("#"))
    text = requests.get(variant, headers=IDENTITY, timeout=10).text
    seg = variant.rsplit("/", 1)[0] + "/" + next(l for l in text.splitlines() if l and not l.startswith("#"))
    return master, variant, seg


def test_usage_lists_every_quota_with_its_limit(srv):
    s, t = srv["server"], srv["tenant"]
    q = usage(s, t["api_key"])
    assert set(q) == {
        "storage_bytes", "egress_bytes_per_month", "concurrent_viewers",
        "concurrent_uploads", "transcode_minutes_per_month",
    }
    assert all(v["limit"] is None for v in q.values())
    assert q["storage_bytes"]["used"] > 0
    # Transcode minutes: the output's real duration, exact to the millisecond.
    assert q["transcode_minutes_per_month"]["used"] == pytest.approx(srv["asset"]["duration_s"] / 60, abs=1e-6)
    # The admin key has no tenant; a wrong key is a 401.
    assert requests.get(f"{s.url}/v1/usage", headers=auth(s.admin_key), timeout=10).status_code == 403
    assert requests.get(f"{s.url}/v1/usage", headers=auth("sk_" + "x" * 32), timeout=10).status_code == 401


def test_quota_values_are_bounded(srv):
    s, t = srv["server"], srv["tenant"]
    for q in [{"concurrent_viewers": 10**12}, {"egress_bytes_per_month": -1}, {"storage_bytes": 2**64}, {"bogus": 1}]:
        r = requests.patch(f"{s.url}/v1/tenants/{t['id']}", json={"quotas": q}, headers=auth(s.admin_key), timeout=10)
        assert r.status_code == 400, (q, r.text)
    r = requests.patch(f"{s.url}/v1/tenants/NOPE", json={"quotas": {}}, headers=auth(s.admin_key), timeout=10)
    assert r.status_code == 404


def test_egress_counts_ranges_exactly_refuses_at_the_limit_and_survives_restart(srv, workdir):
    s, t = srv["server"], srv["tenant"]
    key, asset_id = t["api_key"], srv["asset"]["id"]
    patch(s, t["id"], {"egress_bytes_per_month": 10**12})
    master, variant, seg = playlist_urls(s, key, asset_id)
    before = usage(s, key)["egress_bytes_per_month"]["used"]
    assert before > 0  # the helper's playlist fetches
    sent = 0
    for url in (master, variant):
        r = requests.get(url, headers=IDENTITY, timeout=10)
        assert r.status_code == 200
        sent += len(r.content)
    r = requests.get(seg, headers={**IDENTITY, "Range": "bytes=100-1099"}, timeout=10)
    assert r.status_code == 206 and len(r.content) == 1000, (r.status_code, len(r.content))
    sent += 1000
    used = usage(s, key)["egress_bytes_per_month"]["used"]
    assert used - before == sent, (used, before, sent)
    # At the limit: the next response is refused, naming the quota, its usage and limit.
    patch(s, t["id"], {"egress_bytes_per_month": used})
    r = requests.get(seg, headers={**IDENTITY, "Range": "bytes=0-9"}, timeout=10)
    assert_quota_error(r, 403, "egress_bytes_per_month", used, used)
    assert usage(s, key)["egress_bytes_per_month"]["used"] == used
    # Nothing stored is touched: the asset and its source are still there.
    assert s.asset(key, asset_id)["status"] == "ready"
    # A graceful restart writes what was counted in memory: the total is the same.
    s.stop()
    s2 = Sluice(s.data_dir, config_text=CONFIG, env={"SLUICE_ADMIN_KEY": ADMIN}, port=s.port)
    srv["server"] = s2
    assert usage(s2, key)["egress_bytes_per_month"] == {"used": used, "limit": used}
    patch(s2, t["id"], {"egress_bytes_per_month": None})


def test_a_viewer_permit_lives_as_long_as_the_body_and_ends_on_hang_up(srv):
    s, t = srv["server"], srv["tenant"]
    key, asset_id = t["api_key"], srv["asset"]["id"]
    _, _, seg = playlist_urls(s, key, asset_id)
    size = int(requests.head(seg, timeout=10).headers["Content-Length"])
    assert size > 8 << 20, size  # more than the socket buffers hold (4 MiB send buffer at most)
    patch(s, t["id"], {"concurrent_viewers": 1})
    path = seg.split(str(s.port), 1)[1]
    # A viewer who reads the headers and a little of the body, then stops reading.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", s.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n".encode())
    head = sock.recv(1024)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    try:
        wait_for(lambda: usage(s, key)["concurrent_viewers"]["used"] == 1, 10, "the permit held")
        r = requests.get(seg, headers={**IDENTITY, "Range": "bytes=0-9"}, timeout=10)
        assert_quota_error(r, 429, "concurrent_viewers", 1, 1)
        assert r.headers["Retry-After"] == "1"
        # Still held while the body is in flight.
        assert usage(s, key)["concurrent_viewers"]["used"] == 1
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # hang up mid-body (RST)
    wait_for(lambda: usage(s, key)["concurrent_viewers"]["used"] == 0, 10, "the permit released")
    r = requests.get(seg, headers={**IDENTITY, "Range": "bytes=0-9"}, timeout=10)
    assert r.status_code == 206, r.text
    patch(s, t["id"], {"concurrent_viewers": None})


def test_concurrent_uploads_boundary(srv, workdir):
    s, t = srv["server"], srv["tenant"]
    key = t["api_key"]
    patch(s, t["id"], {"concurrent_uploads": 1})
    release = threading.Event()
    result = {}

    def body():
        yield b"\x00" * 1024
        release.wait(6)  # under the 8 s body idle timeout
        yield b"\x00" * 1024

    def first():
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        c.putrequest("POST", "/v1/uploads")
        for k, v in {
            "Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0", "Upload-Length": "2048",
            "Content-Type": "application/offset+octet-stream", "Transfer-Encoding": "chunked",
        }.items():
            c.putheader(k, v)
        c.endheaders()
        for chunk in body():
            c.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        c.send(b"0\r\n\r\n")
        result["status"] = c.getresponse().status

    th = threading.Thread(target=first)
    th.start()
    try:
        wait_for(lambda: usage(s, key)["concurrent_uploads"]["used"] == 1, 10, "the first upload running")
        r = requests.post(
            f"{s.url}/v1/uploads",
            headers={**auth(key), "Tus-Resumable": "1.0.0", "Upload-Length": "10"},
            timeout=10,
        )
        assert_quota_error(r, 429, "concurrent_uploads", 1, 1)
    finally:
        release.set()
        th.join(30)
    assert result.get("status") == 201, result
    wait_for(lambda: usage(s, key)["concurrent_uploads"]["used"] == 0, 10, "the permit released")
    r = requests.post(
        f"{s.url}/v1/uploads", headers={**auth(key), "Tus-Resumable": "1.0.0", "Upload-Length": "10"}, timeout=10
    )
    assert r.status_code == 201, r.text
    patch(s, t["id"], {"concurrent_uploads": None})


def test_transcode_minutes_are_checked_at_enqueue(srv):
    s, t = srv["server"], srv["tenant"]
    key, asset_id = t["api_key"], srv["asset"]["id"]
    used = usage(s, key)["transcode_minutes_per_month"]["used"]
    assert 0 < used < 1
    rerun = f"{s.url}/v1/assets/{asset_id}/renditions/360p/rerun"
    # At the limit (0 minutes): the enqueue is refused and nothing changes.
    patch(s, t["id"], {"transcode_minutes_per_month": 0})
    r = requests.post(rerun, headers=auth(key), timeout=10)
    assert_quota_error(r, 403, "transcode_minutes_per_month", 1, 0)
    # Under the limit (1 minute): the same re-run is queued.
    patch(s, t["id"], {"transcode_minutes_per_month": 1})
    r = requests.post(rerun, headers=auth(key), timeout=10)
    assert r.status_code in (200, 202), r.text
    patch(s, t["id"], {"transcode_minutes_per_month": 0})
    # A new upload is refused before its bytes are sent, and creates nothing.
    r = requests.post(
        f"{s.url}/v1/assets", data=b"\x00" * 100, headers={**auth(key), "Content-Type": "video/mp4"}, timeout=10
    )
    assert_quota_error(r, 403, "transcode_minutes_per_month", 1, 0)
    assert s.asset(key, asset_id)["status"] == "ready"
    patch(s, t["id"], {"transcode_minutes_per_month": None})
