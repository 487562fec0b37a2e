"""A gateway killed with SIGKILL in the middle of a PATCH loses nothing it acknowledged:
after a restart the client's HEAD gets the committed offset, tuspy resumes from there,
and the stored object's sha256 equals the source."""

import os
import signal
import threading

import requests

from conftest import Sluice, sha256, wait_for


def test_sigkill_mid_upload_then_tuspy_resumes(workdir):
    data_dir = workdir / "data-killed-gw"
    s = Sluice(data_dir)
    t = s.tenant("killed")
    key = t["api_key"]
    h = {"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0"}
    src = workdir / "killed-gw.bin"
    src.write_bytes(os.urandom(12 * 1024 * 1024))
    data = src.read_bytes()

    r = requests.post(f"{s.url}/v1/uploads/", headers={**h, "Upload-Length": str(len(data)),
                      "Upload-Metadata": "filename a2lsbGVkLWd3LmJpbg=="}, timeout=10)
    loc = r.headers["Location"]
    pt = {**h, "Content-Type": "application/offset+octet-stream"}
    first = 4 * 1024 * 1024
    r = requests.patch(loc, headers={**pt, "Upload-Offset": "0"}, data=data[:first], timeout=30)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(first)

    # A second PATCH is in flight when the gateway dies: its first 2 MiB are sent, then the
    # body waits. The gateway is killed only once those bytes are in the upload file (past
    # the committed offset, not yet acknowledged), so the kill surely interrupts a PATCH
    # that wrote, and the restart must not count those bytes.
    upload_file = data_dir / "uploads" / loc.rsplit("/", 1)[1]
    killed = threading.Event()

    def slow():
        yield data[first:first + 2 * 1024 * 1024]
        killed.wait(60)
        yield data[first + 2 * 1024 * 1024:]

    def patch_until_killed():
        try:
            requests.patch(loc, headers={**pt, "Upload-Offset": str(first)}, data=slow(), timeout=60)
        except requests.RequestException:
            pass  # the connection dies with the gateway

    th = threading.Thread(target=patch_until_killed)
    th.start()
    try:
        wait_for(lambda: upload_file.stat().st_size > first, 30, "the in-flight PATCH's bytes on disk")
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait()
    finally:
        killed.set()
    s.log.close()
    th.join()

    s2 = Sluice(data_dir)
    try:
        loc2 = loc.replace(s.url, s2.url)
        r = requests.head(loc2, headers=h, timeout=10)
        assert r.status_code == 200
        offset = int(r.headers["Upload-Offset"])
        # Everything acknowledged is there, and nothing past what the interrupted PATCH had
        # sent is claimed.
        assert first <= offset <= first + 2 * 1024 * 1024
        from tusclient import client

        c = client.TusClient(f"{s2.url}/v1/uploads/", headers={"Authorization": f"Bearer {key}"})
        # The dead gateway's write lease lapses within 10 s: until then the upload answers
        # 423, which tus clients retry.
        up = c.uploader(str(src), url=loc2, chunk_size=1024 * 1024, retries=10, retry_delay=2)
        assert up.get_offset() == offset
        up.upload()
        asset_id = loc2.rsplit("/", 1)[1]
        got = requests.get(f"{s2.url}/v1/assets/{asset_id}/source", headers={"Authorization": f"Bearer {key}"},
                           timeout=30)
        assert got.status_code == 200 and sha256(got.content) == sha256(src)
    finally:
        s2.stop()
