"""`sluice serve` with a real S3-compatible store (Garage on loopback) as its hot tier: a
tuspy upload streams into multipart parts (PATCHes end mid-part, so tails are exercised),
the worker downloads the source from S3 and publishes HLS back to it, and playback and the
source download are served from the bucket. tus-js-client's `parallelUploads`
(concatenation: partials in their own multipart uploads, assembled into the final's
source) and `uploadLengthDeferred` work on the bucket too. scripts/test.sh starts Garage
and exports SLUICE_TEST_S3_*; without them these tests fail rather than skip."""

import os
import subprocess
import time
import urllib.parse
import uuid

from pathlib import Path

import pytest
import requests

from conftest import Sluice, ffprobe_json, make_clip, sha256

JS = Path(__file__).parent / "js"
S3_VARS = ["ENDPOINT", "BUCKET", "REGION", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY"]


def s3_env():
    missing = [f"SLUICE_TEST_S3_{v}" for v in S3_VARS if not os.environ.get(f"SLUICE_TEST_S3_{v}")]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not set: this test needs a real S3-compatible server "
            "(scripts/test.sh starts Garage with scripts/garage.sh)"
        )
    return {v: os.environ[f"SLUICE_TEST_S3_{v}"] for v in S3_VARS}


@pytest.fixture(scope="module")
def s3_server(workdir):
    s3 = s3_env()
    prefix = f"e2e/{uuid.uuid4().hex}"
    # The secret comes from the environment, not the file (the documented way).
    config = f"""
[storage.s3]
endpoint = "{s3['ENDPOINT']}"
bucket = "{s3['BUCKET']}"
region = "{s3['REGION']}"
access_key_id = "{s3['ACCESS_KEY_ID']}"
allow_http = true
prefix = "{prefix}"
part_size = {5 << 20}

[transcode]
ladder = [{{name = "360p", height = 360, video_bitrate = 800000}}]
"""
    s = Sluice(
        workdir / "s3-data",
        config_text=config,
        env={"SLUICE_S3_SECRET_ACCESS_KEY": s3["SECRET_ACCESS_KEY"]},
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def big_clip(workdir):
    """A clip of several 5 MiB parts (high bitrate)."""
    return make_clip(workdir / "s3clip.mp4", seconds=8, extra=("-b:v", "12M", "-maxrate", "12M", "-bufsize", "4M"))


def node(script, *args):
    out = subprocess.run(
        ["node", str(JS / script), *args], capture_output=True, text=True, timeout=300, cwd=JS
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def check_ready_source(server, key, asset_id, path):
    a = server.wait_asset(key, asset_id)
    assert a["status"] == "ready", (a, server.logs())
    assert a["size"] == path.stat().st_size
    r = requests.get(
        f"{server.url}/v1/assets/{asset_id}/source",
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert r.status_code == 200
    assert sha256(r.content) == sha256(path)
    # Nothing of the upload stayed on the local disk.
    assert not any((server.data_dir / "uploads").iterdir())


def test_tus_upload_to_playback_on_garage(s3_server, server, workdir, big_clip):
    local = server
    server = s3_server
    r = requests.get(f"{server.url}/readyz", timeout=10)
    assert r.status_code == 200, r.text
    # Uploaded in 2 MiB PATCHes.
    clip = big_clip
    size = clip.stat().st_size
    assert size > 11 << 20, size
    t = server.tenant("s3")
    started = time.time()
    asset_id = server.tus_upload(t["api_key"], clip, chunk_size=2 << 20)
    upload_s = time.time() - started
    print(f"\nS3 tus upload of {size / 2**20:.1f} MiB in 2 MiB PATCHes: {upload_s:.2f}s "
          f"({size / 2**20 / upload_s:.1f} MiB/s)")
    # The same upload into the local hot tier, for comparison (a figure, not a check).
    lt = local.tenant("local-compare")
    started = time.time()
    local.tus_upload(lt["api_key"], clip, chunk_size=2 << 20)
    local_s = time.time() - started
    print(f"local tus upload of the same file: {local_s:.2f}s ({size / 2**20 / local_s:.1f} MiB/s)")
    a = server.wait_asset(t["api_key"], asset_id)
    assert a["status"] == "ready", (a, server.logs())
    assert [r["name"] for r in a["renditions"]] == ["360p"]

    # Nothing lives on the local disk: the hot tier is the bucket.
    hot = server.data_dir / "hot"
    assert not hot.exists() or not any(hot.rglob("*")), list(hot.rglob("*"))
    uploads = server.data_dir / "uploads"
    assert not any(uploads.iterdir())

    # The original bytes, exactly.
    r = requests.get(
        f"{server.url}/v1/assets/{asset_id}/source",
        headers={"Authorization": f"Bearer {t['api_key']}"},
        timeout=60,
    )
    assert r.status_code == 200
    assert len(r.content) == size
    assert sha256(r.content) == sha256(clip)

    # Playback from the bucket, checked by ffprobe through the signed URL.
    url = requests.post(
        f"{server.url}/v1/assets/{asset_id}/playback",
        headers={"Authorization": f"Bearer {t['api_key']}"},
        timeout=10,
    ).json()["url"]
    info = ffprobe_json("-show_entries", "stream=codec_type,codec_name,width,height:format=duration", url)
    kinds = {(s["codec_type"], s["codec_name"]) for s in info["streams"]}
    assert ("video", "h264") in kinds and ("audio", "aac") in kinds, info
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (640, 360)
    assert abs(float(info["format"]["duration"]) - 8) <= 0.5
    # A segment with a Range request, as players and CDNs send.
    seg = urllib.parse.urljoin(url, "360p/seg_00000.ts")
    full = requests.get(seg, timeout=10)
    assert full.status_code == 200 and len(full.content) > 1000
    part = requests.get(seg, headers={"Range": "bytes=100-199"}, timeout=10)
    assert part.status_code == 206 and part.content == full.content[100:200]


def test_tus_js_client_parallel_uploads_on_garage(s3_server, big_clip):
    """Three partials of about 4 MiB each stream into their own multipart uploads; the final
    is assembled into 5 MiB parts that straddle them."""
    server = s3_server
    t = server.tenant("s3-parallel")
    url = node("upload-parallel.mjs", f"{server.url}/v1/uploads/", t["api_key"], str(big_clip), "3")
    h = {"Authorization": f"Bearer {t['api_key']}", "Tus-Resumable": "1.0.0"}
    head = requests.head(url, headers=h, timeout=5)
    assert head.status_code == 200
    size = big_clip.stat().st_size
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(size)
    concat = head.headers["Upload-Concat"]
    assert concat.startswith("final;")
    partials = concat[len("final;"):].split()
    assert len(partials) == 3
    # The partials are consumed: sessions and objects.
    for p in partials:
        assert requests.head(p, headers=h, timeout=5).status_code == 404
    check_ready_source(server, t["api_key"], url.rsplit("/", 1)[1], big_clip)


def test_tus_js_client_deferred_length_on_garage(s3_server, big_clip):
    """tus-js-client with `uploadLengthDeferred` (256 KiB PATCHes: tails all the way, parts as
    they fill); the last PATCH declares the length."""
    server = s3_server
    t = server.tenant("s3-defer")
    url = node("upload-parallel.mjs", f"{server.url}/v1/uploads/", t["api_key"], str(big_clip), "defer")
    check_ready_source(server, t["api_key"], url.rsplit("/", 1)[1], big_clip)
