#!/usr/bin/env python3
"""Store migration, Sluice vs rclone (not a timed test): 1,000 x 1 MiB plus 4 x 256 MiB
objects (x --scale) from a local store to a fresh Garage each (Garage deduplicates blocks,
so a second copy into the same Garage would be free), alternating tools per round.

Per tool: copy wall time, peak RSS and CPU (utime + stime) of the process doing the work
(Sluice: the `sluice serve` process running the job, sampled every 50 ms; rclone: the
rclone process); then verify (Sluice's verification is part of the job: a second job with
`verify: full` re-reads every copy; rclone: `rclone check` and `rclone check --download`);
then the crash case: SIGKILL at 50 % of the bytes, rerun, the resume time and the bytes
sent again (Sluice: its `bytes_sent - bytes_copied`; rclone: bytes written to sockets,
/proc/PID/io wchar, past the total).

usage: benches/peer/migrate_vs_rclone.py [--scale 0.1] [--rounds 1] [--bin target/release/sluice]
Needs garage (scripts/garage.sh install), rclone and ffmpeg.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "tests" / "e2e" / "tools"))
from conftest import Sluice, free_port  # noqa: E402

GARAGE = str(ROOT / "scripts" / "garage.sh")
CONCURRENCY = 8
PART = 16 << 20


def garage_start(d):
    out = subprocess.run(
        [GARAGE, "start", str(d), str(free_port()), str(free_port()), str(free_port())],
        capture_output=True, text=True, timeout=120, check=True,
    )
    env = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
    return {k[len("SLUICE_TEST_S3_"):]: v for k, v in env.items()}


def garage_stop(d):
    subprocess.run([GARAGE, "stop", str(d)], timeout=60)


class Sampler:
    """Peak RSS and CPU seconds of a process while running."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop_flag = pid, 0, False
        self.cpu0 = self.cpu()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def cpu(self):
        try:
            f = open(f"/proc/{self.pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return 0.0

    def run(self):
        while not self.stop_flag:
            try:
                for line in open(f"/proc/{self.pid}/status"):
                    if line.startswith("VmRSS:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)
            except OSError:
                return
            time.sleep(0.05)

    def finish(self):
        cpu = self.cpu() - self.cpu0
        self.stop_flag = True
        self.t.join()
        return self.peak, cpu


def make_source(root, scale):
    small, big = max(1, round(1000 * scale)), max(6 << 20, round((256 << 20) * scale))
    root.mkdir(parents=True, exist_ok=True)
    for i in range(small):
        (root / f"s{i:05}.bin").write_bytes(os.urandom(1 << 20))
    for i in range(4):
        with open(root / f"b{i}.bin", "wb") as f:
            left = big
            while left:
                n = min(left, 8 << 20)
                f.write(os.urandom(n))
                left -= n
    return sum(p.stat().st_size for p in root.iterdir())


def sluice_rig(work, s3):
    cfg = f"""
[storage.stores.g]
url = "s3://{s3['BUCKET']}/bench"
endpoint = "{s3['ENDPOINT']}"
region = "{s3['REGION']}"
access_key_id = "{s3['ACCESS_KEY_ID']}"
allow_http = true
[ops]
migrate_concurrency = {CONCURRENCY}
part_size = {PART}
[transcode]
ladder = [{{name = "180p", height = 180, video_bitrate = 200000}}]
"""
    env = {"SLUICE_STORE_G_SECRET_ACCESS_KEY": s3["SECRET_ACCESS_KEY"]}
    return cfg, env


def run_sluice(work, src, total, s3, binary):
    os.environ["SLUICE_BIN"] = binary
    import conftest

    conftest.BIN = binary
    cfg, env = sluice_rig(work, s3)
    work.mkdir(parents=True, exist_ok=True)
    s = Sluice(work / "data", config_text=cfg, env=env)
    key, asset = s.ready_asset(work, "bench", seconds=2, size="320x180")
    with sqlite_db(work) as db:
        tenant_id = db.execute("SELECT tenant_id FROM assets WHERE id = ?", (asset,)).fetchone()[0]
    dest = work / "data" / "hot" / f"tenants/{tenant_id}/assets/{asset}/bench"
    shutil.copytree(src, dest)
    admin = s.admin_key
    out = {}

    def migrate(extra, kill_at=None):
        body = {"from": "hot", "to": "g", **extra}
        r = requests.post(f"{s.url}/v1/ops/migrations", json=body, headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def wait(job, kill_at=None):
        while True:
            j = requests.get(f"{s.url}/v1/jobs/{job}", headers={"Authorization": f"Bearer {admin}"}).json()
            if kill_at is not None and j["bytes_done"] >= kill_at:
                return j
            if j["status"] in ("succeeded", "failed"):
                return j
            time.sleep(0.05)

    # Copy (+ checksum verification, part of the job). The server's resident size before
    # the job (runtime, GStreamer, caches) is reported apart from the job's peak.
    out["rss_before"] = next(
        int(line.split()[1]) * 1024
        for line in open(f"/proc/{s.proc.pid}/status")
        if line.startswith("VmRSS:")
    )
    samp = Sampler(s.proc.pid)
    t0 = time.monotonic()
    j = wait(migrate({}))
    out["copy_s"] = time.monotonic() - t0
    out["rss"], out["cpu_s"] = samp.finish()
    assert j["status"] == "succeeded", j
    out["bytes"] = j["result"]["bytes_copied"]
    # Full re-read: move it back (objects found in place are skipped after a read), then
    # a job with verify = full.
    t0 = time.monotonic()
    back = wait(migrateback(s, admin))
    assert back["status"] == "succeeded", back
    j = wait(migrate({"verify": "full"}))
    out["full_verify_s"] = time.monotonic() - t0
    assert j["status"] == "succeeded", j
    s.stop()
    return s, out


def migrateback(s, admin):
    r = requests.post(
        f"{s.url}/v1/ops/migrations", json={"from": "g", "to": "hot"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert r.status_code == 202, r.text
    return r.json()["id"]


def sqlite_db(work):
    import sqlite3

    return sqlite3.connect(work / "data" / "meta.db", timeout=10)


def rclone_env(s3):
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(
        RCLONE_CONFIG_G_TYPE="s3", RCLONE_CONFIG_G_PROVIDER="Other",
        RCLONE_CONFIG_G_ENDPOINT=s3["ENDPOINT"], RCLONE_CONFIG_G_REGION=s3["REGION"],
        RCLONE_CONFIG_G_ACCESS_KEY_ID=s3["ACCESS_KEY_ID"],
        RCLONE_CONFIG_G_SECRET_ACCESS_KEY=s3["SECRET_ACCESS_KEY"],
        RCLONE_CONFIG_G_FORCE_PATH_STYLE="true",
    )
    return env


def run_rclone(src, total, s3, kill_at=None):
    env = rclone_env(s3)
    dst = f"g:{s3['BUCKET']}/bench"
    args = ["rclone", "copy", str(src), dst, "--transfers", str(CONCURRENCY), "--s3-chunk-size", "16M"]
    t0 = time.monotonic()
    p = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    wchar = 0
    while True:
        # wait4 reaps with the child's own peak RSS and CPU time.
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        try:
            for line in open(f"/proc/{p.pid}/io"):
                if line.startswith("wchar:"):
                    wchar = int(line.split()[1])
        except OSError:
            pass
        if kill_at is not None and wchar >= kill_at:
            p.send_signal(signal.SIGKILL)
            _, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.05)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return {
        "copy_s": wall, "rss": ru.ru_maxrss * 1024, "cpu_s": ru.ru_utime + ru.ru_stime,
        "wchar": wchar, "rc": p.returncode,
    }


def rclone_check(src, s3, download=False):
    env = rclone_env(s3)
    args = ["rclone", "check", str(src), f"g:{s3['BUCKET']}/bench"] + (["--download"] if download else [])
    t0 = time.monotonic()
    r = subprocess.run(args, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return time.monotonic() - t0


def sluice_crash(work, src, total, s3, binary):
    cfg, env = sluice_rig(work, s3)
    work.mkdir(parents=True, exist_ok=True)
    s = Sluice(work / "data", config_text=cfg, env=env)
    key, asset = s.ready_asset(work, "crash", seconds=2, size="320x180")
    with sqlite_db(work) as db:
        tenant_id = db.execute("SELECT tenant_id FROM assets WHERE id = ?", (asset,)).fetchone()[0]
    shutil.copytree(src, work / "data" / "hot" / f"tenants/{tenant_id}/assets/{asset}/bench")
    admin = s.admin_key
    r = requests.post(f"{s.url}/v1/ops/migrations", json={"from": "hot", "to": "g"},
                      headers={"Authorization": f"Bearer {admin}"})
    job = r.json()["id"]
    while True:
        j = requests.get(f"{s.url}/v1/jobs/{job}", headers={"Authorization": f"Bearer {admin}"}).json()
        if j["bytes_done"] >= total / 2 or j["status"] != "running" and j["status"] != "queued":
            break
        time.sleep(0.05)
    s.proc.send_signal(signal.SIGKILL)
    s.proc.wait()
    t0 = time.monotonic()
    s = Sluice(work / "data", config_text=cfg, env=dict(env, SLUICE_ADMIN_KEY=admin))
    while True:
        j = requests.get(f"{s.url}/v1/jobs/{job}", headers={"Authorization": f"Bearer {admin}"}).json()
        if j["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.05)
    resume = time.monotonic() - t0
    s.stop()
    res = j["result"]
    return {"resume_s": resume, "resent": res["bytes_sent"] - res["bytes_copied"], "status": j["status"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "sluice"))
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sluice-bench-migrate-"))
    try:
        src = base / "src"
        total = make_source(src, a.scale)
        print(f"source: {total / 2**20:.0f} MiB in {len(list(src.iterdir()))} objects")
        results = {"sluice": [], "rclone": []}
        for rnd in range(a.rounds):
            order = ["sluice", "rclone"] if rnd % 2 == 0 else ["rclone", "sluice"]
            for tool in order:
                g = base / f"garage-{tool}-{rnd}"
                s3 = garage_start(g)
                try:
                    if tool == "sluice":
                        _, out = run_sluice(base / f"sluice-{rnd}", src, total, s3, a.bin)
                    else:
                        out = run_rclone(src, total, s3)
                        out["check_s"] = rclone_check(src, s3)
                        out["full_verify_s"] = rclone_check(src, s3, download=True)
                    results[tool].append(out)
                    print(tool, json.dumps(out))
                finally:
                    garage_stop(g)
        # Crash at 50 % and resume.
        g = base / "garage-crash-s"
        s3 = garage_start(g)
        try:
            sc = sluice_crash(base / "sluice-crash", src, total, s3, a.bin)
        finally:
            garage_stop(g)
        g = base / "garage-crash-r"
        s3 = garage_start(g)
        try:
            first = run_rclone(src, total, s3, kill_at=total // 2)
            t0 = time.monotonic()
            second = run_rclone(src, total, s3)
            rc = {"resume_s": time.monotonic() - t0, "resent": first["wchar"] + second["wchar"] - total}
        finally:
            garage_stop(g)
        s, r = results["sluice"][-1], results["rclone"][-1]
        print(f"copy wall: sluice {s['copy_s']:.1f} s, rclone {r['copy_s']:.1f} s -> {r['copy_s'] / s['copy_s']:.2f}x")
        print(f"peak RSS: sluice {s['rss'] / 2**20:.0f} MiB ({s['rss_before'] / 2**20:.0f} MiB before the job), rclone {r['rss'] / 2**20:.0f} MiB -> {s['rss'] / max(r['rss'], 1):.2f} of rclone's")
        print(f"CPU: sluice {s['cpu_s']:.1f} s, rclone {r['cpu_s']:.1f} s -> {s['cpu_s'] / max(r['cpu_s'], 1e-9):.2f}")
        print(f"verify: rclone check {r['check_s']:.1f} s (sluice: inside the copy job); full re-read: sluice {s['full_verify_s']:.1f} s (move back + verify=full job), rclone check --download {r['full_verify_s']:.1f} s")
        print(f"crash at 50 %: sluice resume {sc['resume_s']:.1f} s, re-sent {sc['resent'] / 2**20:.1f} MiB ({sc['status']}); rclone resume {rc['resume_s']:.1f} s, re-sent ~{max(rc['resent'], 0) / 2**20:.1f} MiB")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
