"""Crash windows found by the crash harness (crash_harness.py), each reproduced here
deterministically: the process is SIGKILLed, the metadata left as the crash leaves it,
then the server restarts and a client retries."""

import signal
import sqlite3

import requests

from conftest import Sluice, make_clip


def kill(s):
    s.proc.send_signal(signal.SIGKILL)
    s.proc.wait()
    s.log.close()


def test_raw_upload_retry_after_a_crash_before_the_answer_gets_the_same_asset(workdir):
    """A raw upload under an Idempotency-Key whose asset was created, but whose process
    died before recording the answer under the key: the retry (same body) must get that
    asset, never a second one; another body is refused."""
    data_dir = workdir / "data-raw-crash"
    clip = make_clip(workdir / "raw-crash.mp4", seconds=1, size="320x240").read_bytes()
    s = Sluice(data_dir)
    key = s.tenant("raw-crash")["api_key"]
    h = {"Authorization": f"Bearer {key}", "Content-Type": "video/mp4", "Idempotency-Key": "cam-7-0001",
         "X-Filename": "raw-crash.mp4"}
    r = requests.post(f"{s.url}/v1/assets", data=clip, headers=h, timeout=60)
    assert r.status_code == 201, r.text
    first = r.json()["id"]
    kill(s)
    # What the crash leaves: the claim still in flight (its lock lapsed with the process),
    # the answer not recorded.
    db = sqlite3.connect(data_dir / "meta.db")
    with db:
        n = db.execute("UPDATE idempotency_keys SET state = 'in_flight', lock_until = 0, response = NULL "
                       "WHERE key = 'cam-7-0001'").rowcount
    db.close()
    assert n == 1
    s = Sluice(data_dir)
    try:
        assert requests.post(f"{s.url}/v1/assets", data=clip + b"x", headers=h, timeout=60).status_code == 422
        r = requests.post(f"{s.url}/v1/assets", data=clip, headers=h, timeout=60)
        assert r.status_code == 201, r.text
        assert r.json()["id"] == first
        db = sqlite3.connect(f"file:{data_dir / 'meta.db'}?mode=ro", uri=True)
        n = db.execute("SELECT COUNT(*) FROM assets WHERE filename = 'raw-crash.mp4'").fetchone()[0]
        db.close()
        assert n == 1
        # And the key now replays.
        r = requests.post(f"{s.url}/v1/assets", data=clip, headers=h, timeout=60)
        assert r.status_code == 201 and r.json()["id"] == first
    finally:
        s.stop()


def whole_but_unfinished(workdir, name, config=None):
    """A tus upload whose last offset commit happened but whose finishing did not (the
    process died in between): every byte but the last sent, the server killed, then the
    last byte put in place and the offset committed by hand, as the crash leaves them."""
    data_dir = workdir / f"data-{name}"
    clip = make_clip(workdir / f"{name}.mp4", seconds=1, size="320x240").read_bytes()
    s = Sluice(data_dir, config_text=config)
    key = s.tenant(name)["api_key"]
    h = {"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0"}
    r = requests.post(f"{s.url}/v1/uploads/", headers={**h, "Upload-Length": str(len(clip))}, timeout=10)
    assert r.status_code == 201, r.text
    path = "/v1/uploads/" + r.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    asset = path.rsplit("/", 1)[1]
    r = requests.patch(s.url + path, data=clip[:-1], timeout=30, headers={
        **h, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 204, r.text
    kill(s)
    with open(data_dir / "uploads" / asset, "ab") as f:
        f.write(clip[-1:])
    db = sqlite3.connect(data_dir / "meta.db")
    with db:
        db.execute('UPDATE uploads SET "offset" = length WHERE asset_id = ?', (asset,))
    db.close()
    return data_dir, h, path, asset, len(clip)


def test_a_whole_upload_left_unfinished_is_finished_by_the_repeated_patch(workdir):
    """Finding 2: an upload whose offset reached its length but was never finished got 409
    on a repeated PATCH; HEAD said complete, so clients forgot it, and the sweeper deleted
    it. The repeated PATCH (at offset == length, empty body) now finishes it."""
    data_dir, h, path, asset, length = whole_but_unfinished(workdir, "unfinished-patch")
    s = Sluice(data_dir)
    try:
        r = requests.patch(s.url + path, data=b"", timeout=30, headers={
            **h, "Upload-Offset": str(length), "Content-Type": "application/offset+octet-stream"})
        assert r.status_code == 204, r.text
        a = s.wait_asset(h["Authorization"].split()[1], asset)
        assert a["status"] == "ready", a
    finally:
        s.stop()


def test_a_whole_upload_left_unfinished_is_finished_by_the_sweeper(workdir):
    """Finding 2, the client that never comes back: the sweeper finishes a whole upload
    instead of deleting it when it expires."""
    config = "[uploads]\nexpire_after_s = 1\nsweep_interval_s = 1\n"
    data_dir, h, path, asset, length = whole_but_unfinished(workdir, "unfinished-sweep", config)
    s = Sluice(data_dir, config_text=config)
    try:
        a = s.wait_asset(h["Authorization"].split()[1], asset)
        assert a["status"] == "ready", a
    finally:
        s.stop()


def test_a_recovered_raw_upload_whose_job_already_ran_stays_ready(workdir):
    """Found by the crash harness: a raw upload whose job was queued (and ran) but whose
    process died before recording the upload complete. The retry under its key finishes
    it again: it must reuse that job, not queue a second, and must not send the ready
    asset back to `queued` (where it stayed for ever)."""
    data_dir = workdir / "data-raw-ran"
    clip = make_clip(workdir / "raw-ran.mp4", seconds=1, size="320x240").read_bytes()
    s = Sluice(data_dir)
    key = s.tenant("raw-ran")["api_key"]
    h = {"Authorization": f"Bearer {key}", "Content-Type": "video/mp4", "Idempotency-Key": "cam-9-0001",
         "X-Filename": "raw-ran.mp4"}
    r = requests.post(f"{s.url}/v1/assets", data=clip, headers=h, timeout=60)
    assert r.status_code == 201, r.text
    first = r.json()["id"]
    assert s.wait_asset(key, first)["status"] == "ready"
    kill(s)
    db = sqlite3.connect(data_dir / "meta.db")
    with db:
        db.execute("UPDATE uploads SET completed_at = NULL WHERE asset_id = ?", (first,))
        db.execute("UPDATE idempotency_keys SET state = 'in_flight', lock_until = 0, response = NULL "
                   "WHERE key = 'cam-9-0001'")
    db.close()
    s = Sluice(data_dir)
    try:
        r = requests.post(f"{s.url}/v1/assets", data=clip, headers=h, timeout=60)
        assert r.status_code == 201 and r.json()["id"] == first, r.text
        assert s.asset(key, first)["status"] == "ready"
        db = sqlite3.connect(f"file:{data_dir / 'meta.db'}?mode=ro", uri=True)
        jobs = db.execute("SELECT COUNT(*) FROM jobs WHERE asset_id = ?", (first,)).fetchone()[0]
        db.close()
        assert jobs == 1
    finally:
        s.stop()


def test_a_job_whose_queue_push_was_lost_is_pushed_again(workdir):
    """Finding 11: the job row and the queue task are written one after the other (the
    queue is its own database); a crash or a queue error in between left the job queued
    for ever. The reconciler pushes a push owed for too long. Here the crash is made by
    hand: a job back in `queued`, its push owed since long ago, no task on the queue."""
    data_dir = workdir / "data-lost-push"
    clip = make_clip(workdir / "lost-push.mp4", seconds=1, size="320x240")
    s = Sluice(data_dir)
    key = s.tenant("lost-push")["api_key"]
    asset = s.tus_upload(key, clip)
    assert s.wait_asset(key, asset)["status"] == "ready"
    kill(s)
    db = sqlite3.connect(data_dir / "meta.db")
    with db:
        n = db.execute("UPDATE jobs SET status = 'queued', unpushed_since = 1, attempts = 0 "
                       "WHERE asset_id = ?", (asset,)).rowcount
        db.execute("UPDATE assets SET status = 'queued' WHERE id = ?", (asset,))
    db.close()
    assert n == 1
    s = Sluice(data_dir)
    try:
        a = s.wait_asset(key, asset, timeout=120)
        assert a["status"] == "ready", a
        db = sqlite3.connect(f"file:{data_dir / 'meta.db'}?mode=ro", uri=True)
        status, owed = db.execute("SELECT status, unpushed_since FROM jobs WHERE asset_id = ?",
                                  (asset,)).fetchone()
        db.close()
        assert (status, owed) == ("succeeded", None)
    finally:
        s.stop()
