"""Job lifecycle against the real binary: listing, cancellation and re-run, a worker killed
with SIGKILL mid-transcode, graceful release at shutdown, and durable retries with backoff
ending in `dead` — run by a separate `sluice worker` process sharing the data dir."""

import signal
import subprocess
import time
from datetime import datetime

import pytest
import requests

from conftest import BIN, Sluice, make_clip

FAST_LEASE = """
[workers]
heartbeat_s = 1
retry_base_s = 1
shutdown_grace_s = 1
"""


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def job(server, key, job_id):
    r = requests.get(f"{server.url}/v1/jobs/{job_id}", headers=auth(key), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def wait_job(server, key, job_id, pred, timeout=120, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        j = job(server, key, job_id)
        if pred(j):
            return j
        time.sleep(0.1)
    raise AssertionError(f"job {job_id}: {what} not reached in {timeout}s: {j}\n{server.logs()}")


def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def long_clip(workdir):
    # Long enough that a transcode runs for several seconds on 2 cores.
    return make_clip(workdir / "long.mp4", seconds=40, size="854x480", rate=30)


@pytest.fixture(scope="module")
def fast(workdir):
    s = Sluice(workdir / "data-jobs", config_text=FAST_LEASE)
    yield s
    s.stop()


def start_upload(server, tenant, clip):
    asset_id = server.tus_upload(tenant["api_key"], clip)
    a = server.asset(tenant["api_key"], asset_id)
    return asset_id, a["job_id"]


def test_cancel_running_job_then_rerun(fast, long_clip):
    t = fast.tenant("cancel")
    key = t["api_key"]
    asset_id, job_id = start_upload(fast, t, long_clip)
    j = wait_job(fast, key, job_id, lambda j: j["status"] == "running" and j["progress"] > 0.05,
                 what="running with progress")
    assert j["worker_id"] and j["attempts"] == 1 and j["eta_s"] is not None
    # How fast a cancel takes effect is measured in benches/latency.py; here only that it
    # does, well before the transcode would have ended by itself.
    r = requests.post(f"{fast.url}/v1/jobs/{job_id}/cancel", headers=auth(key), timeout=10)
    assert r.status_code == 202, r.text
    j = wait_job(fast, key, job_id, lambda j: j["status"] == "cancelled", timeout=30, what="cancelled")
    a = fast.asset(key, asset_id)
    assert a["status"] == "failed" and "cancel" in a["error"]
    # Cancelling again is a conflict; a re-run starts from scratch and completes.
    r = requests.post(f"{fast.url}/v1/jobs/{job_id}/cancel", headers=auth(key), timeout=10)
    assert r.status_code == 409
    r = requests.post(f"{fast.url}/v1/jobs/{job_id}/retry", headers=auth(key), timeout=10)
    assert r.status_code == 202, r.text
    assert r.json()["status"] in ("queued", "running")
    a = fast.wait_asset(key, asset_id)
    assert a["status"] == "ready", a
    j = job(fast, key, job_id)
    assert j["status"] == "succeeded" and j["attempts"] == 1
    # Listing by status.
    r = requests.get(f"{fast.url}/v1/jobs?status=succeeded", headers=auth(key), timeout=10)
    assert [x["id"] for x in r.json()["jobs"]] == [job_id]
    r = requests.get(f"{fast.url}/v1/jobs?status=bogus", headers=auth(key), timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"


def test_sigkill_mid_transcode_is_redone_and_published_once(workdir, long_clip):
    data = workdir / "data-kill"
    s = Sluice(data, config_text=FAST_LEASE)
    t = s.tenant("kill")
    key = t["api_key"]
    asset_id, job_id = start_upload(s, t, long_clip)
    wait_job(s, key, job_id, lambda j: j["status"] == "running" and j["progress"] > 0.1,
             what="running with progress")
    s.proc.send_signal(signal.SIGKILL)
    s.proc.wait()
    s.log.close()
    killed_at = time.time()
    s2 = Sluice(data, config_text=FAST_LEASE)
    try:
        a = s2.wait_asset(key, asset_id)
        assert a["status"] == "ready", a
        j = job(s2, key, job_id)
        assert j["status"] == "succeeded" and j["attempts"] == 2, j
        # Picked up again within a bounded lease, well under a minute.
        assert ts(j["started_at"]) - killed_at < 30, j
        # No staging leftovers, and exactly one published ladder.
        hot = data / "hot" / "tenants" / t["id"] / "assets" / asset_id
        assert not (hot / "staging").exists() or not any((hot / "staging").rglob("*"))
        assert sorted(p.name for p in (hot / "hls").iterdir()) == [
            "360p", "480p", "master.m3u8", "poster.jpg", "storyboard.jpg", "storyboard.vtt"]
    finally:
        s2.stop()


def test_graceful_shutdown_releases_without_burning_an_attempt(workdir, long_clip):
    data = workdir / "data-term"
    s = Sluice(data, config_text=FAST_LEASE)
    t = s.tenant("term")
    key = t["api_key"]
    asset_id, job_id = start_upload(s, t, long_clip)
    wait_job(s, key, job_id, lambda j: j["status"] == "running" and j["progress"] > 0.05,
             what="running with progress")
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(30) == 0, s.logs()
    s.log.close()
    s2 = Sluice(data, config_text=FAST_LEASE)
    try:
        a = s2.wait_asset(key, asset_id)
        assert a["status"] == "ready", a
        j = job(s2, key, job_id)
        # The interrupted run was given back: the successful run is attempt 1.
        assert j["status"] == "succeeded" and j["attempts"] == 1, j
    finally:
        s2.stop()


def test_transient_errors_retry_with_backoff_then_dead(workdir):
    data = workdir / "data-retry"
    cfg = FAST_LEASE + "in_process = false\n"
    s = Sluice(data, config_text=cfg)
    t = s.tenant("retry")
    key = t["api_key"]
    clip = make_clip(workdir / "retry.mp4", seconds=2, size="320x240")
    asset_id, job_id = start_upload(s, t, clip)
    assert job(s, key, job_id)["status"] == "queued"
    # Break the storage under the job: the source object disappears.
    src = data / "hot" / "tenants" / t["id"] / "assets" / asset_id / "source"
    src.unlink()
    cfg_path = data.parent / "retry-worker.toml"
    cfg_path.write_text(cfg)
    log = open(data.parent / "retry-worker.log", "wb")
    worker = subprocess.Popen([BIN, "worker", "--config", str(cfg_path), "--data-dir", str(data)],
                              stdout=subprocess.DEVNULL, stderr=log)
    try:
        seen_waiting = False
        deadline = time.time() + 60
        while time.time() < deadline:
            j = job(s, key, job_id)
            if j["status"] == "queued" and j["run_after"] and j["attempts"] >= 1:
                seen_waiting = True
                assert j["error"]  # the last error is kept while waiting
            if j["status"] == "dead":
                break
            time.sleep(0.1)
        assert j["status"] == "dead", j
        assert seen_waiting, "never saw the job waiting for its retry"
        assert j["attempts"] == 3
        assert "gave up after 3 attempts" in j["error"] and "not found" in j["error"]
        # Backoff: 1 s then 2 s (+ jitter) between the three attempts.
        assert ts(j["finished_at"]) - ts(j["created_at"]) >= 3.0, j
        a = s.asset(key, asset_id)
        assert a["status"] == "failed" and a["error"] == j["error"]
        r = requests.get(f"{s.url}/v1/jobs?status=dead", headers=auth(key), timeout=10)
        assert [x["id"] for x in r.json()["jobs"]] == [job_id]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        log.close()
        s.stop()
