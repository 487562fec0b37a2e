"""`sluice serve` with a real S3-compatible store (Garage on loopback) as its hot tier: a
tuspy upload streams into multipart parts (PATCHes end mid-part, so tails are exercised),
the worker downloads the source from S3 and publishes HLS back to it, and playback and the
source download are served from the bucket. tus-js-client's `parallelUploads`
(concatenation: partials in their own multipart uploads, assembled into the final's
source) and `uploadLengthDeferred` work on the bucket too. A live ffmpeg push plays live and
as VOD from the bucket. Two gateways sharing PostgreSQL and the bucket continue each other's
uploads. scripts/test.sh starts Garage and PostgreSQL and exports SLUICE_TEST_S3_* and
SLUICE_TEST_PG_URL; without them these tests fail rather than skip."""

import os
import subprocess
import time
import urllib.parse
import uuid

from pathlib import Path

import pytest
import requests

from conftest import Sluice, ffprobe_json, make_clip, sha256
from test_live import media_entries, push, wait_for
from test_scaleout import pg_database

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


def s3_config(s3):
    """The config of a gateway on the bucket, under a prefix of its own (secret not in it)."""
    prefix = f"e2e/{uuid.uuid4().hex}"
    return f"""
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


@pytest.fixture(scope="module")
def s3_server(workdir):
    s3 = s3_env()
    # The secret comes from the environment, not the file (the documented way).
    config = s3_config(s3)
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


def test_live_push_on_garage(s3_server):
    """ffmpeg pushes live HLS into a stream whose hot tier is the bucket: it plays while live
    and, once ffmpeg ends it, as a VOD asset; nothing is stored on the local disk."""
    srv = s3_server
    key = srv.tenant("s3-live")["api_key"]
    auth = {"Authorization": f"Bearer {key}"}
    r = requests.post(f"{srv.url}/v1/live", json={"name": "s3-cam"}, headers=auth, timeout=10)
    assert r.status_code == 201, r.text
    s = r.json()
    sid = s["id"]

    def state():
        r = requests.get(f"{srv.url}/v1/live/{sid}", headers=auth, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    enc = push(s["ingest_url"], 8)
    try:
        st = wait_for(lambda: (x := state())["segments_received"] >= 3 and x, 30, "three segments")
        assert st["state"] == "receiving", (st, srv.logs())
        url = requests.post(
            f"{srv.url}/v1/live/{sid}/playback", json={}, headers=auth, timeout=10
        ).json()["url"]
        r = requests.get(url, timeout=10)
        assert r.status_code == 200 and "#EXT-X-ENDLIST" not in r.text, r.text
        entries = media_entries(r.text)
        assert entries, r.text
        base = url.rsplit("/", 1)[0]
        for _, uri in entries:
            seg = requests.get(f"{base}/{uri}", timeout=10)
            assert seg.status_code == 200 and seg.content[0] == 0x47, uri
        probe = ffprobe_json("-show_streams", url)
        assert sorted(x["codec_type"] for x in probe["streams"]) == ["audio", "video"], probe
    finally:
        _, err = enc.communicate(timeout=60)
    assert enc.returncode == 0, err.decode()

    ended = wait_for(lambda: (x := state())["state"] == "ended" and x, 30, "stream end")
    assert ended["end_reason"] == "endlist", ended
    assert ended["rejected_requests"] == 0, (ended, srv.logs())
    final = requests.get(url, timeout=10).text
    assert final.rstrip().endswith("#EXT-X-ENDLIST")
    total = sum(d for d, _ in media_entries(final))
    assert 7.0 <= total <= 9.5, final
    asset = srv.wait_asset(key, s["asset_id"])
    assert asset["status"] == "ready", (asset, srv.logs())
    assert abs(asset["duration_s"] - total) < 1.0, (asset, total)
    vod_url = requests.post(
        f"{srv.url}/v1/assets/{s['asset_id']}/playback", json={}, headers=auth, timeout=10
    ).json()["url"]
    vod = ffprobe_json("-show_format", "-show_streams", vod_url)
    assert abs(float(vod["format"]["duration"]) - total) < 1.0, vod["format"]
    assert sorted(x["codec_type"] for x in vod["streams"]) == ["audio", "video"]
    # The live objects and the VOD live in the bucket, not on the local disk.
    hot = srv.data_dir / "hot"
    assert not hot.exists() or not any(p.is_file() for p in hot.rglob("*")), list(hot.rglob("*"))
    # The live URL still answers after the end (a player still on it keeps working).
    assert requests.get(url, timeout=10).status_code == 200


ADMIN = "sk_admin_s3_scaleout_key_0123456789abc"


@pytest.fixture(scope="module")
def s3_cluster(workdir):
    """Two gateways (each with in-process workers) sharing one PostgreSQL and one bucket."""
    s3 = s3_env()
    pg = pg_database()
    config = f'database_url = "{pg}"\n' + s3_config(s3)
    env = {"SLUICE_S3_SECRET_ACCESS_KEY": s3["SECRET_ACCESS_KEY"], "SLUICE_ADMIN_KEY": ADMIN}
    a = Sluice(workdir / "s3-gw-a", config_text=config, env=env)
    b = Sluice(workdir / "s3-gw-b", config_text=config, env=env)
    yield a, b
    a.stop()
    b.stop()


def test_tus_upload_across_gateways_on_garage(s3_cluster, workdir):
    """A tus upload started on one gateway is finished on the other: the multipart upload,
    its parts and the unfinished tail live in PostgreSQL and the bucket, not in a process."""
    a, b = s3_cluster
    key = a.tenant("s3-scale")["api_key"]
    tus = {"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0"}
    patch = {**tus, "Content-Type": "application/offset+octet-stream"}
    clip = make_clip(workdir / "s3scale.mp4", seconds=8,
                     extra=("-b:v", "12M", "-maxrate", "12M", "-bufsize", "4M"))
    data = clip.read_bytes()
    assert len(data) > 8 << 20, len(data)
    # Cut mid-part (parts are 5 MiB): A leaves an unfinished tail that B must continue.
    cut = (5 << 20) + (3 << 20) + 12345

    r = requests.post(f"{a.url}/v1/uploads/", headers={**tus, "Upload-Length": str(len(data))},
                      timeout=10)
    assert r.status_code == 201, r.text
    asset_id = r.headers["Location"].rsplit("/", 1)[1]
    loc_a, loc_b = f"{a.url}/v1/uploads/{asset_id}", f"{b.url}/v1/uploads/{asset_id}"
    r = requests.patch(loc_a, headers={**patch, "Upload-Offset": "0"}, data=data[:cut], timeout=60)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(cut), r.text
    r = requests.head(loc_b, headers=tus, timeout=10)
    assert r.status_code == 200 and r.headers["Upload-Offset"] == str(cut), r.headers
    # B continues in two PATCHes, the first again ending mid-part.
    mid = cut + (1 << 20)
    r = requests.patch(loc_b, headers={**patch, "Upload-Offset": str(cut)}, data=data[cut:mid],
                       timeout=60)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(mid), (r.text, b.logs())
    r = requests.patch(loc_b, headers={**patch, "Upload-Offset": str(mid)}, data=data[mid:],
                       timeout=60)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(len(data)), (r.text, b.logs())

    asset = a.wait_asset(key, asset_id, timeout=180)
    assert asset["status"] == "ready", (asset, a.logs(), b.logs())
    assert b.asset(key, asset_id)["status"] == "ready"
    for gw in (a, b):
        src = requests.get(f"{gw.url}/v1/assets/{asset_id}/source",
                           headers={"Authorization": f"Bearer {key}"}, timeout=60)
        assert src.status_code == 200 and sha256(src.content) == sha256(data)
        hot = gw.data_dir / "hot"
        assert not hot.exists() or not any(p.is_file() for p in hot.rglob("*"))
    # Signed on A, played through B, from the bucket.
    url = requests.post(f"{a.url}/v1/assets/{asset_id}/playback",
                        headers={"Authorization": f"Bearer {key}"}, timeout=10).json()["url"]
    via_b = url.replace(a.url, b.url)
    info = ffprobe_json("-show_entries", "stream=codec_type,width,height:format=duration", via_b)
    assert abs(float(info["format"]["duration"]) - 8) <= 0.5, info
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (640, 360)
