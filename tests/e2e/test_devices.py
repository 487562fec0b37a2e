"""Device keys, raw uploads with Idempotency-Key, tenant storage quotas and content sniffing,
through real clients (tuspy, requests) against the real binary."""

import os
import threading
import time

import pytest
import requests
from tusclient import client
from tusclient.exceptions import TusCommunicationError

from conftest import make_clip, sha256, wait_for


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def assert_error(r, status, code):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.json()["error"]["code"] == code, r.text


@pytest.fixture(scope="module")
def clip(workdir):
    return make_clip(workdir / "device.mp4", seconds=2, size="320x240")


def new_tenant(server, name, quotas=None):
    body = {"name": name}
    if quotas is not None:
        body["quotas"] = quotas
    r = requests.post(f"{server.url}/v1/tenants", json=body, headers=auth(server.admin_key), timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


def new_device(server, tenant_key, name):
    r = requests.post(f"{server.url}/v1/devices", json={"name": name}, headers=auth(tenant_key), timeout=10)
    assert r.status_code == 201, r.text
    d = r.json()
    assert set(d) == {"id", "name", "key", "created_at"} and d["name"] == name
    return d


def raw_post(server, key, data, idem=None, ctype="video/mp4", **kw):
    h = {**auth(key), "Content-Type": ctype}
    if idem is not None:
        h["Idempotency-Key"] = idem
    return requests.post(f"{server.url}/v1/assets", data=data, headers=h, timeout=60, **kw)


def test_a_device_uploads_with_tuspy_and_can_do_nothing_else(server, clip):
    t = new_tenant(server, "cams")
    d = new_device(server, t["api_key"], "cam-front")
    asset_id = server.tus_upload(d["key"], clip)

    # The device key cannot read what it uploaded, nor reach any other route.
    k = auth(d["key"])
    for method, path in [
        ("GET", f"/v1/assets/{asset_id}"),
        ("GET", f"/v1/assets/{asset_id}/source"),
        ("POST", f"/v1/assets/{asset_id}/playback"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/webhooks"),
        ("POST", "/v1/webhooks"),
        ("GET", "/v1/devices"),
        ("POST", "/v1/devices"),
        ("DELETE", f"/v1/devices/{d['id']}"),
        ("POST", "/v1/tenants"),
    ]:
        assert_error(requests.request(method, server.url + path, headers=k, timeout=10), 403, "device_not_allowed")
    assert requests.get(f"{server.url}/healthz", headers=k, timeout=10).status_code == 200

    # The tenant sees the asset, which device sent it, and the device's activity.
    a = server.wait_asset(t["api_key"], asset_id, timeout=120)
    assert a["status"] == "ready" and a["device_id"] == d["id"], a
    r = requests.get(f"{server.url}/v1/devices", headers=auth(t["api_key"]), timeout=10)
    assert r.status_code == 200
    [listed] = r.json()["devices"]
    assert "key" not in listed
    assert listed["id"] == d["id"] and listed["revoked_at"] is None and listed["last_seen_at"]
    assert listed["last_uploads"] == [
        {"asset_id": asset_id, "status": "ready", "created_at": listed["last_uploads"][0]["created_at"]}
    ]
    # Another tenant does not see it.
    other = new_tenant(server, "not-cams")
    assert_error(requests.get(f"{server.url}/v1/devices/{d['id']}", headers=auth(other["api_key"]), timeout=10),
                 404, "not_found")
    # Bad device names.
    r = requests.post(f"{server.url}/v1/devices", json={"name": ""}, headers=auth(t["api_key"]), timeout=10)
    assert_error(r, 400, "invalid_request")


def test_revocation_takes_effect_at_once(server, clip):
    t = new_tenant(server, "revoke")
    d = new_device(server, t["api_key"], "cam-lost")
    data = clip.read_bytes()
    r = raw_post(server, d["key"], data)
    assert r.status_code == 201, r.text
    assert r.json()["device_id"] == d["id"]
    # Start a tus upload, then revoke: its next request is refused too.
    tus = {**auth(d["key"]), "Tus-Resumable": "1.0.0"}
    r = requests.post(f"{server.url}/v1/uploads/", headers={**tus, "Upload-Length": str(len(data))}, timeout=10)
    assert r.status_code == 201, r.text
    loc = r.headers["Location"]

    r = requests.delete(f"{server.url}/v1/devices/{d['id']}", headers=auth(t["api_key"]), timeout=10)
    assert r.status_code == 204, r.text
    assert_error(raw_post(server, d["key"], data), 401, "unauthorized")
    r = requests.patch(loc, headers={**tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
                       data=data, timeout=10)
    assert r.status_code == 401
    r = requests.get(f"{server.url}/v1/devices/{d['id']}", headers=auth(t["api_key"]), timeout=10).json()
    assert r["revoked_at"] and r["last_seen_at"]
    # POST …/revoke answers with the device; other devices and the tenant key still work.
    d2 = new_device(server, t["api_key"], "cam-2")
    r = requests.post(f"{server.url}/v1/devices/{d2['id']}/revoke", headers=auth(t["api_key"]), timeout=10)
    assert r.status_code == 200 and r.json()["revoked_at"], r.text
    assert_error(raw_post(server, d2["key"], data), 401, "unauthorized")
    d3 = new_device(server, t["api_key"], "cam-3")
    assert raw_post(server, d3["key"], data).status_code == 201
    assert raw_post(server, t["api_key"], data).status_code == 201


def test_raw_upload_with_idempotency_key(server, clip, workdir):
    t = new_tenant(server, "idem")
    key = t["api_key"]
    data = clip.read_bytes()
    r1 = raw_post(server, key, data, idem="upload-0001", params={"filename": "clip one.mp4"})
    assert r1.status_code == 201, r1.text
    a = r1.json()
    assert a["status"] == "queued" and a["filename"] == "clip one.mp4" and a["size"] == len(data)
    assert r1.headers["Location"] == f"/v1/assets/{a['id']}"
    # A blind retry: the first response again, and no second asset.
    r2 = raw_post(server, key, data, idem="upload-0001")
    assert r2.status_code == 201 and r2.headers.get("Idempotent-Replayed") == "true"
    assert r2.json() == a
    # Same key, another body: 422.
    other = make_clip(workdir / "other.mp4", seconds=1, size="320x240")
    assert_error(raw_post(server, key, other.read_bytes(), idem="upload-0001"), 422, "idempotency_key_reused")
    jobs = requests.get(f"{server.url}/v1/jobs", headers=auth(key), timeout=10).json()["jobs"]
    assert [j["asset_id"] for j in jobs] == [a["id"]]
    done = server.wait_asset(key, a["id"], timeout=120)
    assert done["status"] == "ready", done
    src = requests.get(f"{server.url}/v1/assets/{a['id']}/source", headers=auth(key), timeout=30)
    assert sha256(src.content) == sha256(data)

    # Two concurrent requests with one key: one streams slowly (chunked, no length); the
    # other is refused with 409 while it runs; afterwards a retry replays the first.
    # The first request holds the key (its first bytes are stored, so the claim, which
    # comes before any byte, was made) and the rest of its body waits until the second has
    # been refused: no race, whatever the machine's speed.
    second_done = threading.Event()

    def slow():
        step = len(data) // 8 + 1
        yield data[:step]
        assert second_done.wait(60)
        for i in range(step, len(data), step):
            yield data[i:i + step]

    uploads = server.data_dir / "uploads"
    before = set(os.listdir(uploads))
    result = {}
    th = threading.Thread(target=lambda: result.update(r=raw_post(server, key, slow(), idem="upload-0002")))
    th.start()
    try:
        wait_for(lambda: set(os.listdir(uploads)) - before, 30, "the first request's upload file")
        assert_error(raw_post(server, key, data, idem="upload-0002"), 409, "idempotency_key_in_flight")
    finally:
        second_done.set()
    th.join()
    assert result["r"].status_code == 201, result["r"].text
    replay = raw_post(server, key, data, idem="upload-0002")
    assert replay.status_code == 201 and replay.json()["id"] == result["r"].json()["id"]
    jobs = requests.get(f"{server.url}/v1/jobs", headers=auth(key), timeout=10).json()["jobs"]
    assert len(jobs) == 2

    # The declared type must be video/* or octet-stream.
    assert_error(raw_post(server, key, data, ctype="text/plain"), 415, "unsupported_media_type")
    assert_error(raw_post(server, key, b"", ctype="video/mp4"), 400, "invalid_request")


def test_storage_quota(server, clip):
    data = clip.read_bytes()
    quota = len(data) + 1000
    t = new_tenant(server, "quota", quotas={"storage_bytes": quota})
    assert t["quotas"] == {"storage_bytes": quota}
    key = t["api_key"]
    tus = {**auth(key), "Tus-Resumable": "1.0.0"}
    base = f"{server.url}/v1/uploads/"
    # tus creation beyond the quota: refused before any byte.
    r = requests.post(base, headers={**tus, "Upload-Length": str(quota + 1)}, timeout=10)
    assert_error(r, 403, "quota_exceeded")
    # A reservation counts: while a tus upload of the clip is open, a raw one does not fit...
    r = requests.post(base, headers={**tus, "Upload-Length": str(len(data))}, timeout=10)
    assert r.status_code == 201
    loc = r.headers["Location"]
    assert_error(raw_post(server, key, data), 403, "quota_exceeded")
    # ...and terminating it frees the reservation.
    assert requests.delete(loc, headers=tus, timeout=10).status_code == 204
    assert raw_post(server, key, data).status_code == 201
    # Full now: tuspy's creation is refused, and so is a raw upload of unknown length
    # (chunked), while it streams.
    c = client.TusClient(base, headers=auth(key))
    with pytest.raises(TusCommunicationError) as e:
        c.uploader(str(clip), chunk_size=1 << 20).upload()
    assert e.value.status_code == 403 and b"quota_exceeded" in e.value.response_content
    assert_error(raw_post(server, key, iter([data[:1000], data[1000:]])), 403, "quota_exceeded")
    jobs = requests.get(f"{server.url}/v1/jobs", headers=auth(key), timeout=10).json()["jobs"]
    assert len(jobs) == 1
    bad = requests.post(f"{server.url}/v1/tenants", json={"name": "x", "quotas": {"bytes": 1}},
                        headers=auth(server.admin_key), timeout=10)
    assert_error(bad, 400, "invalid_request")


def test_non_media_is_refused(server, workdir):
    t = new_tenant(server, "sniff")
    key = t["api_key"]
    text = workdir / "readme.txt"
    text.write_text("These are not the frames you are looking for.\n" * 200)
    c = client.TusClient(f"{server.url}/v1/uploads/", headers=auth(key))
    up = c.uploader(str(text), chunk_size=1 << 20, metadata={"filename": "readme.txt"})
    with pytest.raises(TusCommunicationError) as e:
        up.upload()
    assert e.value.status_code == 415
    asset_id = up.url.rstrip("/").rsplit("/", 1)[-1]
    # The upload and its asset are gone.
    assert_error(requests.get(f"{server.url}/v1/assets/{asset_id}", headers=auth(key), timeout=10), 404, "not_found")
    r = requests.head(up.url, headers={**auth(key), "Tus-Resumable": "1.0.0"}, timeout=10)
    assert r.status_code == 404
    # Raw: HTML and a PNG, whatever the declared type.
    assert_error(raw_post(server, key, b"<!doctype html><html><body>" + b"hello " * 200), 415, "unsupported_media")
    png = b"\x89PNG\r\n\x1a\n" + bytes(2000)
    assert_error(raw_post(server, key, png, ctype="application/octet-stream"), 415, "unsupported_media")
    assert requests.get(f"{server.url}/v1/jobs", headers=auth(key), timeout=10).json()["jobs"] == []
    assert not (server.data_dir / "uploads" / asset_id).exists()
