"""Scale-out on PostgreSQL: two stateless gateways and a separate `sluice worker` share
one PostgreSQL (metadata + queue) and one storage directory. An upload started on one
gateway is finished on the other, a concurrent PATCH through the other gateway is refused
(423) without corrupting anything, the worker process transcodes the asset, and a playback
URL issued by one gateway plays through the other."""

import http.client
import os
import select
import signal
import subprocess
import time
import urllib.parse
import uuid

import pytest
import requests

from conftest import BIN, Sluice, make_clip, sha256, wait_for

ADMIN = "sk_admin_scaleout_test_key_0123456789"


def pg_database():
    admin = os.environ.get("SLUICE_TEST_PG_URL")
    assert admin, "SLUICE_TEST_PG_URL must point at PostgreSQL (scripts/test.sh starts one)"
    name = "e2e_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True, timeout=30)
    return admin.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="module")
def cluster(workdir):
    url = pg_database()
    shared = workdir / "shared"
    cfg = (
        f'database_url = "{url}"\n'
        f'[storage]\nhot_dir = "{shared / "hot"}"\nuploads_dir = "{shared / "uploads"}"\n'
        "[workers]\nin_process = false\nheartbeat_s = 1\n"
    )
    env = {"SLUICE_ADMIN_KEY": ADMIN}
    a = Sluice(workdir / "gw-a", config_text=cfg, env=env)
    b = Sluice(workdir / "gw-b", config_text=cfg, env=env)
    cfg_path = workdir / "worker.toml"
    cfg_path.write_text(cfg)
    log = open(workdir / "worker.log", "wb")
    worker = subprocess.Popen(
        [BIN, "worker", "--config", str(cfg_path), "--data-dir", str(workdir / "worker")],
        stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ, SLUICE_ADMIN_KEY=ADMIN),
    )
    yield a, b, worker
    worker.send_signal(signal.SIGTERM)
    worker.wait(30)
    log.close()
    a.stop()
    b.stop()


def test_gateways_continue_each_others_uploads(cluster, workdir):
    a, b, worker = cluster
    t = a.tenant("scale")
    key = t["api_key"]
    tus = {"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0"}
    patch = {**tus, "Content-Type": "application/offset+octet-stream"}
    clip = make_clip(workdir / "scale.mp4", seconds=6, size="640x360")
    data = clip.read_bytes()
    half = len(data) // 2

    r = requests.post(f"{a.url}/v1/uploads/", headers={**tus, "Upload-Length": str(len(data))}, timeout=10)
    assert r.status_code == 201, r.text
    asset_id = r.headers["Location"].rsplit("/", 1)[1]
    loc_a, loc_b = f"{a.url}/v1/uploads/{asset_id}", f"{b.url}/v1/uploads/{asset_id}"

    # First half through A, with a slow body: while it is in flight, a PATCH through B is
    # refused with 423 (one writer per upload across gateways).
    # A's request is driven by hand (chunked): its headers and first bytes go out, then it
    # pauses until B has been tried, so A's request surely holds the lease then. B probes
    # with an offset no request could write at (409 while the upload is free, 423 once A
    # holds it: nothing is written either way). A probe holds the lease for an instant
    # itself, so A's request may have arrived in that instant and been refused (423): it is
    # then started again. Once a probe sees 423, B tries a real write, refused too.
    step = max(half // 10, 1)
    host, port = urllib.parse.urlsplit(a.url).hostname, urllib.parse.urlsplit(a.url).port
    path = urllib.parse.urlsplit(loc_a).path

    def start_a():
        conn = http.client.HTTPConnection(host, port, timeout=60)
        conn.putrequest("PATCH", path)
        for k, v in {**patch, "Upload-Offset": "0", "Transfer-Encoding": "chunked"}.items():
            conn.putheader(k, v)
        conn.endheaders()
        send_chunk(conn, data[:step])
        return conn

    def send_chunk(conn, chunk):
        conn.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n")

    def refused_early(conn):
        """Has A's request been answered already (refused before its body was read)?"""
        if not select.select([conn.sock], [], [], 0)[0]:
            return False
        r = conn.getresponse()
        assert r.status == 423, (r.status, r.read())
        conn.close()
        return True

    conn_a = start_a()

    def probe_b():
        nonlocal conn_a
        r = requests.patch(loc_b, headers={**patch, "Upload-Offset": str(len(data) + 1)}, data=b"",
                           timeout=10)
        assert r.status_code in (409, 423), r.text
        if r.status_code == 423:
            return True
        if refused_early(conn_a):
            conn_a = start_a()
        return False

    try:
        wait_for(probe_b, 30, "A's PATCH to hold the upload's lease", interval=0.05)
        r = requests.patch(loc_b, headers={**patch, "Upload-Offset": "0"}, data=b"X" * 1000, timeout=10)
        assert r.status_code == 423, r.text
        assert r.json()["error"]["code"] == "upload_locked"
        for i in range(step, half, step):
            send_chunk(conn_a, data[i:min(i + step, half)])
        conn_a.send(b"0\r\n\r\n")
        r = conn_a.getresponse()
        assert r.status == 204 and r.getheader("Upload-Offset") == str(half), (r.status, r.read())
    finally:
        conn_a.close()

    # B knows the offset A committed, and finishes the upload.
    r = requests.head(loc_b, headers=tus, timeout=10)
    assert r.headers["Upload-Offset"] == str(half)
    r = requests.patch(loc_b, headers={**patch, "Upload-Offset": str(half)}, data=data[half:], timeout=30)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(len(data))

    # The separate worker process transcodes it; both gateways see the result.
    asset = a.wait_asset(key, asset_id, timeout=120)
    assert asset["status"] == "ready", (asset, open(workdir / "worker.log").read()[-3000:])
    assert b.asset(key, asset_id)["status"] == "ready"
    job = requests.get(f"{b.url}/v1/jobs/{asset['job_id']}", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
    assert job["worker_id"] and job["status"] == "succeeded"
    src = requests.get(f"{b.url}/v1/assets/{asset_id}/source", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert sha256(src.content) == sha256(data)

    # A URL signed by B plays through A (the signing secret is shared through the database).
    url = requests.post(f"{b.url}/v1/assets/{asset_id}/playback", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()["url"]
    via_a = url.replace(b.url, a.url)
    m = requests.get(via_a, timeout=10)
    assert m.status_code == 200 and m.text.startswith("#EXTM3U")
    variant = [l for l in m.text.splitlines() if l and not l.startswith("#")][0]
    pl = requests.get(urllib.parse.urljoin(via_a, variant), timeout=10)
    seg = [l for l in pl.text.splitlines() if l and not l.startswith("#")][0]
    s = requests.get(urllib.parse.urljoin(urllib.parse.urljoin(via_a, variant), seg), timeout=10)
    assert s.status_code == 200 and s.content[0] == 0x47
