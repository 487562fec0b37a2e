"""The crash harness (crash_harness.py), bounded for CI: the real binary is SIGKILLed at
random points while tus and raw uploads, transcodes and a live push run, on the local hot
tier and on S3 (Garage); every invariant of the harness must hold afterwards. The seed is
printed, so a failing run can be replayed; `SLUICE_CRASH_KILLS` sets the number of kills
(default 20) for a longer run by hand."""

import os
import random
import uuid

import pytest

from crash_harness import Harness
from test_s3_hot_tier import s3_env

KILLS = int(os.environ.get("SLUICE_CRASH_KILLS", "20"))


def run(root, **kw):
    seed = int(os.environ.get("SLUICE_CRASH_SEED") or random.randrange(1 << 30))
    print(f"crash harness: seed {seed}, {KILLS} kills")
    result = Harness(root, KILLS, seed, **kw).run()
    print(f"crash harness: {result}")
    assert not result["violations"], f"seed {seed}: {result['violations']}"
    # The run did real work through the kills.
    assert result["tus"] > 0 and result["raw"] > 0 and result["live"] > 0, result


@pytest.mark.timeout(900)
def test_sigkill_at_random_points_local_tier(workdir):
    run(workdir / "crash-local")


@pytest.mark.timeout(900)
def test_sigkill_at_random_points_s3_tier(workdir):
    s3 = s3_env()
    config = f"""
[storage.s3]
endpoint = "{s3['ENDPOINT']}"
bucket = "{s3['BUCKET']}"
region = "{s3['REGION']}"
access_key_id = "{s3['ACCESS_KEY_ID']}"
allow_http = true
prefix = "crash/{uuid.uuid4().hex}"
part_size = {5 << 20}
"""
    run(workdir / "crash-s3", s3_config=config,
        s3_env={"SLUICE_S3_SECRET_ACCESS_KEY": s3["SECRET_ACCESS_KEY"]})
