"""Store migrations killed with SIGKILL in each state of the per-object machine, then left to
continue by themselves when `sluice serve` starts again (docs/migration.md).

One asset (a high-bitrate clip: a source of several 5 MiB parts, plus its HLS output)
travels local `hot` → g1 → g2 → g3 → g4 (four prefixes of a real Garage bucket), one
migration per crash point. The test-only hook `SLUICE_TEST_PAUSE_AT=POINT` makes the
process stop for good at that point and say so on stderr; the test then SIGKILLs it and
restarts it without the hook. After each migration: the job succeeded; every copy's
objects exist in its store with the recorded sizes; the per-tier counters equal the sum
of the copy rows; no multipart upload is left open in the bucket; the bytes sent again
after the crash are at most the parts in flight; the asset plays. scripts/test.sh starts
Garage and exports SLUICE_TEST_S3_*; without them this test fails rather than skips."""

import signal
import sqlite3
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from conftest import Sluice, make_clip, wait_for
from test_s3_hot_tier import s3_env

sys.path.insert(0, str(Path(__file__).parent / "tools"))
import s3list  # noqa: E402

PART = 5 << 20
CONCURRENCY = 2
STORES = ["g1", "g2", "g3", "g4"]


def config(s3, prefix):
    stores = "".join(
        f"""
[storage.stores.{name}]
url = "s3://{s3['BUCKET']}/{prefix}/{name}"
endpoint = "{s3['ENDPOINT']}"
region = "{s3['REGION']}"
access_key_id = "{s3['ACCESS_KEY_ID']}"
allow_http = true
"""
        for name in STORES
    )
    return f"""
{stores}
[ops]
part_size = {PART}
migrate_concurrency = {CONCURRENCY}

[transcode]
ladder = [{{name = "360p", height = 360, video_bitrate = 800000}}]
"""


def store_env(s3):
    return {f"SLUICE_STORE_{n.upper()}_SECRET_ACCESS_KEY": s3["SECRET_ACCESS_KEY"] for n in STORES}


class Rig:
    def __init__(self, workdir, s3):
        self.s3 = s3
        self.prefix = f"e2e-migrate/{uuid.uuid4().hex}"
        self.data = workdir / f"migrate-{uuid.uuid4().hex[:8]}"
        self.data.mkdir()
        self.config = config(s3, self.prefix)
        self.env = store_env(s3)
        self.sluice = None

    def start(self, pause_at=None):
        env = dict(self.env)
        if pause_at:
            env["SLUICE_TEST_PAUSE_AT"] = pause_at
        admin = getattr(self, "admin", None)
        if admin:
            env["SLUICE_ADMIN_KEY"] = admin
        self.sluice = Sluice(self.data / "data", config_text=self.config, env=env)
        self.admin = self.sluice.admin_key
        return self.sluice

    def kill(self):
        self.sluice.proc.send_signal(signal.SIGKILL)
        self.sluice.proc.wait(10)
        self.sluice.log.close()

    def db(self):
        return sqlite3.connect(self.data / "data" / "meta.db", timeout=10)

    def auth(self):
        return {"Authorization": f"Bearer {self.admin}"}

    def submit(self, src, dst, **extra):
        r = requests.post(
            f"{self.sluice.url}/v1/ops/migrations",
            json={"from": src, "to": dst, **extra},
            headers=self.auth(),
            timeout=10,
        )
        assert r.status_code == 202, r.text
        return r.json()

    def job(self, job_id):
        r = requests.get(f"{self.sluice.url}/v1/jobs/{job_id}", headers=self.auth(), timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def store_listing(self, store, prefix):
        """{key: size} of the objects under `prefix` in a store."""
        if store == "hot":
            root = self.data / "data" / "hot"
            return {
                str(p.relative_to(root)): p.stat().st_size
                for p in (root / prefix).rglob("*")
                if p.is_file()
            }
        full = f"{self.prefix}/{store}/"
        return {
            k[len(full):]: size
            for k, size in s3list.list_objects(self.s3, full + prefix).items()
        }

    def check_invariants(self):
        with self.db() as db:
            copies = db.execute(
                "SELECT tenant_id, asset_id, tier, store, state, bytes, objects FROM asset_copies"
            ).fetchall()
            usage = db.execute("SELECT tenant_id, tier, bytes, objects FROM tier_usage").fetchall()
        # Every copy's objects exist in its store with the recorded sizes.
        for tenant, asset, _tier, store, state, nbytes, nobjects in copies:
            listing = self.store_listing(store, f"tenants/{tenant}/assets/{asset}/")
            assert (sum(listing.values()), len(listing)) == (nbytes, nobjects), (
                store,
                state,
                listing,
            )
        # Counters equal the rows.
        sums = {}
        for tenant, _a, tier, _s, _st, nbytes, nobjects in copies:
            b, o = sums.get((tenant, tier), (0, 0))
            sums[(tenant, tier)] = (b + nbytes, o + nobjects)
        for tenant, tier, nbytes, nobjects in usage:
            assert sums.get((tenant, tier), (0, 0)) == (nbytes, nobjects), (tenant, tier, usage)
        # No multipart upload left open.
        assert s3list.list_multipart_uploads(self.s3, self.prefix + "/") == []
        return copies


def wait_paused(rig, point, timeout=180):
    wait_for(
        lambda: f"test hook: paused at {point}" in rig.sluice.log_path.read_text(errors="replace"),
        timeout,
        f"the migration to reach {point}",
        interval=0.2,
    )


def wait_job(rig, job_id, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        j = rig.job(job_id)
        if j["status"] in ("succeeded", "failed"):
            return j
        assert rig.sluice.alive(), rig.sluice.logs()
        time.sleep(0.3)
    raise AssertionError(f"migration {job_id} not finished: {rig.job(job_id)}\n{rig.sluice.logs()}")


def plays(rig, key, asset_id):
    r = requests.post(
        f"{rig.sluice.url}/v1/assets/{asset_id}/playback",
        headers={"Authorization": f"Bearer {key}"},
        json={},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    m = requests.get(r.json()["url"], timeout=10)
    assert m.status_code == 200 and m.text.startswith("#EXTM3U"), m.text[:200]


@pytest.fixture(scope="module")
def rig(workdir):
    s3 = s3_env()
    r = Rig(workdir, s3)
    r.start()
    yield r
    if r.sluice.alive():
        r.sluice.stop()


@pytest.fixture(scope="module")
def asset(rig, workdir):
    clip = make_clip(
        workdir / "migrate-clip.mp4",
        seconds=6,
        size="640x360",
        extra=("-vf", "noise=alls=80:allf=t+u", "-b:v", "20M", "-maxrate", "20M", "-bufsize", "8M"),
    )
    assert clip.stat().st_size > 2 * PART, clip.stat().st_size
    key = rig.sluice.tenant("migrator")["api_key"]
    asset_id = rig.sluice.tus_upload(key, clip)
    a = rig.sluice.wait_asset(key, asset_id)
    assert a["status"] == "ready", a
    wait_for(
        lambda: rig.db().execute("SELECT count(*) FROM asset_copies").fetchone()[0] == 1,
        30,
        "the hot copy row",
    )
    return key, asset_id


# (from, to, crash point, delete the source)
LEGS = [
    ("hot", "g1", "in_part", False),
    ("g1", "g2", "before_complete", False),
    ("g2", "g3", "after_complete", False),
    ("g3", "g4", "after_switch", True),
]


@pytest.mark.parametrize("src,dst,point,delete", LEGS, ids=[leg[2] for leg in LEGS])
def test_migration_killed_at_point_resumes_and_keeps_the_invariants(rig, asset, src, dst, point, delete):
    key, asset_id = asset
    # Restart with the hook armed, submit, wait for the pause, SIGKILL.
    rig.sluice.stop()
    rig.start(pause_at=point)
    before = rig.store_listing(src, "tenants/")
    job = rig.submit(src, dst, delete_source=delete)
    assert job["kind"] == "migration" and job["status"] in ("queued", "running"), job
    wait_paused(rig, point)
    rig.kill()
    # Start again without the hook: the job continues by itself.
    rig.start()
    done = wait_job(rig, job["id"])
    assert done["status"] == "succeeded", (done, rig.sluice.logs())
    result = done["result"]
    assert result["failed"] == [], result
    n = len(before)
    assert result["objects_copied"] + result["objects_skipped"] == n, (result, n)
    assert result["objects_verified"] == n
    assert result["bytes_copied"] == sum(before.values())
    # At most the parts in flight were sent twice: here the one part of the large object
    # that was sent but not checkpointed when the process was killed (parts of one object
    # go one after the other; the small objects had all finished meanwhile).
    resent = result["bytes_sent"] - result["bytes_copied"]
    assert resent == (PART if point == "in_part" else 0), result
    copies = rig.check_invariants()
    # The target copy is active, the source's is draining (or gone, deleted).
    states = {(c[3], c[4]) for c in copies}
    assert (dst, "active") in states, states
    if delete:
        assert not any(c[3] == src for c in copies), copies
        assert rig.store_listing(src, "tenants/") == {}
    else:
        assert (src, "draining") in states, states
    assert rig.store_listing(dst, "tenants/") == before
    plays(rig, key, asset_id)


def test_dry_run_answers_the_plan_and_changes_nothing(rig, asset):
    with rig.db() as db:
        before = db.execute("SELECT count(*) FROM migration_jobs").fetchone()[0]
    r = requests.post(
        f"{rig.sluice.url}/v1/ops/migrations",
        json={"from": "g4", "to": "g1", "dry_run": True},
        headers=rig.auth(),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    plan = r.json()
    listing = rig.store_listing("g4", "tenants/")
    assert (plan["objects"], plan["bytes"], plan["assets"]) == (len(listing), sum(listing.values()), 1)
    with rig.db() as db:
        assert db.execute("SELECT count(*) FROM migration_jobs").fetchone()[0] == before
    # Admin only; unknown stores are refused.
    key, _ = asset
    r = requests.post(
        f"{rig.sluice.url}/v1/ops/migrations",
        json={"from": "g4", "to": "g1"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert r.status_code == 403, r.text
    r = requests.post(
        f"{rig.sluice.url}/v1/ops/migrations",
        json={"from": "g4", "to": "../etc"},
        headers=rig.auth(),
        timeout=10,
    )
    assert r.status_code == 400 and r.json()["error"]["code"], r.text


def test_sluice_ops_migrate_follows_the_job_and_reports(rig, asset):
    import json
    import subprocess

    from conftest import BIN

    base = [BIN, "ops", "migrate", "--server", rig.sluice.url, "--key", rig.admin]
    plan = subprocess.run(
        base + ["--from", "g4", "--to", "g1", "--dry-run", "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert plan.returncode == 0, plan.stderr
    listing = rig.store_listing("g4", "tenants/")
    assert json.loads(plan.stdout)["objects"] == len(listing)
    run = subprocess.run(
        base + ["--from", "g4", "--to", "g1", "--delete-source", "--json"],
        capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, (run.stdout, run.stderr)
    job = json.loads(run.stdout)  # --json: the final job and nothing else
    assert job["status"] == "succeeded" and job["result"]["failed"] == [], job
    # g1 still held the bytes of the first leg's copy (draining): found in place, skipped.
    assert job["result"]["objects_skipped"] + job["result"]["objects_copied"] == len(listing)
    assert rig.store_listing("g4", "tenants/") == {}
    copies = rig.check_invariants()
    assert {(c[3], c[4]) for c in copies} >= {("g1", "active")}, copies
    assert not any(c[3] == "g4" for c in copies), copies
    # A failing job exits non-zero: an unknown store is refused.
    bad = subprocess.run(
        base + ["--from", "g4", "--to", "nowhere"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0 and "nowhere" in bad.stderr, bad.stderr


def test_sluice_ops_usage_check_finds_drift_and_repair_fixes_the_counters(rig, asset):
    import json
    import subprocess

    from conftest import BIN

    base = [BIN, "ops", "usage", "--check", "--json", "--server", rig.sluice.url, "--key", rig.admin]
    clean = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, (clean.stdout, clean.stderr)
    report = json.loads(clean.stdout)
    assert report["drift"] == [] and report["copies_checked"] >= 1, report
    # Counters off by some bytes (what a bug or a hand edit would leave).
    with rig.db() as db:
        db.execute("UPDATE tier_usage SET bytes = bytes + 12345")
    drifted = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert drifted.returncode == 1, drifted.stdout
    drift = json.loads(drifted.stdout)["drift"]
    assert drift and all(d["kind"] == "counters" for d in drift), drift
    assert all(d["recorded_bytes"] - d["expected_bytes"] == 12345 for d in drift), drift
    repaired = subprocess.run(base + ["--repair"], capture_output=True, text=True, timeout=120)
    assert repaired.returncode == 0 and json.loads(repaired.stdout)["repaired"] is True
    again = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and json.loads(again.stdout)["drift"] == [], again.stdout
    rig.check_invariants()
    # An object removed from a store behind Sluice's back shows as store drift (the
    # asset brought home to the local store first, where the test can remove a file).
    home = wait_job(rig, rig.submit("g1", "hot", delete_source=True)["id"])
    assert home["status"] == "succeeded", home
    with rig.db() as db:
        tenant, asset_id, store = db.execute(
            "SELECT tenant_id, asset_id, store FROM asset_copies WHERE state = 'active'"
        ).fetchone()
    assert store == "hot", store
    victim = next((rig.data / "data" / "hot" / f"tenants/{tenant}/assets/{asset_id}").rglob("*.ts"))
    victim.unlink()
    lost = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert lost.returncode == 1
    assert [d["kind"] for d in json.loads(lost.stdout)["drift"]] == ["store"], lost.stdout
    # A tenant key is refused.
    key, _ = asset
    refused = subprocess.run(
        [BIN, "ops", "usage", "--check", "--server", rig.sluice.url, "--key", key],
        capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode != 0 and "403" in refused.stderr, refused.stderr
