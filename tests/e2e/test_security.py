"""The security suite, black-box against the real binary. Every case first shows the
allowed path works, then the refused one.

- tenant isolation on every route of the route table (`sluice routes`): a route without a
  case here fails the suite;
- body limits (413) per route class, header size (431), a slow-header client cut off;
- path traversal, encoded slashes, NUL and overlong UTF-8 in every path parameter;
- 10,000 seeded random malformed requests over raw sockets: no 5xx, no hang;
- last: no key, token or secret used by the suite appears in the server's log.
"""

import json
import os
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest
import requests

import malformed
from conftest import BIN, Sluice, make_clip

CONFIG = """
[gateway]
header_read_timeout_s = 2
[uploads]
max_size = 8388608
[webhooks]
allow_hosts = ["127.0.0.1"]
"""


def auth(key):
    return {"Authorization": f"Bearer {key}"}


class Tenant:
    pass


def setup_tenant(s, workdir, name, ready):
    t = Tenant()
    r = requests.post(f"{s.url}/v1/tenants", json={"name": name}, headers=auth(s.admin_key), timeout=10)
    assert r.status_code == 201, r.text
    t.id, t.key = r.json()["id"], r.json()["api_key"]
    t.name = name
    t.filename = f"{name}-secret-name.mp4"
    if ready:
        clip = make_clip(workdir / f"{name}.mp4", seconds=2, size="160x90", rate=10)
        t.asset = s.tus_upload(t.key, clip, filename=t.filename)
        a = s.wait_asset(t.key, t.asset)
        assert a["status"] == "ready", a
    else:
        r = requests.post(f"{s.url}/v1/assets", data=b"\x00" * 64, timeout=10,
                          headers={**auth(t.key), "Content-Type": "video/mp4"})
        assert r.status_code == 201, r.text
        t.asset = r.json()["id"]
    a = s.asset(t.key, t.asset)
    t.job = a.get("job_id")
    t.rendition = (a.get("renditions") or [{"name": "none"}])[0]["name"]
    r = requests.post(f"{s.url}/v1/assets/{t.asset}/playback", json={}, headers=auth(t.key), timeout=10)
    assert r.status_code in (200, 201), r.text
    t.play_url = r.json()["url"]
    t.watch_url = r.json().get("watch_url")
    parts = urlparse(t.play_url).path.split("/")
    t.token = parts[5]
    r = requests.post(f"{s.url}/v1/devices", json={"name": f"{name}-cam"}, headers=auth(t.key), timeout=10)
    assert r.status_code == 201, r.text
    t.device, t.device_key = r.json()["id"], r.json()["key"]
    r = requests.post(f"{s.url}/v1/webhooks", json={"url": f"http://127.0.0.1:9/{name}-hook", "events": ["asset.ready"]},
                      headers=auth(t.key), timeout=10)
    assert r.status_code == 201, r.text
    t.webhook, t.webhook_secret = r.json()["id"], r.json()["secret"]
    r = requests.post(f"{s.url}/v1/live", json={}, headers=auth(t.key), timeout=10)
    assert r.status_code == 201, r.text
    t.live, t.ingest_url = r.json()["id"], r.json()["ingest_url"]
    t.ingest_token = urlparse(t.ingest_url).path.rstrip("/").split("/")[-1]
    r = requests.post(f"{s.url}/v1/uploads/", headers={**auth(t.key), "Tus-Resumable": "1.0.0",
                                                       "Upload-Length": "100"}, timeout=10)
    assert r.status_code == 201, r.text
    t.upload = r.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    # What of this tenant must never show in another tenant's answers.
    t.private = [t.id, t.key, t.filename, f"{name}-hook", f"{name}-cam", t.webhook_secret, t.token,
                 t.ingest_token] + ([t.device_key] if t.device_key else [])
    return t


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("security")
    # Verbose logs, so the final check looks at everything the server says.
    s = Sluice(d / "data", config_text=CONFIG, extra_args=["--log-format", "json"],
               env={"RUST_LOG": "debug,sqlx=warn,apalis=warn,h2=info,hyper=info,hyper_util=info,"
                                "rustls=info,tokio=info,runtime=info,object_store=info"})
    a = setup_tenant(s, d, "alpha", ready=True)
    b = setup_tenant(s, d, "bravo", ready=True)
    secrets = [s.admin_key, a.key, b.key, a.token, b.token, a.webhook_secret, b.webhook_secret,
               a.ingest_token, b.ingest_token] + [t.device_key for t in (a, b) if t.device_key]
    yield s, a, b, secrets
    s.stop()


def refused(r, owner, status=(404,)):
    """A refusal that says nothing of the owner's things."""
    assert r.status_code in status, (r.status_code, r.text)
    if r.request.method != "HEAD" and r.text:
        body = r.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
        for p in owner.private:
            assert p not in r.text, (p, r.text)


def call(s, method, path, key, **kw):
    return requests.request(method, f"{s.url}{path}", headers={**auth(key), **kw.pop("headers", {})},
                            timeout=15, **kw)


# ---- tenant isolation, one case per route label ----

def case_assets(s, a, b):
    for path in [f"/v1/assets/{b.asset}"]:
        assert call(s, "GET", path, b.key).status_code == 200
        refused(call(s, "GET", path, a.key), b)
    path = f"/v1/assets/{b.asset}/renditions/{b.rendition}/rerun"
    refused(call(s, "POST", path, a.key, json={}), b)
    r = call(s, "POST", path, b.key, json={})
    assert r.status_code in (200, 202), r.text


def case_asset_source(s, a, b):
    path = f"/v1/assets/{b.asset}/source"
    assert call(s, "GET", path, b.key).status_code == 200
    refused(call(s, "GET", path, a.key), b)


def case_asset_playback(s, a, b):
    path = f"/v1/assets/{b.asset}/playback"
    assert call(s, "POST", path, b.key, json={}).status_code in (200, 201)
    refused(call(s, "POST", path, a.key, json={}), b)


def case_jobs(s, a, b):
    assert b.job, "the ready asset names its job"
    path = f"/v1/jobs/{b.job}"
    assert call(s, "GET", path, b.key).status_code == 200
    refused(call(s, "GET", path, a.key), b)
    for op in ("cancel", "retry"):
        refused(call(s, "POST", f"{path}/{op}", a.key, json={}), b)
    listed = call(s, "GET", "/v1/jobs", a.key)
    assert listed.status_code == 200 and b.job not in listed.text and b.asset not in listed.text
    assert b.job in call(s, "GET", "/v1/jobs", b.key).text


def case_webhooks(s, a, b):
    assert b.webhook in call(s, "GET", "/v1/webhooks", b.key).text
    listed = call(s, "GET", "/v1/webhooks", a.key)
    assert listed.status_code == 200 and b.webhook not in listed.text
    refused(call(s, "DELETE", f"/v1/webhooks/{b.webhook}", a.key), b)
    assert b.webhook in call(s, "GET", "/v1/webhooks", b.key).text


def case_devices(s, a, b):
    path = f"/v1/devices/{b.device}"
    assert call(s, "GET", path, b.key).status_code == 200
    refused(call(s, "GET", path, a.key), b)
    refused(call(s, "DELETE", path, a.key), b)
    refused(call(s, "POST", f"{path}/revoke", a.key), b)
    assert b.device not in call(s, "GET", "/v1/devices", a.key).text
    assert call(s, "GET", path, b.key).json().get("revoked_at") in (None, False)


def case_live(s, a, b):
    path = f"/v1/live/{b.live}"
    assert call(s, "GET", path, b.key).status_code == 200
    refused(call(s, "GET", path, a.key), b)
    refused(call(s, "POST", f"{path}/playback", a.key, json={}), b)
    refused(call(s, "POST", f"{path}/end", a.key, json={}), b)
    assert b.live not in call(s, "GET", "/v1/live", a.key).text
    assert call(s, "GET", path, b.key).json()["state"] == "idle"
    assert call(s, "POST", f"{path}/playback", b.key, json={}).status_code in (200, 201)


def case_live_ingest(s, a, b):
    # B's stream under A's token, and A's stream under B's token: refused before any body.
    body = b"#EXTM3U\n"
    r = requests.put(f"{s.url}/v1/live/{b.live}/ingest/{a.ingest_token}/index.m3u8", data=body, timeout=10)
    refused(r, b, status=(403, 404))
    r = requests.put(f"{s.url}/v1/live/{a.live}/ingest/{b.ingest_token}/index.m3u8", data=body, timeout=10)
    refused(r, b, status=(403, 404))


def tus_url(s, t):
    return f"{s.url}/v1/uploads/{t.upload}"


def case_tus_head(s, a, b):
    h = {"Tus-Resumable": "1.0.0"}
    assert requests.head(tus_url(s, b), headers={**auth(b.key), **h}, timeout=10).status_code == 200
    refused(requests.head(tus_url(s, b), headers={**auth(a.key), **h}, timeout=10), b)


def case_tus_patch(s, a, b):
    h = {"Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    refused(requests.patch(tus_url(s, b), data=b"x" * 10, headers={**auth(a.key), **h}, timeout=10), b)
    r = requests.patch(tus_url(s, b), data=b"x" * 10, headers={**auth(b.key), **h}, timeout=10)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == "10", r.text


def case_tus_other(s, a, b):
    h = {"Tus-Resumable": "1.0.0"}
    refused(requests.delete(tus_url(s, b), headers={**auth(a.key), **h}, timeout=10), b)
    r = requests.head(tus_url(s, b), headers={**auth(b.key), **h}, timeout=10)
    assert r.status_code == 200, "B's upload survived A's delete"


def play_paths(t, owner_of_token):
    base = f"/v1/play/{t.id}/{t.asset}/{owner_of_token.token}"
    return base


def case_play_playlist(s, a, b):
    assert requests.get(b.play_url, timeout=10).status_code == 200
    # A's valid token on B's asset, and B's token moved onto A's tenant.
    refused(requests.get(f"{s.url}/v1/play/{b.id}/{b.asset}/{a.token}/master.m3u8", timeout=10), b, (403, 404))
    refused(requests.get(f"{s.url}/v1/play/{a.id}/{b.asset}/{b.token}/master.m3u8", timeout=10), b, (403, 404))


def case_play_segment(s, a, b):
    r = requests.get(b.play_url.replace("master.m3u8", f"{b.rendition}/index.m3u8"), timeout=10)
    assert r.status_code == 200, r.text
    seg = next(l for l in r.text.splitlines() if l and not l.startswith("#"))
    ok = b.play_url.replace("master.m3u8", f"{b.rendition}/{seg}")
    assert requests.get(ok, timeout=10).status_code == 200
    refused(requests.get(ok.replace(b.token, a.token), timeout=10), b, (403, 404))


def case_watch_page(s, a, b):
    assert b.watch_url and requests.get(b.watch_url, timeout=10).status_code == 200
    refused(requests.get(b.watch_url.replace(b.token, a.token), timeout=10), b, (403, 404))


def case_player_file(s, a, b):
    page = requests.get(b.watch_url, timeout=10).text
    name = next(w.split('"')[0] for w in page.split('src="')[1:] if ".js" in w.split('"')[0])
    url = b.watch_url.rsplit("/", 1)[0] + "/" + name.rsplit("/", 1)[-1]
    assert requests.get(url, timeout=10).status_code == 200, url
    refused(requests.get(url.replace(b.token, a.token), timeout=10), b, (403, 404))


def case_edge_verify(s, a, b):
    ok = requests.get(f"{s.url}/v1/edge/verify", headers={"X-Original-URI": urlparse(b.play_url).path}, timeout=10)
    assert ok.status_code in (200, 204), ok.text
    forged = urlparse(b.play_url).path.replace(b.token, a.token)
    refused(requests.get(f"{s.url}/v1/edge/verify", headers={"X-Original-URI": forged}, timeout=10), b, (401, 403, 404))


def case_edge(s, a, b):
    path = f"/v1/edge/objects/{b.id}/{b.asset}/master.m3u8"
    assert call(s, "GET", path, s.admin_key).status_code == 200
    refused(call(s, "GET", path, a.key), b, (401, 403, 404))
    assert call(s, "GET", "/v1/edge/admin", s.admin_key).status_code == 204
    refused(call(s, "GET", "/v1/edge/admin", a.key), b, (401, 403))


def case_preset(s, a, b):
    assert call(s, "PUT", "/v1/preset", b.key, json={"segment_format": "fmp4"}).status_code == 200
    assert call(s, "PUT", "/v1/preset", a.key, json={"segment_format": "ts"}).status_code == 200
    assert "fmp4" in call(s, "GET", "/v1/preset", b.key).text
    assert call(s, "DELETE", "/v1/preset", a.key).status_code in (200, 204)
    assert "fmp4" in call(s, "GET", "/v1/preset", b.key).text
    assert call(s, "DELETE", "/v1/preset", b.key).status_code in (200, 204)


def case_tenants(s, a, b):
    assert call(s, "POST", "/v1/tenants", s.admin_key, json={"name": "charlie"}).status_code == 201
    refused(call(s, "POST", "/v1/tenants", a.key, json={"name": "evil"}), b, (401, 403))


NO_ID = "takes no id of another tenant: nothing to isolate"


# Credentials made by the cases below, added to the final check of the logs.
MADE_SECRETS = []


def case_keys(s, a, b):
    made = call(s, "POST", "/v1/keys", b.key, json={"role": "viewer", "name": "bravo-viewer"})
    assert made.status_code in (200, 201), made.text
    key = made.json()
    MADE_SECRETS.append(key["key"])
    assert key["id"] in call(s, "GET", "/v1/keys", b.key).text
    listed = call(s, "GET", "/v1/keys", a.key)
    assert listed.status_code == 200 and key["id"] not in listed.text and "bravo-viewer" not in listed.text
    refused(call(s, "DELETE", f"/v1/keys/{key['id']}", a.key), b)
    assert call(s, "GET", f"/v1/assets/{b.asset}", key["key"]).status_code == 200


def case_audit(s, a, b):
    made = call(s, "POST", "/v1/keys", b.key, json={"role": "viewer", "name": "bravo-audited"})
    assert made.status_code in (200, 201), made.text
    MADE_SECRETS.append(made.json()["key"])
    kid = made.json()["id"]
    assert kid in call(s, "GET", "/v1/audit", b.key).text
    seen = call(s, "GET", "/v1/audit", a.key)
    assert seen.status_code == 200 and kid not in seen.text and b.asset not in seen.text


def case_admin_jwks(s, a, b):
    assert call(s, "GET", "/v1/admin/jwks", s.admin_key).status_code == 200
    refused(call(s, "GET", "/v1/admin/jwks", b.key), b, status=(403,))


def case_tiers(s, a, b):
    path = f"/v1/assets/{b.asset}"
    assert call(s, "GET", f"{path}/lifecycle", b.key).status_code == 200
    refused(call(s, "GET", f"{path}/lifecycle", a.key), b)
    refused(call(s, "PUT", f"{path}/tags", a.key, json={"tags": ["x"]}), b)
    refused(call(s, "POST", f"{path}/tier", a.key, json={"tier": "hot"}), b)
    refused(call(s, "POST", f"{path}/restore", a.key, json={"days": 1}), b)
    assert call(s, "PUT", f"{path}/tags", b.key, json={"tags": ["bravo-tag"]}).status_code == 200
    assert "bravo-tag" in call(s, "GET", f"{path}/lifecycle", b.key).text


def case_usage(s, a, b):
    mine = call(s, "GET", "/v1/usage", b.key)
    assert mine.status_code == 200 and "tiers" in mine.json() and "quotas" in mine.json()
    other = call(s, "GET", "/v1/usage", a.key)
    assert other.status_code == 200 and b.asset not in other.text


def case_lifecycle(s, a, b):
    rules = {"rules": [{"after": "3650d", "since": "upload", "tag": "bravo-rule", "action": "warm"}]}
    assert call(s, "PUT", "/v1/lifecycle", b.key, json=rules).status_code == 200
    assert "bravo-rule" in call(s, "GET", "/v1/lifecycle", b.key).text
    theirs = call(s, "GET", "/v1/lifecycle", a.key)
    assert theirs.status_code == 200 and "bravo-rule" not in theirs.text


def case_ops_lifecycle(s, a, b):
    ok = call(s, "POST", "/v1/ops/lifecycle/run", s.admin_key, json={"dry_run": True})
    assert ok.status_code == 200, ok.text
    refused(call(s, "POST", "/v1/ops/lifecycle/run", b.key, json={"dry_run": True}), b,
            status=(403,))


def case_ops(s, a, b):
    ok = call(s, "POST", "/v1/ops/usage/check", s.admin_key, json={})
    assert ok.status_code == 200, ok.text
    refused(call(s, "POST", "/v1/ops/usage/check", b.key, json={}), b, status=(403,))
    refused(call(s, "POST", "/v1/ops/migrations", b.key,
                 json={"from": "hot", "to": "hot", "dry_run": True}), b, status=(403,))


ROUTE_CASES = {
    "healthz": NO_ID, "readyz": NO_ID, "metrics": NO_ID, "other": NO_ID,
    "tus_create": "creates the caller's own upload (B's uploads: tus_patch/head/other)",
    "raw_upload": "creates the caller's own asset",
    "tenants": case_tenants,
    "tus_patch": case_tus_patch, "tus_head": case_tus_head, "tus_other": case_tus_other,
    "assets": case_assets, "asset_source": case_asset_source,
    "asset_playback": case_asset_playback, "jobs": case_jobs, "webhooks": case_webhooks,
    "devices": case_devices, "live": case_live, "live_ingest": case_live_ingest,
    "preset": case_preset, "play_playlist": case_play_playlist,
    "play_segment": case_play_segment, "watch_page": case_watch_page,
    "player_file": case_player_file, "edge_verify": case_edge_verify, "edge": case_edge,
    "keys": case_keys, "audit": case_audit, "admin_jwks": case_admin_jwks, "tiers": case_tiers,
    "usage": case_usage, "lifecycle": case_lifecycle, "ops_lifecycle": case_ops_lifecycle,
    "ops": case_ops,
}


def route_table():
    out = subprocess.run([BIN, "routes"], capture_output=True, text=True, check=True, timeout=30)
    return [l.split("\t")[0] for l in out.stdout.splitlines() if l]


def test_every_route_has_an_isolation_case():
    labels = route_table()
    assert len(labels) >= 20, labels
    assert set(labels) == set(ROUTE_CASES), (
        f"routes without a case: {set(labels) - set(ROUTE_CASES)}; "
        f"cases without a route: {set(ROUTE_CASES) - set(labels)}")


@pytest.mark.parametrize("label", sorted(k for k, v in ROUTE_CASES.items() if callable(v)))
def test_tenant_isolation(world, label):
    s, a, b, _ = world
    ROUTE_CASES[label](s, a, b)


# ---- limits ----

def raw_exchange(port, data, timeout=10):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        try:
            c.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        got = b""
        try:
            while chunk := c.recv(65536):
                got += chunk
                if b"\r\n\r\n" in got:
                    break
        except ConnectionResetError:
            pass
        return got


def test_bodies_over_their_class_limit_get_413(world):
    s, a, b, _ = world
    # Admin: a JSON body under the limit works, over it is refused before it is read.
    assert call(s, "POST", "/v1/tenants", s.admin_key, json={"name": "small"}).status_code == 201
    r = call(s, "POST", "/v1/tenants", s.admin_key, data=b"{" + b" " * 70000 + b"}",
             headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text
    # Playback: a GET carrying a body.
    assert requests.get(a.play_url, timeout=10).status_code == 200
    r = requests.get(a.play_url, data=b"x" * 5000, timeout=10)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text
    # Ingest: a raw upload declared over uploads.max_size, and a tus upload too long.
    r = call(s, "POST", "/v1/assets", a.key, data=b"\x00" * (9 << 20), headers={"Content-Type": "video/mp4"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text
    r = call(s, "POST", "/v1/uploads/", a.key, headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(9 << 20)})
    assert r.status_code == 413, r.text


def test_oversized_headers_are_refused_and_slow_headers_cut_off(world):
    s, a, b, _ = world
    ok = raw_exchange(s.port, f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {'p' * 4000}\r\n\r\n".encode())
    assert ok.startswith(b"HTTP/1.1 200"), ok[:100]
    big = raw_exchange(s.port, f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {'p' * 100000}\r\n\r\n".encode())
    assert big == b"" or big.split(b" ")[1] in (b"431", b"400"), big[:100]
    # A head that never ends: closed within the header timeout (2 s), not held open.
    with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.time()
        got = b""
        while chunk := c.recv(4096):
            got += chunk
        assert time.time() - started < 15, "the slow-header connection was not cut off"
        assert b" 200 " not in got


TRAVERSAL = ["..", "%2e%2e", "%2E%2E", "..%2f..", "%2f", "..%2F..%2F..%2Fetc%2Fpasswd", "a%00b",
             "%00", "%c0%ae%c0%ae", "%c0%af", "..%5c..", "..\\..", "%252e%252e", "x" * 3000]


def templates(a, b):
    """Every route with a path parameter, as (method, key, [segments]), the parameter
    positions marked by their index."""
    play = ["v1", "play", a.id, a.asset, a.token, "master.m3u8"]
    return [
        ("GET", a.key, ["v1", "assets", a.asset], [2]),
        ("GET", a.key, ["v1", "assets", a.asset, "source"], [2]),
        ("POST", a.key, ["v1", "assets", a.asset, "playback"], [2]),
        ("POST", a.key, ["v1", "assets", a.asset, "renditions", a.rendition, "rerun"], [2, 4]),
        ("GET", a.key, ["v1", "jobs", a.job], [2]),
        ("POST", a.key, ["v1", "jobs", a.job, "cancel"], [2]),
        ("POST", a.key, ["v1", "jobs", a.job, "retry"], [2]),
        ("GET", a.key, ["v1", "devices", a.device], [2]),
        ("DELETE", a.key, ["v1", "devices", a.device], [2]),
        ("POST", a.key, ["v1", "devices", a.device, "revoke"], [2]),
        ("DELETE", a.key, ["v1", "webhooks", a.webhook], [2]),
        ("GET", a.key, ["v1", "live", a.live], [2]),
        ("POST", a.key, ["v1", "live", a.live, "end"], [2]),
        ("POST", a.key, ["v1", "live", a.live, "playback"], [2]),
        ("PUT", None, ["v1", "live", a.live, "ingest", a.ingest_token, "index.m3u8"], [2, 4, 5]),
        ("HEAD", a.key, ["v1", "uploads", a.upload], [2]),
        ("PATCH", a.key, ["v1", "uploads", a.upload], [2]),
        ("GET", None, play, [2, 3, 4, 5]),
        ("GET", None, play[:5] + ["master.watch.html"], [2, 3, 4, 5]),
        ("GET", None, play[:5] + [a.rendition, "index.m3u8"], [5, 6]),
        ("GET", "ADMIN", ["v1", "edge", "objects", a.id, a.asset, "master.m3u8"], [3, 4, 5]),
    ]


def test_path_traversal_in_every_path_parameter(world):
    s, a, b, _ = world
    answers = 0
    for method, key, segs, positions in templates(a, b):
        if key == "ADMIN":
            key = s.admin_key
        for pos in positions:
            for payload in TRAVERSAL + [f"..%2f..%2f{b.id}", f"..%2f{b.asset}", f"../../{b.asset}"]:
                bad = list(segs)
                bad[pos] = payload
                path = "/" + "/".join(bad)
                req = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                if key:
                    req += f"Authorization: Bearer {key}\r\n"
                req += "Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
                req += "Content-Length: 0\r\n\r\n"
                got = raw_exchange(s.port, req.encode())
                assert got.startswith(b"HTTP/1.1 "), (path, got[:200])
                status = int(got.split(b" ")[1])
                # Never served, never a server error: a 4xx (or a no-op 204 on an empty PATCH
                # is impossible: offsets and ids are checked first).
                assert 400 <= status < 500, (method, path, got[:300])
                for p in b.private:
                    # (an id the caller sent may be echoed back: that tells it nothing)
                    assert p in path or p.encode() not in got, (path, p)
                answers += 1
    assert answers > 300


# ---- 10,000 malformed requests ----

def test_ten_thousand_malformed_requests_get_no_5xx_and_no_hang(world):
    s, a, b, _ = world
    seed = int(os.environ.get("SLUICE_FUZZ_SEED", "1207"))
    n = int(os.environ.get("SLUICE_FUZZ_REQUESTS", "10000"))
    play_a = urlparse(a.play_url).path
    ctx = {
        "port": s.port, "key": a.key, "other_key": b.key,
        "paths": [
            "/healthz", "/readyz", "/metrics", "/v1/tenants", "/v1/uploads/", f"/v1/uploads/{a.upload}",
            "/v1/assets", f"/v1/assets/{a.asset}", f"/v1/assets/{a.asset}/source",
            f"/v1/assets/{a.asset}/playback", f"/v1/assets/{a.asset}/renditions/{a.rendition}/rerun",
            "/v1/devices", f"/v1/devices/{a.device}", f"/v1/devices/{a.device}/revoke",
            "/v1/webhooks", f"/v1/webhooks/{a.webhook}", "/v1/jobs", f"/v1/jobs/{a.job}",
            f"/v1/jobs/{a.job}/cancel", f"/v1/jobs/{a.job}/retry", "/v1/live", f"/v1/live/{a.live}",
            f"/v1/live/{a.live}/end", f"/v1/live/{a.live}/playback",
            f"/v1/live/{a.live}/ingest/{a.ingest_token}/index.m3u8",
            f"/v1/live/{a.live}/ingest/{a.ingest_token}/seg0.ts", "/v1/preset", play_a,
            play_a.replace("master.m3u8", f"{a.rendition}/index.m3u8"),
            play_a.replace("master.m3u8", "master.watch.html"), "/v1/edge/verify", "/v1/edge/admin",
            f"/v1/edge/objects/{a.id}/{a.asset}/master.m3u8", f"/v1/play/{b.id}/{b.asset}/{a.token}/master.m3u8",
        ],
    }
    reqs = list(malformed.requests_for(seed, n, ctx))
    started = time.time()
    failures = []
    seen = {}

    def run(i):
        try:
            statuses, took = malformed.send(s.port, reqs[i], deadline_s=20)
        except Exception as e:  # noqa: BLE001 - every failure is collected and reported
            return (i, repr(e)), []
        if any(st >= 500 for st in statuses):
            return (i, f"status {statuses}"), statuses
        return None, statuses

    with ThreadPoolExecutor(max_workers=16) as pool:
        for r, statuses in pool.map(run, range(n)):
            if r:
                failures.append(r)
            for st in statuses or [None]:
                seen[st] = seen.get(st, 0) + 1
    elapsed = time.time() - started
    print(f"seed {seed}: {n} requests in {elapsed:.1f} s, answers by status: {sorted(seen.items(), key=str)}")
    # The generator reaches the handlers, not only hyper's parser: many answers, of many kinds.
    answered = sum(v for k, v in seen.items() if k is not None)
    assert answered > n // 3 and len(seen) >= 8, seen
    detail = [(i, why, reqs[i][:300]) for i, why in failures[:5]]
    assert not failures, f"seed {seed}: {len(failures)} of {n} failed, e.g. {detail}\n{s.logs()[-3000:]}"
    assert elapsed < 150, f"{n} requests took {elapsed:.0f} s"
    assert s.alive()
    assert requests.get(f"{s.url}/healthz", timeout=10).status_code == 200


# ---- metrics and logs ----

def test_metric_labels_are_bounded(world):
    s, a, b, _ = world
    assert requests.get(a.play_url, timeout=10).status_code == 200
    assert call(s, "GET", f"/v1/assets/{b.asset}", a.key).status_code == 404
    text = requests.get(f"{s.url}/metrics", timeout=10).text
    import re
    values = set(re.findall(r'[a-z_]+="([^"]*)"', text))
    assert values, text[:500]
    ids = [v for v in values if re.fullmatch(r"[0-9A-Za-z_-]{20,}", v) or any(p in v for p in a.private + b.private)]
    assert not ids, ids
    for name in ["sluice_http_server_requests_total", "sluice_http_server_request_duration_seconds",
                 "sluice_http_server_response_body_bytes_total", "sluice_http_server_request_body_bytes_total"]:
        assert name in text, name
    assert 'status_class="4xx"' in text and 'class="playback"' in text
    # The queue's depth by kind (refreshed every 5 s by the serving process).
    deadline = time.time() + 20
    while 'sluice_queue_jobs{kind="transcode",status="queued"}' not in text:
        assert time.time() < deadline, "no sluice_queue_jobs gauge"
        time.sleep(0.5)
        text = requests.get(f"{s.url}/metrics", timeout=10).text


def test_an_idle_keep_alive_connection_is_closed(tmp_path):
    s = Sluice(tmp_path / "data", config_text="[gateway]\nidle_timeout_s = 1\nheader_read_timeout_s = 30\n")
    try:
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            c.sendall(req)
            got = c.recv(4096)
            assert got.startswith(b"HTTP/1.1 200"), got
            # Kept alive: a second request on the same connection is answered.
            c.sendall(req)
            assert c.recv(4096).startswith(b"HTTP/1.1 200")
            started = time.time()
            assert c.recv(4096) == b"", "the idle connection got bytes instead of a close"
            assert time.time() - started < 10
    finally:
        s.stop()


def test_zz_no_key_or_token_in_the_logs(world):
    """Last in the module: the server's whole log for the suite never shows a secret."""
    s, a, b, secrets = world
    log = s.log_path.read_text(errors="replace")
    lines = [json.loads(l) for l in log.splitlines() if l.startswith("{")]
    answered = [l for l in lines if l.get("fields", {}).get("message") == "answered"]
    assert len(answered) > 1000, "the suite's requests were not logged"
    assert all("http.route" in l["fields"] and "request_id" in l["fields"] for l in answered)
    for secret in secrets + MADE_SECRETS:
        assert secret and secret not in log, f"a secret of the suite is in the log ({secret[:6]}…)"
