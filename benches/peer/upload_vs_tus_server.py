#!/usr/bin/env python3
"""Peer comparison: upload one file over loopback to Sluice and to @tus/server (Node,
@tus/file-store) with the same clients, and write it with dd to the same disk, in one run.

Clients: one streaming PATCH with curl (`-T`, the file is never held in memory), and tuspy
with 64 MiB chunks. Each measurement is repeated (servers alternate) and the median is
printed in MB/s (10^6 bytes/s), with the Sluice/@tus/server ratios and each server's peak
RSS (VmHWM from /proc/PID/status, sampled at the end: the whole run's peak).

Durability differs and the table says so: Sluice fsyncs each PATCH's bytes before it
commits the offset; @tus/server does not fsync. `dd` is shown without and with
conv=fdatasync for the two references.

The Sluice binary: `--sluice-bin PATH`, else this script runs
`cargo build --release --bin sluice` (honouring CARGO_TARGET_DIR) and uses that.
The peer: `npm install --prefix benches/peer` once (node_modules is git-ignored).

usage: benches/peer/upload_vs_tus_server.py [--size 1GiB] [--repeat 3] [--dir DIR]
       (run it with a Python that has tuspy, e.g. the e2e venv)
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin

import requests
from tusclient import client as tus

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHUNK = 64 << 20


def parse_size(s):
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    s = s.strip().lower().removesuffix("ib").removesuffix("b")
    if s and s[-1] in units:
        return int(float(s[:-1]) * units[s[-1]])
    return int(s)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0  # MiB
    return float("nan")


def wait_line(proc, want, what):
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline().decode()
        if not line:
            break
        if want in line:
            return
    sys.exit(f"{what} did not start")


class Server:
    def __init__(self, name, proc, endpoint, headers, stored):
        self.name, self.proc, self.endpoint, self.headers, self.stored = (
            name, proc, endpoint, headers, stored)

    def clean(self):
        """Remove stored uploads between runs (disk space; the page cache stays warm)."""
        for d in self.stored:
            shutil.rmtree(d, ignore_errors=True)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_sluice(binary, work, name="sluice"):
    port, data = free_port(), work / name
    data.mkdir()
    cfg = work / f"{name}.toml"
    # Gateway only: no in-process worker competes for the 2 cores (jobs just queue).
    cfg.write_text("[workers]\nin_process = false\n")
    admin = "sk_admin_bench_" + os.urandom(8).hex()
    env = dict(os.environ, SLUICE_ADMIN_KEY=admin, RUST_LOG="warn")
    proc = subprocess.Popen(
        [binary, "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", str(data), "--config", str(cfg)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    wait_line(proc, "listening on", "sluice")
    url = f"http://127.0.0.1:{port}"
    r = requests.post(f"{url}/v1/tenants", json={"name": "bench"},
                      headers={"Authorization": f"Bearer {admin}"}, timeout=10)
    r.raise_for_status()
    key = r.json()["api_key"]
    return Server(name, proc, f"{url}/v1/uploads/", {"Authorization": f"Bearer {key}"},
                  [data / "hot" / "tenants"])


def start_tus_server(work):
    if not (HERE / "node_modules" / "@tus" / "server").exists():
        sys.exit(f"npm install --prefix {HERE} first")
    port, files = free_port(), work / "tus-files"
    files.mkdir()
    proc = subprocess.Popen(["node", str(HERE / "tus_server.mjs"), str(port), str(files)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    wait_line(proc, "listening", "@tus/server")
    return Server("@tus/server", proc, f"http://127.0.0.1:{port}/files/", {}, [files])


def create(server, size):
    h = {**server.headers, "Tus-Resumable": "1.0.0", "Upload-Length": str(size)}
    r = requests.post(server.endpoint, headers=h, timeout=10)
    assert r.status_code == 201, r.text
    return urljoin(server.endpoint, r.headers["Location"])


def offset(server, loc):
    h = {**server.headers, "Tus-Resumable": "1.0.0"}
    return int(requests.head(loc, headers=h, timeout=10).headers["Upload-Offset"])


def run_curl(server, src, size):
    loc = create(server, size)
    cmd = ["curl", "-sS", "-f", "-o", "/dev/null", "-X", "PATCH", "-T", str(src),
           "-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 0", "-H", "Expect:",
           "-H", "Content-Type: application/offset+octet-stream"]
    for k, v in server.headers.items():
        cmd += ["-H", f"{k}: {v}"]
    t0 = time.monotonic()
    subprocess.run(cmd + [loc], check=True)
    dt = time.monotonic() - t0
    assert offset(server, loc) == size
    return dt


def run_tuspy(server, src, size):
    c = tus.TusClient(server.endpoint, headers=server.headers)
    t0 = time.monotonic()
    # (with metadata: @tus/server refuses the empty Upload-Metadata tuspy sends otherwise)
    up = c.uploader(str(src), chunk_size=CHUNK, metadata={"filename": src.name})
    up.upload()
    dt = time.monotonic() - t0
    assert offset(server, up.url) == size
    return dt


def run_dd(src, out, sync):
    cmd = ["dd", f"if={src}", f"of={out}", "bs=4M", "status=none"]
    if sync:
        cmd.append("conv=fdatasync")
    t0 = time.monotonic()
    subprocess.run(cmd, check=True)
    dt = time.monotonic() - t0
    out.unlink()
    return dt


def sluice_binary(args):
    if args.sluice_bin:
        return args.sluice_bin, "as given"
    subprocess.run(["cargo", "build", "--release", "--bin", "sluice"], cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return str(target / "release" / "sluice"), "release build"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", help="work directory (default: a new temp dir); all writes land here")
    ap.add_argument("--sluice-bin")
    args = ap.parse_args()
    size = parse_size(args.size)
    binary, how = sluice_binary(args)
    work = Path(tempfile.mkdtemp(prefix="sluice-upload-bench-", dir=args.dir))
    servers = []
    try:
        src = work / "source.bin"
        with open(src, "wb") as f:
            left = size
            while left:
                n = min(left, 64 << 20)
                f.write(os.urandom(n))
                left -= n
        subprocess.run(["sync"], check=True)
        with open(src, "rb") as f:  # every client reads it from the page cache
            while f.read(16 << 20):
                pass
        servers = [start_sluice(binary, work), start_tus_server(work)]
        results = {}
        for i in range(args.repeat):
            for name, fn in [("dd", False), ("dd conv=fdatasync", True)]:
                subprocess.run(["sync"], check=True)
                results.setdefault((name, ""), []).append(run_dd(src, work / "dd.out", fn))
            for client, run in [("curl, one PATCH", run_curl), ("tuspy, 64 MiB chunks", run_tuspy)]:
                for s in servers:
                    subprocess.run(["sync"], check=True)
                    results.setdefault((client, s.name), []).append(run(s, src, size))
                    s.clean()
            print(f"round {i + 1}/{args.repeat} done", file=sys.stderr)
        mbs = {k: size / statistics.median(v) / 1e6 for k, v in results.items()}
        best = {k: size / min(v) / 1e6 for k, v in results.items()}
        print(f"\nupload of {size} bytes ({size / (1 << 20):.0f} MiB) over loopback to {work}")
        print(f"sluice: {binary} ({how}); MB/s = 10^6 bytes/s, median (best) of {args.repeat}\n")
        print(f"{'client':<24}{'sluice':>12}{'@tus/server':>14}{'ratio':>8}")
        for client in ("curl, one PATCH", "tuspy, 64 MiB chunks"):
            k1, k2 = (client, "sluice"), (client, "@tus/server")
            print(f"{client:<24}{mbs[k1]:>5.0f} ({best[k1]:>4.0f}){mbs[k2]:>7.0f} ({best[k2]:>4.0f})"
                  f"{mbs[k1] / mbs[k2]:>7.2f}x")
        for name in ("dd", "dd conv=fdatasync"):
            k = (name, "")
            print(f"{name:<24}{mbs[k]:>5.0f} ({best[k]:>4.0f})")
        print("\npeak RSS (VmHWM, MiB):  " + "  ".join(
            f"{s.name} {vm(s.proc.pid, 'VmHWM'):.1f}" for s in servers))
        print("durability: sluice fsyncs every PATCH before committing its offset; "
              "@tus/server does not fsync")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
