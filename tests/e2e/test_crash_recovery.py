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
