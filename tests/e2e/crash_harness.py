"""Crash harness: SIGKILL the real `sluice serve` at random points while tus uploads, raw
uploads (with Idempotency-Key), transcodes and a live HLS push run; restart it on the same
data dir and port; let every client resume; then check what must hold after any crash:

- every upload a client completed has a source equal to the client's bytes;
- every asset a client knows of ends `ready` or `failed` with a message (none stuck);
- every live stream ends, and its recording is exactly the pushed segments, in order;
- no job ran twice (one job per asset, one "asset ready" per job over every run's log,
  attempts within the limit) and every job ended;
- no orphans: every asset row is one a client knows of (the others, from requests whose
  answer was lost, expire and are swept), no upload session or scratch file is left,
  and on the local tier no object directory belongs to an unknown asset and no staging
  output is left behind.

A bounded run is part of the test suite (tests/e2e/test_crash_harness.py); a long one runs
by hand:

    SLUICE_BIN=target/debug/sluice .venv/bin/python tests/e2e/crash_harness.py --kills 200

It talks to the server only as clients do, except for the final orphan check, which reads
the metadata database (SQLite) and the data dir.
"""

import argparse
import base64
import hashlib
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import Sluice, free_port, make_clip  # noqa: E402

CONFIG = """
[uploads]
expire_after_s = {expire}
sweep_interval_s = 1

[workers]
heartbeat_s = 2
max_attempts = 25
retry_base_s = 1
retry_cap_s = 2

[transcode]
segment_duration_s = 1.0
ladder = [{{name = "180p", height = 180, video_bitrate = 150000}}]

[live]
vod = "copy"
stall_after_s = 30
idle_timeout_s = 120
"""


EXPIRE_S = 90


class Dead(Exception):
    """The harness is past its deadline."""


def sha(data):
    return hashlib.sha256(data).hexdigest()


class Harness:
    def __init__(self, root, kills, seed, s3_config=None, s3_env=None, log=print):
        self.root = Path(root)
        self.kills = kills
        self.rng = random.Random(seed)
        self.log = log
        self.s3 = s3_config is not None
        # Uploads expire after 90 s without progress: a client whose PATCH a kill cut
        # waits out the dead process's write lease (10 s) each time, and kills come every
        # ~1.5 s, so a shorter expiry would abandon uploads that are being retried.
        self.config = CONFIG.format(expire=EXPIRE_S) + (s3_config or "")
        self.env = s3_env or {}
        self.data_dir = self.root / "data"
        self.port = free_port()
        self.server = None
        self.lock = threading.Lock()
        # Clients give up (a violation) this long after the start: time for every kill,
        # then for the stragglers to finish.
        self.deadline = time.time() + kills * 4 + 400
        self.stop_new = threading.Event()
        self.errors = []  # invariant violations seen by clients
        self.tus_done = {}  # asset id -> sha256 of the client's bytes
        self.raw_done = {}  # idempotency key -> (asset id, sha256)
        self.live_done = {}  # stream id -> (asset id, expected source bytes)
        self.restarts = 0
        self.logs = []

    # ---- server lifecycle ----
    def start(self):
        self.server = Sluice(self.data_dir, config_text=self.config, env=self.env, port=self.port)

    def kill(self):
        s = self.server
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait()
        s.log.close()
        kept = self.root / f"run-{len(self.logs):03}.log"
        shutil.copy(s.log_path, kept)
        self.logs.append(kept)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    # ---- a request that outlives crashes ----
    def call(self, method, path, ok, retry=(), **kw):
        """Send until the answer's status is in `ok` (returned), retrying connection
        errors, 5xx, 423 and the statuses in `retry`; anything else is returned too."""
        kw.setdefault("timeout", 30)
        while True:
            if time.time() > self.deadline:
                raise Dead(f"{method} {path}")
            try:
                r = requests.request(method, self.url + path, **kw)
            except requests.RequestException:
                time.sleep(0.2)
                continue
            if r.status_code in ok:
                return r
            if r.status_code >= 500 or r.status_code == 423 or r.status_code in retry:
                time.sleep(0.2)
                continue
            return r

    def violation(self, what):
        with self.lock:
            self.errors.append(what)
        self.log(f"VIOLATION: {what}")

    # ---- clients ----
    def tus_client(self, key, data, name):
        h = {"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0"}
        meta = "filename " + base64.b64encode(name.encode()).decode()
        r = self.call("POST", "/v1/uploads/", (201,), headers={**h, "Upload-Length": str(len(data)),
                                                                 "Upload-Metadata": meta})
        if r.status_code != 201:
            return self.violation(f"tus create {name}: {r.status_code} {r.text}")
        asset = r.headers["Location"].rstrip("/").rsplit("/", 1)[1]
        path = f"/v1/uploads/{asset}"
        while True:
            r = self.call("HEAD", path, (200,), headers=h)
            if r.status_code != 200:
                return self.violation(f"tus HEAD {asset} ({name}): {r.status_code}")
            offset = int(r.headers["Upload-Offset"])
            if offset == len(data):
                break
            chunk = data[offset:offset + self.rng.choice([64 << 10, 256 << 10, 1 << 20])]
            # A retried PATCH whose first try was committed before a kill meets 409
            # (offset mismatch): ask for the offset again, as tus clients do.
            r = self.call("PATCH", path, (204, 409), headers={
                **h, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
                data=chunk)
            if r.status_code == 409:
                continue
            if r.status_code != 204:
                return self.violation(f"tus PATCH {asset} ({name}) at {offset}: {r.status_code} {r.text}")
        with self.lock:
            self.tus_done[asset] = sha(data)

    def raw_client(self, key, data, name):
        idem = f"crash-{name}"
        h = {"Authorization": f"Bearer {key}", "Content-Type": "video/mp4", "Idempotency-Key": idem,
             "X-Filename": name}
        r = self.call("POST", "/v1/assets", (201,), retry=(409,), headers=h, data=data)
        if r.status_code != 201:
            return self.violation(f"raw upload {name}: {r.status_code} {r.text}")
        with self.lock:
            self.raw_done[idem] = (r.json()["id"], sha(data))

    def live_client(self, key, segments, durations):
        h = {"Authorization": f"Bearer {key}"}
        r = self.call("POST", "/v1/live", (201,), headers=h, json={})
        if r.status_code != 201:
            return self.violation(f"live create: {r.status_code} {r.text}")
        s = r.json()
        ingest = s["ingest_url"].split(f"127.0.0.1:{self.port}", 1)[1]
        for i, seg in enumerate(segments):
            r = self.call("PUT", f"{ingest}index{i}.ts", (201, 204), data=seg)
            if r.status_code not in (201, 204):
                return self.violation(f"live segment {i}: {r.status_code} {r.text}")
            end = i == len(segments) - 1
            text = playlist(durations[:i + 1], end)
            r = self.call("PUT", f"{ingest}index.m3u8", (201, 204), data=text.encode())
            if r.status_code not in (201, 204):
                return self.violation(f"live playlist {i}: {r.status_code} {r.text}")
            time.sleep(0.2)
        with self.lock:
            self.live_done[s["id"]] = (s["asset_id"], b"".join(segments))

    # ---- the run ----
    def run(self):
        self.root.mkdir(parents=True, exist_ok=True)
        clips = [make_clip(self.root / f"clip{i}.mp4", seconds=2 + i, size="320x240", rate=15)
                 for i in range(3)]
        clip_bytes = [c.read_bytes() for c in clips]
        segments, durations = live_segments(self.root / "live")
        self.start()
        key = self.server.tenant("crash")["api_key"]
        admin_key = self.server.admin_key
        assert admin_key

        threads = []
        counter = [0]

        def spawn(kind):
            counter[0] += 1
            n = counter[0]
            if kind == "live":
                t = threading.Thread(target=self.guard, args=(self.live_client, key, segments, durations))
            else:
                # Mostly real clips (transcoded), some random bytes (fail with a message),
                # some large enough to span many PATCHes.
                pick = self.rng.random()
                if pick < 0.6:
                    data = clip_bytes[n % len(clip_bytes)] + b""
                elif pick < 0.8:
                    data = os.urandom(self.rng.randint(1000, 200_000))
                else:
                    data = os.urandom(self.rng.randint(2 << 20, 6 << 20))
                target = self.tus_client if kind == "tus" else self.raw_client
                t = threading.Thread(target=self.guard, args=(target, key, data, f"{kind}-{n}.bin"))
            t.start()
            threads.append(t)

        def feeder():
            while not self.stop_new.is_set():
                live = sum(1 for t in threads if t.is_alive())
                if live < 6:
                    spawn(self.rng.choice(["tus", "tus", "raw", "live"] if counter[0] % 5 == 0
                                          else ["tus", "tus", "raw"]))
                time.sleep(0.1)

        spawn("live")
        feed = threading.Thread(target=feeder)
        feed.start()
        for i in range(self.kills):
            time.sleep(self.rng.uniform(0.3, 2.5))
            self.kill()
            self.restarts += 1
            self.start()
        self.stop_new.set()
        feed.join()
        self.log(f"{self.kills} kills done; {counter[0]} clients started; waiting for them")
        for t in threads:
            t.join(max(1, self.deadline - time.time()))
        self.check(key)
        self.server.stop()
        shutil.copy(self.server.log_path, self.root / f"run-{len(self.logs):03}.log")
        self.logs.append(self.root / f"run-{len(self.logs):03}.log")
        self.check_logs()
        return {
            "kills": self.kills,
            "tus": len(self.tus_done),
            "raw": len(self.raw_done),
            "live": len(self.live_done),
            "violations": self.errors,
        }

    def guard(self, fn, *args):
        try:
            fn(*args)
        except Dead as e:
            self.violation(f"client past the deadline: {e}")
        except Exception as e:  # a client crash is a harness failure, reported as such
            self.violation(f"client error: {e!r}")

    # ---- invariants ----
    def check(self, key):
        h = {"Authorization": f"Bearer {key}"}
        known = {}
        for asset, digest in self.tus_done.items():
            known[asset] = digest
        for asset, digest in self.raw_done.values():
            known[asset] = digest
        live_assets = {}
        for sid, (asset, body) in self.live_done.items():
            live_assets[asset] = sha(body)
        # Every asset a client knows ends ready or failed with a message.
        for asset in list(known) + list(live_assets):
            a = self.wait_terminal(h, asset)
            if a is None:
                continue
            if a["status"] == "failed" and not a.get("error"):
                self.violation(f"asset {asset} failed without a message")
        # Sources are exactly the client's bytes.
        for asset, digest in {**known, **live_assets}.items():
            r = self.call("GET", f"/v1/assets/{asset}/source", (200,), headers=h)
            if r.status_code != 200:
                self.violation(f"source of {asset}: {r.status_code}")
            elif sha(r.content) != digest:
                self.violation(f"source of {asset} differs from the client's bytes "
                               f"({len(r.content)} bytes)")
        # Live streams ended.
        for sid in self.live_done:
            r = self.call("GET", f"/v1/live/{sid}", (200,), headers=h)
            if r.json().get("state") != "ended":
                self.violation(f"live stream {sid} did not end: {r.json()}")
        # Orphans: unknown assets expire and are swept; wait for that.
        wanted = set(known) | set(live_assets)
        db = self.data_dir / "meta.db"
        deadline = time.time() + EXPIRE_S + 60
        while True:
            rows = query(db, "SELECT id, status, hidden FROM assets")
            # A live stream whose creation answer was lost is never pushed to: it ends
            # after the idle timeout and its empty recording fails with a message. It is
            # the tenant's (listed under /v1/live), not an orphan.
            unused = {r[0] for r in query(
                db, "SELECT s.asset_id FROM live_streams s JOIN assets a ON a.id = s.asset_id "
                    "WHERE s.state = 'ended' AND s.segments_received = 0 AND a.status = 'failed'")}
            extra = [r for r in rows if r[0] not in wanted and r[0] not in unused]
            uploads = query(db, "SELECT asset_id FROM uploads WHERE completed_at IS NULL")
            # Scratch files of uploads whose session was never recorded go with the
            # expiry too.
            scratch = list((self.data_dir / "uploads").glob("*"))
            if not extra and not uploads and not scratch:
                break
            if time.time() > deadline:
                self.violation(f"orphan assets {extra} / unfinished upload sessions {uploads}")
                break
            time.sleep(1)
        missing = wanted - {r[0] for r in rows}
        if missing:
            self.violation(f"assets clients completed are gone: {sorted(missing)}")
        # One job per uploaded asset, every job ended, attempts bounded.
        jobs = query(db, "SELECT id, asset_id, kind, status, attempts FROM jobs")
        per_asset = {}
        for jid, asset, kind, status, attempts in jobs:
            per_asset.setdefault(asset, []).append((jid, kind, status))
            if status not in ("succeeded", "failed", "dead", "cancelled"):
                self.violation(f"job {jid} ({kind}) still {status}")
            if attempts > 25:
                self.violation(f"job {jid} ran {attempts} attempts")
        for asset in wanted:
            if len(per_asset.get(asset, [])) > 1:
                self.violation(f"asset {asset} has {len(per_asset[asset])} jobs: {per_asset[asset]}")
        self.job_ids = {j[0] for j in jobs}
        # Scratch files of uploads and, on the local tier, objects of unknown assets and
        # leftover staging output.
        leftovers = [p.name for p in (self.data_dir / "uploads").glob("*")]
        if leftovers:
            self.violation(f"upload scratch files left: {leftovers}")
        if not self.s3:
            for tenant_dir in (self.data_dir / "hot" / "tenants").glob("*"):
                for asset_dir in (tenant_dir / "assets").glob("*"):
                    if asset_dir.name not in wanted:
                        self.violation(f"objects of unknown asset {asset_dir.name}")
                    staging = asset_dir / "staging"
                    if staging.exists() and any(staging.iterdir()):
                        self.violation(f"staging output left for {asset_dir.name}")

    def wait_terminal(self, h, asset, timeout=240):
        end = time.time() + timeout
        while True:
            r = self.call("GET", f"/v1/assets/{asset}", (200,), headers=h)
            if r.status_code != 200:
                self.violation(f"asset {asset}: {r.status_code} {r.text}")
                return None
            a = r.json()
            if a["status"] in ("ready", "failed"):
                return a
            if time.time() > end:
                self.violation(f"asset {asset} stuck in {a['status']}")
                return None
            time.sleep(0.5)

    def check_logs(self):
        ready = {}
        for path in self.logs:
            for line in path.read_text(errors="replace").splitlines():
                if "asset ready" in line or "published as pushed" in line:
                    m = re.search(r"job[=:\s\"]+([0-9A-Z]{26})", line)
                    if m:
                        ready[m.group(1)] = ready.get(m.group(1), 0) + 1
        twice = {j: n for j, n in ready.items() if n > 1}
        if twice:
            self.violation(f"jobs published more than once: {twice}")


def query(db, sql):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def playlist(durations, end):
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2", "#EXT-X-MEDIA-SEQUENCE:0",
             "#EXT-X-PLAYLIST-TYPE:EVENT"]
    for i, d in enumerate(durations):
        lines += [f"#EXTINF:{d:.3f},", f"index{i}.ts"]
    if end:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def live_segments(out):
    """Eight ~1 s MPEG-TS segments of a test pattern with sound, from ffmpeg's HLS muxer."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=15",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "8",
         "-c:v", "libx264", "-preset", "veryfast", "-g", "15", "-keyint_min", "15",
         "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
         "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
         "-hls_segment_filename", str(out / "seg%d.ts"), str(out / "src.m3u8")],
        check=True, timeout=120)
    text = (out / "src.m3u8").read_text().splitlines()
    durations, segments = [], []
    for i, line in enumerate(text):
        if line.startswith("#EXTINF:"):
            durations.append(float(line[8:].split(",")[0]))
            segments.append((out / text[i + 1]).read_bytes())
    return segments, durations


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    root = Path(tempfile.mkdtemp(prefix="sluice-crash-"))
    print(f"seed {seed}, work dir {root}")
    result = Harness(root, args.kills, seed).run()
    print(result)
    sys.exit(1 if result["violations"] else 0)


if __name__ == "__main__":
    main()
