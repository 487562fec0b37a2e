"""A store that goes down and comes back (docs/migration.md, "Store breaker").

A private Garage (scripts/garage.sh, its own ports) holds an asset moved there by a
migration. With Garage stopped, playing the asset answers 503 `store_unavailable` with
`Retry-After` in under 3 s (not the 30 s request deadline); with Garage resumed, the asset
plays again by itself (half-open probe). A migration submitted while Garage is down retries
with backoff and finishes once it is back, with counters equal to the rows and listings."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

from conftest import free_port, wait_for
from test_migration_crash import Rig, plays

sys.path.insert(0, str(Path(__file__).parent / "tools"))

ROOT = Path(__file__).resolve().parents[2]
GARAGE = str(ROOT / "scripts" / "garage.sh")


@pytest.fixture(scope="module")
def garage():
    d = Path(tempfile.mkdtemp(prefix="sluice-breaker-garage-"))
    out = subprocess.run(
        [GARAGE, "start", str(d), str(free_port()), str(free_port()), str(free_port())],
        capture_output=True, text=True, timeout=120,
    )
    if out.returncode != 0:
        pytest.fail(f"this test needs Garage (scripts/garage.sh install): {out.stderr}")
    env = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
    s3 = {k[len("SLUICE_TEST_S3_"):]: v for k, v in env.items()}
    yield d, s3
    subprocess.run([GARAGE, "stop", str(d)], timeout=60)
    shutil.rmtree(d, ignore_errors=True)


def garage_ctl(d, what):
    subprocess.run([GARAGE, what, str(d)], check=True, timeout=60)


@pytest.fixture(scope="module")
def rig(workdir, garage):
    _, s3 = garage
    r = Rig(workdir, s3)
    r.start()
    yield r
    if r.sluice.alive():
        r.sluice.stop()


def playback_urls(rig, key, asset_id):
    r = requests.post(
        f"{rig.sluice.url}/v1/assets/{asset_id}/playback",
        headers={"Authorization": f"Bearer {key}"}, json={}, timeout=10,
    )
    assert r.status_code == 200, r.text
    master = r.json()["url"]
    text = requests.get(master, timeout=10).text
    variant = master.rsplit("/", 1)[0] + "/" + next(l for l in text.splitlines() if l and not l.startswith("#"))
    vtext = requests.get(variant, timeout=10).text
    segment = variant.rsplit("/", 1)[0] + "/" + next(l for l in vtext.splitlines() if l and not l.startswith("#"))
    return master, variant, segment


def test_a_stopped_store_answers_503_fast_and_recovers_and_a_migration_finishes(rig, garage, workdir):
    gdir, _ = garage
    key, asset_id = rig.sluice.ready_asset(workdir, f"breaker{uuid.uuid4().hex[:6]}", seconds=4)
    wait_for(
        lambda: rig.db().execute("SELECT count(*) FROM asset_copies").fetchone()[0] >= 1,
        30, "the hot copy row",
    )
    job = rig.submit("hot", "g1", delete_source=True)
    from test_migration_crash import wait_job

    assert wait_job(rig, job["id"])["status"] == "succeeded"
    master, variant, segment = playback_urls(rig, key, asset_id)
    assert requests.get(segment, timeout=10).status_code == 200

    garage_ctl(gdir, "stop")
    try:
        time.sleep(1.5)  # the playback cache keeps objects one second
        for url in (segment, variant, segment, master, segment):
            t0 = time.monotonic()
            r = requests.get(url, timeout=30)
            took = time.monotonic() - t0
            assert r.status_code == 503, (r.status_code, r.text[:200])
            assert r.json()["error"]["code"] == "store_unavailable", r.text
            assert int(r.headers["Retry-After"]) >= 1
            assert took < 3.0, took
        # A migration started while the store is down waits for it, retrying.
        job = rig.submit("g1", "hot")
        time.sleep(3)
        assert rig.job(job["id"])["status"] == "running"
    finally:
        garage_ctl(gdir, "resume")
    wait_for(lambda: requests.get(segment, timeout=10).status_code == 200, 40, "playback to recover")
    plays(rig, key, asset_id)
    done = wait_job(rig, job["id"], timeout=120)
    assert done["status"] == "succeeded" and done["result"]["failed"] == [], done
    rig.check_invariants()


def test_a_hanging_store_is_cut_by_the_interactive_timeout(rig, garage, workdir):
    """A store that accepts connections and never answers (SIGSTOP): each read is cut
    after the interactive timeout, then the open breaker answers at once."""
    gdir, _ = garage
    key, asset_id = rig.sluice.ready_asset(workdir, f"hang{uuid.uuid4().hex[:6]}", seconds=4)
    job = rig.submit("hot", "g1")
    from test_migration_crash import wait_job

    assert wait_job(rig, job["id"])["status"] == "succeeded"
    _, variant, segment = playback_urls(rig, key, asset_id)
    pid = int((gdir / "garage.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(1.5)
        times = []
        for url in (segment, variant, segment, segment, segment):
            t0 = time.monotonic()
            r = requests.get(url, timeout=30)
            times.append(time.monotonic() - t0)
            assert r.status_code == 503 and "Retry-After" in r.headers, r.text[:200]
        assert max(times) < 3.0, times
        assert min(times[3:]) < 0.5, ("the open breaker answers at once", times)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: requests.get(segment, timeout=10).status_code == 200, 40, "recovery")
