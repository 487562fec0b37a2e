"""The HTTP contract around the media: credentials, error shape, tus protocol details,
health and metrics, and tus-js-client as a second real client."""

import os
import subprocess
from pathlib import Path

import pytest
import requests

from conftest import make_clip, sha256

JS = Path(__file__).parent / "js"


@pytest.fixture(scope="module")
def tenant(server):
    return server.tenant("api")


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def assert_error(r, status, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_health_ready_metrics(server):
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200
    m = requests.get(f"{server.url}/metrics", timeout=5)
    assert m.status_code == 200
    assert "sluice_http_requests_total" in m.text


def test_credentials(server, tenant):
    assert_error(requests.post(f"{server.url}/v1/tenants", json={"name": "x"}, timeout=5), 401, "unauthorized")
    assert_error(
        requests.post(f"{server.url}/v1/tenants", json={"name": "x"}, headers=auth("sk_wrong"), timeout=5),
        401,
        "unauthorized",
    )
    # A tenant key cannot create tenants.
    assert_error(
        requests.post(f"{server.url}/v1/tenants", json={"name": "x"}, headers=auth(tenant["api_key"]), timeout=5),
        403,
        "forbidden",
    )
    assert_error(
        requests.post(f"{server.url}/v1/tenants", data="{nope", headers=auth(server.admin_key), timeout=5),
        400,
        "invalid_request",
    )
    assert_error(requests.get(f"{server.url}/v1/nothing-here", timeout=5), 404, "not_found")
    # The admin key was printed once and stored with owner-only permissions.
    assert (server.data_dir / "admin.key").stat().st_mode & 0o077 == 0


def test_tenants_are_isolated(server, tenant, workdir):
    other = server.tenant("other")
    p = workdir / "iso.bin"
    p.write_bytes(bytes(range(256)) * 4)  # binary: text would be refused by sniffing
    asset_id = server.tus_upload(tenant["api_key"], p)
    r = requests.get(f"{server.url}/v1/assets/{asset_id}", headers=auth(other["api_key"]), timeout=5)
    assert_error(r, 404, "not_found")
    r = requests.head(f"{server.url}/v1/uploads/{asset_id}", headers={**auth(other["api_key"]), "Tus-Resumable": "1.0.0"}, timeout=5)
    assert r.status_code == 404


def test_tus_protocol_details(server, tenant):
    base = f"{server.url}/v1/uploads/"
    o = requests.options(base, timeout=5)
    assert o.status_code == 204
    assert o.headers["Tus-Version"] == "1.0.0"
    assert "creation" in o.headers["Tus-Extension"].split(",")
    h = {**auth(tenant["api_key"]), "Tus-Resumable": "1.0.0"}
    # Wrong protocol version.
    r = requests.post(base, headers={**h, "Tus-Resumable": "0.2.2", "Upload-Length": "10"}, timeout=5)
    assert r.status_code == 412 and r.headers["Tus-Version"] == "1.0.0"
    # Missing / bad Upload-Length.
    assert_error(requests.post(base, headers=h, timeout=5), 400, "invalid_request")
    assert_error(requests.post(base, headers={**h, "Upload-Length": "-1"}, timeout=5), 400, "invalid_request")
    # Over the maximum size.
    assert_error(requests.post(base, headers={**h, "Upload-Length": str(1 << 50)}, timeout=5), 413, "too_large")

    # creation-with-upload, then resume with the right and wrong offsets.
    data = bytes(range(256)) * 40
    r = requests.post(
        base,
        headers={**h, "Upload-Length": str(len(data)), "Content-Type": "application/offset+octet-stream",
                 "Upload-Metadata": "filename dGVzdC5iaW4="},
        data=data[:1000],
        timeout=5,
    )
    assert r.status_code == 201, r.text
    assert r.headers["Upload-Offset"] == "1000"
    loc = r.headers["Location"]
    assert loc.startswith(server.url + "/v1/uploads/")
    asset_id = loc.rsplit("/", 1)[1]
    # The asset exists from creation on.
    a = requests.get(f"{server.url}/v1/assets/{asset_id}", headers=auth(tenant["api_key"]), timeout=5).json()
    assert a["status"] == "uploading" and a["filename"] == "test.bin"
    pt = {**h, "Content-Type": "application/offset+octet-stream"}
    assert_error(requests.patch(loc, headers={**pt, "Upload-Offset": "0"}, data=data[:10], timeout=5), 409, "offset_mismatch")
    r = requests.patch(loc, headers={**h, "Upload-Offset": "1000", "Content-Type": "text/plain"}, data=b"x", timeout=5)
    assert r.status_code == 415
    r = requests.head(loc, headers=h, timeout=5)
    assert r.headers["Upload-Offset"] == "1000" and r.headers["Upload-Length"] == str(len(data))
    assert r.headers["Cache-Control"] == "no-store"
    # Too many bytes for the declared length: refused, nothing committed.
    r = requests.patch(loc, headers={**pt, "Upload-Offset": "1000"}, data=data[1000:] + b"extra", timeout=5)
    assert r.status_code == 400
    assert requests.head(loc, headers=h, timeout=5).headers["Upload-Offset"] == "1000"
    r = requests.patch(loc, headers={**pt, "Upload-Offset": "1000"}, data=data[1000:], timeout=5)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(len(data))
    # Complete: it can't be terminated any more, and the source is byte-exact.
    assert requests.delete(loc, headers=h, timeout=5).status_code == 409
    src = requests.get(f"{server.url}/v1/assets/{asset_id}/source", headers=auth(tenant["api_key"]), timeout=5)
    assert src.content == data

    # Termination of an unfinished upload.
    r = requests.post(base, headers={**h, "Upload-Length": "100"}, timeout=5)
    loc2 = r.headers["Location"]
    assert requests.delete(loc2, headers=h, timeout=5).status_code == 204
    assert requests.head(loc2, headers=h, timeout=5).status_code == 404


def test_tus_js_client_upload(server, tenant, workdir):
    clip = make_clip(workdir / "js-clip.mp4", seconds=3, size="480x270")
    out = subprocess.run(
        ["node", str(JS / "upload.mjs"), f"{server.url}/v1/uploads/", tenant["api_key"], str(clip)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=JS,
    )
    assert out.returncode == 0, out.stderr
    asset_id = out.stdout.strip().rsplit("/", 1)[1]
    a = server.wait_asset(tenant["api_key"], asset_id)
    assert a["status"] == "ready", a
    assert a["filename"] == "js-clip.mp4"
    src = requests.get(f"{server.url}/v1/assets/{asset_id}/source", headers=auth(tenant["api_key"]), timeout=10)
    assert sha256(src.content) == sha256(clip)


def test_playback_before_ready_is_refused(server, tenant):
    h = {**auth(tenant["api_key"]), "Tus-Resumable": "1.0.0"}
    r = requests.post(f"{server.url}/v1/uploads/", headers={**h, "Upload-Length": "100"}, timeout=5)
    asset_id = r.headers["Location"].rsplit("/", 1)[1]
    r = requests.post(f"{server.url}/v1/assets/{asset_id}/playback", headers=auth(tenant["api_key"]), timeout=5)
    assert_error(r, 409, "conflict")


def test_tus_checksum_extension(server, tenant, workdir):
    import base64
    import hashlib

    base = f"{server.url}/v1/uploads/"
    o = requests.options(base, timeout=5)
    assert "checksum" in o.headers["Tus-Extension"].split(",")
    assert set(o.headers["Tus-Checksum-Algorithm"].split(",")) >= {"sha1", "md5"}
    h = {**auth(tenant["api_key"]), "Tus-Resumable": "1.0.0"}
    pt = {**h, "Content-Type": "application/offset+octet-stream"}
    data = bytes(range(256)) * 16
    loc = requests.post(base, headers={**h, "Upload-Length": str(len(data))}, timeout=5).headers["Location"]

    def digest(algo, chunk):
        return f"{algo} " + base64.b64encode(hashlib.new(algo, chunk).digest()).decode()

    # A corrupted chunk: 460, and nothing of it is kept.
    r = requests.patch(loc, headers={**pt, "Upload-Offset": "0", "Upload-Checksum": digest("sha1", data[:2000])},
                       data=b"\xff" + data[1:2000], timeout=5)
    assert r.status_code == 460 and r.json()["error"]["code"] == "checksum_mismatch"
    assert requests.head(loc, headers=h, timeout=5).headers["Upload-Offset"] == "0"
    # Unsupported algorithm: 400.
    r = requests.patch(loc, headers={**pt, "Upload-Offset": "0", "Upload-Checksum": "crc32 AAAAAA=="},
                       data=data[:10], timeout=5)
    assert r.status_code == 400
    # Correct sha1 then md5 chunks are stored.
    r = requests.patch(loc, headers={**pt, "Upload-Offset": "0", "Upload-Checksum": digest("sha1", data[:2000])},
                       data=data[:2000], timeout=5)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == "2000"
    r = requests.patch(loc, headers={**pt, "Upload-Offset": "2000", "Upload-Checksum": digest("md5", data[2000:])},
                       data=data[2000:], timeout=5)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(len(data))
    asset_id = loc.rsplit("/", 1)[1]
    src = requests.get(f"{server.url}/v1/assets/{asset_id}/source", headers=auth(tenant["api_key"]), timeout=5)
    assert src.content == data

    # tuspy with its own checksum mode (sends Upload-Checksum: sha1 on every PATCH).
    from tusclient import client

    p = workdir / "tuspy-checksum.bin"
    p.write_bytes(os.urandom(700_000))
    c = client.TusClient(base, headers=auth(tenant["api_key"]))
    up = c.uploader(str(p), chunk_size=128 * 1024, upload_checksum=True)
    up.upload()
    aid = up.url.rsplit("/", 1)[1]
    src = requests.get(f"{server.url}/v1/assets/{aid}/source", headers=auth(tenant["api_key"]), timeout=10)
    assert sha256(src.content) == sha256(p)


def test_tus_expiration_and_sweep(workdir):
    from email.utils import parsedate_to_datetime
    import time

    from conftest import Sluice

    s = Sluice(workdir / "data-expiry", config_text="[uploads]\nexpire_after_s = 2\nsweep_interval_s = 1\n")
    try:
        t = s.tenant("expiry")
        h = {**auth(t["api_key"]), "Tus-Resumable": "1.0.0"}
        assert "expiration" in requests.options(f"{s.url}/v1/uploads/", timeout=5).headers["Tus-Extension"]
        r = requests.post(f"{s.url}/v1/uploads/", headers={**h, "Upload-Length": "100"}, timeout=5)
        expires = parsedate_to_datetime(r.headers["Upload-Expires"]).timestamp()
        assert 0 < expires - time.time() <= 3
        loc = r.headers["Location"]
        asset_id = loc.rsplit("/", 1)[1]
        r = requests.patch(loc, headers={**h, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
                           data=b"x" * 40, timeout=5)
        assert r.status_code == 204 and "Upload-Expires" in r.headers
        assert (s.data_dir / "uploads" / asset_id).exists()
        # Abandoned: after expiry it answers 410 (or 404 once swept), and the sweeper removes
        # the bytes, the session and the asset.
        deadline = time.time() + 15
        while time.time() < deadline and (s.data_dir / "uploads" / asset_id).exists():
            time.sleep(0.2)
        assert not (s.data_dir / "uploads" / asset_id).exists()
        assert requests.head(loc, headers=h, timeout=5).status_code in (404, 410)
        r = requests.get(f"{s.url}/v1/assets/{asset_id}", headers=auth(t["api_key"]), timeout=5)
        assert r.status_code == 404
        # A finished upload never expires.
        r = requests.post(f"{s.url}/v1/uploads/", headers={**h, "Upload-Length": "10",
                          "Content-Type": "application/offset+octet-stream"}, data=b"y" * 10, timeout=5)
        assert r.status_code == 201 and "Upload-Expires" not in r.headers
        done_id = r.headers["Location"].rsplit("/", 1)[1]
        # An unfinished upload created after it expires later than the finished one would
        # have: once the sweeper has removed it, a sweep ran past the finished one's expiry.
        r = requests.post(f"{s.url}/v1/uploads/", headers={**h, "Upload-Length": "100"}, timeout=5)
        later_id = r.headers["Location"].rsplit("/", 1)[1]
        deadline = time.time() + 15
        while time.time() < deadline and (s.data_dir / "uploads" / later_id).exists():
            time.sleep(0.2)
        assert not (s.data_dir / "uploads" / later_id).exists()
        assert requests.get(f"{s.url}/v1/assets/{done_id}", headers=auth(t["api_key"]), timeout=5).status_code == 200
    finally:
        s.stop()
