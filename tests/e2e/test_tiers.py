"""Storage tiers end to end: a local hot store and warm and cold stores on a real Garage
(scripts/test.sh starts it and exports SLUICE_TEST_S3_*). Assets move to warm and still
play, archive to cold and answer 409 `archived`, come back with a restore, and the usage
counters equal the bytes actually listed in each store. Lifecycle rules plan (dry run) and
act (run)."""

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from conftest import Sluice, wait_for

S3_VARS = ["ENDPOINT", "BUCKET", "REGION", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY"]


def s3_env():
    missing = [f"SLUICE_TEST_S3_{v}" for v in S3_VARS if not os.environ.get(f"SLUICE_TEST_S3_{v}")]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not set: the tier tests need a real S3-compatible server "
            "(scripts/test.sh starts Garage with scripts/garage.sh)"
        )
    return {v: os.environ[f"SLUICE_TEST_S3_{v}"] for v in S3_VARS}


@pytest.fixture(scope="module")
def tiers(workdir):
    s3 = s3_env()
    prefix = f"e2e-tiers/{uuid.uuid4().hex}"
    config = f"""
[uploads]
sweep_interval_s = 1

[gateway]
cache_ttl_ms = 200

[transcode]
ladder = [{{name = "180p", height = 180, video_bitrate = 300000}}]

# Warm and cold on Garage. No bucket lifecycle rule may delete or transition these objects
# (only abort incomplete multipart uploads): Sluice's metadata tracks every copy.
[storage.stores.warm]
url = "s3://{s3['BUCKET']}/{prefix}/warm"
endpoint = "{s3['ENDPOINT']}"
region = "{s3['REGION']}"
access_key_id = "{s3['ACCESS_KEY_ID']}"
allow_http = true
storage_class = "STANDARD_IA"

[storage.stores.cold]
url = "s3://{s3['BUCKET']}/{prefix}/cold"
endpoint = "{s3['ENDPOINT']}"
region = "{s3['REGION']}"
access_key_id = "{s3['ACCESS_KEY_ID']}"
allow_http = true
storage_class = "GLACIER_IR"

[storage.tiers]
warm = "warm"
cold = "cold"
"""
    env = {
        # The secrets come from the environment, not the file (the documented way).
        "SLUICE_STORE_WARM_SECRET_ACCESS_KEY": s3["SECRET_ACCESS_KEY"],
        "SLUICE_STORE_COLD_SECRET_ACCESS_KEY": s3["SECRET_ACCESS_KEY"],
    }
    s = Sluice(workdir / "tiers-data", config_text=config, env=env)
    s.s3 = s3
    s.prefix = prefix
    yield s
    s.stop()


def listed_s3(s, store, tenant):
    """(bytes, objects) rclone lists under the store's prefix for the tenant."""
    s3 = s.s3
    env = dict(
        os.environ,
        RCLONE_S3_PROVIDER="Other",
        RCLONE_S3_ENDPOINT=s3["ENDPOINT"],
        RCLONE_S3_ACCESS_KEY_ID=s3["ACCESS_KEY_ID"],
        RCLONE_S3_SECRET_ACCESS_KEY=s3["SECRET_ACCESS_KEY"],
        RCLONE_S3_REGION=s3["REGION"],
        RCLONE_CONFIG="/dev/null",
    )
    env.pop("AWS_CA_BUNDLE", None)
    out = subprocess.run(
        ["rclone", "lsjson", "-R", "--files-only",
         f":s3:{s3['BUCKET']}/{s.prefix}/{store}/tenants/{tenant}/"],
        env=env, capture_output=True, timeout=60,
    )
    if out.returncode != 0 and b"directory not found" in out.stderr:
        return (0, 0)
    assert out.returncode == 0, out.stderr.decode()
    items = json.loads(out.stdout or b"[]")
    return (sum(i["Size"] for i in items), len(items))


def listed_hot(s, tenant):
    root = s.data_dir / "hot" / "tenants" / tenant
    files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    return (sum(p.stat().st_size for p in files), len(files))


def api(s, key, method, path, body=None):
    return requests.request(
        method, f"{s.url}{path}", json=body,
        headers={"Authorization": f"Bearer {key}"}, timeout=30,
    )


def tenant_of(s, key):
    r = api(s, key, "GET", "/v1/usage")
    assert r.status_code == 200, r.text
    return r.json()


def wait_job(s, key, job_id, timeout=120):
    def done():
        j = api(s, key, "GET", f"/v1/jobs/{job_id}").json()
        return j if j["status"] in ("succeeded", "failed", "dead") else None
    return wait_for(done, timeout, f"job {job_id}")


def play(s, key, asset):
    """Fetch the master playlist, a variant playlist and its first segment: their statuses
    (the first that is not 200, or 200)."""
    r = api(s, key, "POST", f"/v1/assets/{asset}/playback")
    assert r.status_code == 200, r.text
    url = r.json()["url"]
    m = requests.get(url, timeout=30)
    if m.status_code != 200:
        return m
    variant = next(line for line in m.text.splitlines() if line and not line.startswith("#"))
    base = url.rsplit("/", 1)[0]
    v = requests.get(f"{base}/{variant}", timeout=30)
    if v.status_code != 200:
        return v
    seg = next(line for line in v.text.splitlines() if line and not line.startswith("#"))
    vbase = f"{base}/{variant}".rsplit("/", 1)[0]
    return requests.get(f"{vbase}/{seg}", timeout=30)


def usage_matches_stores(s, key, tenant):
    u = api(s, key, "GET", "/v1/usage").json()
    got = {t: (u["tiers"][t]["bytes"], u["tiers"][t]["objects"]) for t in ("hot", "warm", "cold")}
    want = {
        "hot": listed_hot(s, tenant),
        "warm": listed_s3(s, "warm", tenant),
        "cold": listed_s3(s, "cold", tenant),
    }
    return got == want, got, want


def tenant_id_of(s, key, asset):
    # The tenant id is the path segment of the playback URL after /v1/play/.
    r = api(s, key, "POST", f"/v1/assets/{asset}/playback")
    return r.json()["url"].split("/v1/play/", 1)[1].split("/", 1)[0]


def test_warm_plays_cold_is_archived_until_restored_and_usage_is_exact(tiers, workdir):
    s = tiers
    key, asset = s.ready_asset(workdir, "tiers-a", seconds=4)
    tenant = tenant_id_of(s, key, asset)
    assert play(s, key, asset).status_code == 200
    ok, got, want = usage_matches_stores(s, key, tenant)
    assert ok and got["hot"][0] > 0, (got, want)

    # Already hot: 409. Unknown tier: 400. Another tenant: 404.
    assert api(s, key, "POST", f"/v1/assets/{asset}/tier", {"tier": "hot"}).status_code == 409
    assert api(s, key, "POST", f"/v1/assets/{asset}/tier", {"tier": "tepid"}).status_code == 400
    other = s.tenant("tiers-other")["api_key"]
    r = api(s, other, "POST", f"/v1/assets/{asset}/tier", {"tier": "warm"})
    assert r.status_code == 404, r.text

    # To warm: a job, then it plays from Garage; nothing of it is left in the hot store.
    r = api(s, key, "POST", f"/v1/assets/{asset}/tier", {"tier": "warm"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "tier" and job["status"] in ("queued", "running"), job
    assert api(s, other, "GET", f"/v1/jobs/{job['id']}").status_code == 404
    done = wait_job(s, key, job["id"])
    assert done["status"] == "succeeded", done
    res = done["result"]
    assert res["objects_copied"] == got["hot"][1] and res["failed"] == [], res
    assert res["bytes_copied"] == got["hot"][0], res
    assert listed_hot(s, tenant) == (0, 0)
    time.sleep(0.3)
    assert play(s, key, asset).status_code == 200
    ok, got, want = usage_matches_stores(s, key, tenant)
    assert ok and got["warm"][0] == res["bytes_copied"], (got, want)

    # Archive: 409 archived with how to restore.
    r = api(s, key, "POST", f"/v1/assets/{asset}/tier", {"tier": "cold"})
    assert r.status_code == 202, r.text
    assert wait_job(s, key, r.json()["id"])["status"] == "succeeded"
    time.sleep(0.3)
    refused = play(s, key, asset)
    assert refused.status_code == 409, refused.text
    err = refused.json()["error"]
    assert err["code"] == "archived" and f"/v1/assets/{asset}/restore" in err["message"], err
    ok, got, want = usage_matches_stores(s, key, tenant)
    assert ok and got["warm"] == (0, 0) and got["cold"][0] > 0, (got, want)

    # Restore: bounded days, then it plays from a restored hot copy; cold stays.
    for bad in (0, 366, "x"):
        r = api(s, key, "POST", f"/v1/assets/{asset}/restore", {"days": bad})
        assert r.status_code == 400, r.text
    r = api(s, key, "POST", f"/v1/assets/{asset}/restore", {"days": 3})
    assert r.status_code == 202, r.text
    assert r.json()["kind"] == "restore"
    assert wait_job(s, key, r.json()["id"])["status"] == "succeeded"
    time.sleep(0.3)
    assert play(s, key, asset).status_code == 200
    x = api(s, key, "GET", f"/v1/assets/{asset}/lifecycle").json()
    restored = [c for c in x["copies"] if c["state"] == "restored"]
    assert len(restored) == 1 and restored[0]["tier"] == "hot" and restored[0]["expires_at"], x
    ok, got, want = usage_matches_stores(s, key, tenant)
    assert ok and got["hot"] == got["cold"], (got, want)
    # Restoring again extends the same copy (nothing copied).
    r = api(s, key, "POST", f"/v1/assets/{asset}/restore", {"days": 5})
    again = wait_job(s, key, r.json()["id"])
    assert again["status"] == "succeeded" and again["result"]["objects_copied"] == 0, again
    x2 = api(s, key, "GET", f"/v1/assets/{asset}/lifecycle").json()
    later = [c for c in x2["copies"] if c["state"] == "restored"][0]["expires_at"]
    assert later > restored[0]["expires_at"], (later, restored)
    assert s.alive(), s.logs()


def test_lifecycle_dry_run_plans_and_run_acts(tiers, workdir):
    s = tiers
    key, keep = s.ready_asset(workdir, "tiers-life", seconds=3)
    tenant = tenant_id_of(s, key, keep)
    # A second asset of the same tenant, tagged for expiry.
    from conftest import make_clip
    clip = make_clip(Path(workdir) / "tiers-life-2.mp4", seconds=3, size="320x180")
    temp = s.tus_upload(key, clip)
    assert s.wait_asset(key, temp)["status"] == "ready"

    bad = api(s, key, "PUT", "/v1/lifecycle", {"rules": [{"after": "3 weeks", "action": "cold"}]})
    assert bad.status_code == 400 and "after" in bad.json()["error"]["message"], bad.text
    rules = {"rules": [
        {"after": "0s", "since": "upload", "action": "warm"},
        {"after": "0s", "tag": "temp", "action": "expire"},
        {"after": "30d", "since": "last_view", "action": "cold"},
    ]}
    r = api(s, key, "PUT", "/v1/lifecycle", rules)
    assert r.status_code == 200 and r.json()["source"] == "tenant", r.text
    assert api(s, key, "GET", "/v1/lifecycle").json()["rules"][1]["tag"] == "temp"
    assert api(s, key, "PUT", f"/v1/assets/{temp}/tags", {"tags": ["temp"]}).status_code == 200
    assert api(s, key, "PUT", f"/v1/assets/{temp}/tags", {"tags": ["a b"]}).status_code == 400

    x = api(s, key, "GET", f"/v1/assets/{temp}/lifecycle").json()
    assert x["decision"]["action"] == "expire" and x["decision"]["rule"] == 1, x
    assert x["bytes"] > 0

    # Tenants may not run lifecycle; the admin's dry run plans and changes nothing.
    assert api(s, key, "POST", "/v1/ops/lifecycle/run", {"dry_run": True}).status_code == 403
    r = api(s, s.admin_key, "POST", "/v1/ops/lifecycle/run", {"dry_run": True})
    assert r.status_code == 200, r.text
    plan = {p["asset"]: p for p in r.json()["plan"] if p["tenant"] == tenant}
    assert plan[keep]["from"] == "hot" and plan[keep]["to"] == "warm", plan
    assert plan[temp]["to"] == "expire" and plan[temp]["bytes"] == x["bytes"], plan
    assert "job" not in plan[keep]
    assert api(s, key, "GET", f"/v1/assets/{keep}/lifecycle").json()["tier"] == "hot"

    r = api(s, s.admin_key, "POST", "/v1/ops/lifecycle/run", {})
    assert r.status_code == 200, r.text
    acted = {p["asset"]: p for p in r.json()["plan"] if p["tenant"] == tenant}
    for p in acted.values():
        assert wait_job(s, key, p["job"])["status"] == "succeeded"
    assert api(s, key, "GET", f"/v1/assets/{temp}").status_code == 404
    after = api(s, key, "GET", f"/v1/assets/{keep}/lifecycle").json()
    assert after["tier"] == "warm" and after["decision"] is None, after
    time.sleep(0.3)
    assert play(s, key, keep).status_code == 200
    ok, got, want = usage_matches_stores(s, key, tenant)
    assert ok and got["hot"] == (0, 0), (got, want)
