"""Bad input ends with the asset `failed` and a clear message; the server and the worker
pool keep running and still process good uploads afterwards."""

import os

import pytest
import requests

from conftest import Sluice, make_clip


@pytest.fixture(scope="module")
def tenant(server):
    return server.tenant("bad-input")


def upload_and_wait(server, tenant, path):
    asset_id = server.tus_upload(tenant["api_key"], path)
    return server.wait_asset(tenant["api_key"], asset_id, timeout=120)


def assert_failed_cleanly(server, a, *words):
    assert a["status"] == "failed", a
    msg = a["error"]
    assert isinstance(msg, str) and len(msg) > 10, a
    assert any(w in msg.lower() for w in words), msg
    assert a["renditions"] == []
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
    assert server.alive()


def test_zero_length_upload(server, tenant, workdir):
    """A tus upload of 0 bytes is complete at creation and fails at once, cleanly."""
    h = {"Authorization": f"Bearer {tenant['api_key']}", "Tus-Resumable": "1.0.0"}
    r = requests.post(f"{server.url}/v1/uploads/", headers=dict(h, **{"Upload-Length": "0"}), timeout=10)
    assert r.status_code == 201, r.text
    asset_id = r.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    assert r.headers.get("Upload-Expires") is None
    head = requests.head(f"{server.url}/v1/uploads/{asset_id}", headers=h, timeout=10)
    assert (head.headers["Upload-Offset"], head.headers["Upload-Length"]) == ("0", "0")
    a = server.wait_asset(tenant["api_key"], asset_id, timeout=30)
    assert_failed_cleanly(server, a, "the upload is empty")
    assert a["job_id"] is None and a["size"] == 0
    # creation-with-upload of an empty body is the same.
    r = requests.post(
        f"{server.url}/v1/uploads/",
        headers=dict(h, **{"Upload-Length": "0", "Content-Type": "application/offset+octet-stream"}),
        data=b"",
        timeout=10,
    )
    assert r.status_code == 201, r.text
    a = server.asset(tenant["api_key"], r.headers["Location"].rstrip("/").rsplit("/", 1)[-1])
    assert_failed_cleanly(server, a, "the upload is empty")
    # The same through tuspy with an empty file.
    p = workdir / "empty.mp4"
    p.write_bytes(b"")
    a = upload_and_wait(server, tenant, p)
    assert_failed_cleanly(server, a, "the upload is empty")


def test_text_file(server, tenant, workdir):
    # Refused by content sniffing at its first PATCH (415), stricter than before, when it
    # was accepted and failed by the worker: obvious non-media never reaches the queue.
    from tusclient import client
    from tusclient.exceptions import TusCommunicationError

    p = workdir / "notes.txt"
    p.write_text("These are not the frames you are looking for.\n" * 200)
    key = tenant["api_key"]
    up = client.TusClient(f"{server.url}/v1/uploads/", headers={"Authorization": f"Bearer {key}"}).uploader(
        str(p), chunk_size=1 << 20, metadata={"filename": "notes.txt"})
    with pytest.raises(TusCommunicationError) as e:
        up.upload()
    assert e.value.status_code == 415
    asset_id = up.url.rstrip("/").rsplit("/", 1)[-1]
    r = requests.get(f"{server.url}/v1/assets/{asset_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 404
    assert server.alive()


def test_random_bytes(server, tenant, workdir):
    # Not recognisable either way: accepted by the sniffer, failed cleanly by the worker.
    p = workdir / "random.bin"
    p.write_bytes(os.urandom(300_000))
    a = upload_and_wait(server, tenant, p)
    assert_failed_cleanly(server, a, "not a media file", "format", "container")


def test_truncated_mp4(server, tenant, workdir):
    full = make_clip(workdir / "to-truncate.mp4", seconds=6, size="640x360")
    data = full.read_bytes()
    p = workdir / "truncated.mp4"
    p.write_bytes(data[: len(data) // 2])  # moov atom at the end: cut off
    a = upload_and_wait(server, tenant, p)
    assert_failed_cleanly(server, a, "truncated", "corrupt")
    # The job records the same error and does not retry bad input.
    j = requests.get(
        f"{server.url}/v1/jobs/{a['job_id']}",
        headers={"Authorization": f"Bearer {tenant['api_key']}"},
        timeout=10,
    ).json()
    assert j["status"] == "failed" and j["attempts"] == 1 and j["error"] == a["error"]


def test_worker_pool_still_works_after_bad_input(server, tenant, workdir):
    # Runs after the failures above: a small good clip still becomes ready.
    clip = make_clip(workdir / "after-bad.mp4", seconds=3, size="320x240", rate=25)
    a = upload_and_wait(server, tenant, clip)
    assert a["status"] == "ready", a
    # Below the smallest rung: one rendition at the source size, never upscaled.
    assert [(r["width"], r["height"]) for r in a["renditions"]] == [(320, 240)]


def test_video_only_input(server, tenant, workdir):
    clip = make_clip(workdir / "silent.mp4", seconds=4, size="640x360", audio=False)
    a = upload_and_wait(server, tenant, clip)
    assert a["status"] == "ready", a
    assert all(r["codecs"].startswith("avc1.") and "mp4a" not in r["codecs"] for r in a["renditions"])


def test_duration_beyond_the_limit(workdir):
    s = Sluice(workdir / "data-limits", config_text="[transcode]\nmax_duration_s = 3\n")
    try:
        t = s.tenant("limits")
        clip = make_clip(workdir / "too-long.mp4", seconds=5, size="320x240")
        a = upload_and_wait(s, t, clip)
        assert_failed_cleanly(s, a, "longer than the 3 s")
    finally:
        s.stop()
