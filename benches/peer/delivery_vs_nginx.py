#!/usr/bin/env python3
"""Peer comparison for viewer delivery: Sluice's playback path against nginx serving the
same files statically (sendfile, open_file_cache), in one run, servers alternating.

1. a ~1 MiB segment, 64 keep-alive connections (wrk -t1 -c64), cached at both;
2. a small variant playlist, same load;
3. thousands of keep-alive viewers polling a playlist and fetching a segment every 2 s
   (benches/src/bin/viewers.rs; bounded in time): errors, p99, the gateway's peak RSS. The
   viewers play the low rendition (a ~60 KB segment): 10,000 viewers of 1 MiB segments
   every 2 s would be 5 GB/s, past what either server (or this machine's loopback) moves;
4. thundering herd: 1,000 simultaneous requests for a segment nobody has read yet, and the
   storage reads they cost (`sluice_storage_reads_total`);
5. the same segment load through the nginx edge `sluice edge nginx` writes, against
   nginx static.

Requests/s and p99 are wrk's; each figure is the median of `--rounds` runs. Server CPU per
request is utime+stime of the server's processes over a run divided by its requests (wrk's
single thread saturates a core on 1 MiB responses, so requests/s partly measures the
client). Machines here are shared: read the ratios, not the absolute numbers.

The Sluice binary: `--sluice-bin PATH`, else `target/release/sluice` (what the README's
first command builds), built if missing. Needs wrk and nginx (Debian packages).

usage: benches/peer/delivery_vs_nginx.py [--rounds 3] [--seconds 8] [--viewers 10000]
       (run it with the e2e venv's Python: it needs requests)
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))

CONFIG = """
[transcode]
ladder = [
  {name = "720p", height = 720, video_bitrate = 4500000},
  {name = "180p", height = 180, video_bitrate = 250000},
]
[gateway]
max_connections = 20000
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def binaries(args):
    sluice = Path(args.sluice_bin) if args.sluice_bin else TARGET / "release" / "sluice"
    if not args.sluice_bin:
        subprocess.run(["cargo", "build", "--release", "--bin", "sluice"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "-p", "sluice-benches", "--bin", "viewers"],
                   cwd=ROOT, check=True)
    return str(sluice), str(TARGET / "release" / "viewers")


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def peak_rss_mib(pid):
    m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024


def wrk(url, seconds, conns=64):
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p99_ms": p99, "requests": total,
            "errors": int(errors.group(1)) if errors else 0, "socket_errors": sock.group(1) if sock else ""}


class Nginx:
    """nginx with a configuration text, as a foreground process."""

    def __init__(self, conf_text, dirpath):
        self.conf = Path(dirpath) / "nginx.conf"
        self.conf.write_text(conf_text)
        self.proc = subprocess.Popen(["nginx", "-c", str(self.conf), "-g", "daemon off;"],
                                     stderr=subprocess.DEVNULL)

    def pids(self):
        return [self.proc.pid] + children(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def static_nginx(root, port, work):
    return Nginx(f"""
worker_processes auto;
worker_rlimit_nofile 65536;
pid {work}/static.pid;
error_log {work}/static-error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    open_file_cache max=1000 inactive=60s;
    client_body_temp_path {work}/b; proxy_temp_path {work}/p; fastcgi_temp_path {work}/f;
    uwsgi_temp_path {work}/u; scgi_temp_path {work}/s;
    types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        root {root};
    }}
}}
""", work)


def measure(name, url, pids_fn, seconds):
    before = cpu_ticks(pids_fn())
    r = wrk(url, seconds)
    after = cpu_ticks(pids_fn())
    hz = os.sysconf("SC_CLK_TCK")
    r["cpu_us_per_req"] = (after - before) / hz * 1e6 / max(r["requests"], 1)
    print(f"  {name:<14} {r['rps']:>10.0f} req/s  p99 {r['p99_ms']:>7.2f} ms  "
          f"{r['cpu_us_per_req']:>6.1f} µs CPU/req  errors {r['errors']} {r['socket_errors']}",
          flush=True)
    return r


def compare(title, runs, rounds, seconds):
    """runs: [(name, url, pids_fn)]; alternates them `rounds` times; prints medians."""
    print(f"\n== {title}")
    got = {name: [] for name, _, _ in runs}
    for _ in range(rounds):
        for name, url, pids in runs:
            got[name].append(measure(name, url, pids, seconds))
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p99_ms", "cpu_us_per_req")}
           for name, rs in got.items()}
    return med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice-bin")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--viewers", type=int, default=10_000)
    ap.add_argument("--viewer-seconds", type=int, default=30)
    args = ap.parse_args()
    for tool in ("wrk", "nginx", "ffmpeg"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install {tool}")
    sluice_bin, viewers_bin = binaries(args)
    work = Path(tempfile.mkdtemp(prefix="sluice-delivery-"))
    os.chmod(work, 0o755)
    procs = []
    try:
        # Sluice with one 720p rung and a clip whose segments are about 1 MiB.
        port = free_port()
        (work / "sluice.toml").write_text(CONFIG)
        sl = subprocess.Popen([sluice_bin, "serve", "--addr", f"127.0.0.1:{port}",
                               "--data-dir", str(work / "data"), "--config", str(work / "sluice.toml")],
                              stdout=subprocess.PIPE, stderr=open(work / "sluice.log", "wb"), text=True)
        procs.append(sl)
        admin = None
        for line in sl.stdout:
            m = re.match(r"admin key \(shown once, stored in .*\): (\S+)", line)
            if m:
                admin = m.group(1)
            if line.startswith("listening on"):
                break
        base = f"http://127.0.0.1:{port}"
        threading.Thread(target=lambda: [None for _ in sl.stdout], daemon=True).start()
        tenant = requests.post(f"{base}/v1/tenants", json={"name": "bench"},
                               headers={"Authorization": f"Bearer {admin}"}, timeout=10).json()
        key = tenant["api_key"]
        clip = work / "clip.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
                        "-f", "lavfi", "-i", "sine=frequency=440", "-t", "40",
                        "-vf", "noise=alls=30:allf=t", "-c:v", "libx264", "-preset", "ultrafast",
                        "-b:v", "6M", "-c:a", "aac", "-shortest", str(clip)], check=True)
        r = requests.post(f"{base}/v1/assets", data=clip.read_bytes(),
                          headers={"Authorization": f"Bearer {key}", "Content-Type": "video/mp4"},
                          timeout=120)
        asset = r.json()["id"]
        deadline = time.time() + 600
        while True:
            a = requests.get(f"{base}/v1/assets/{asset}", headers={"Authorization": f"Bearer {key}"},
                             timeout=10).json()
            if a["status"] in ("ready", "failed"):
                break
            if time.time() > deadline:
                sys.exit("the transcode did not finish")
            time.sleep(1)
        assert a["status"] == "ready", a
        master = requests.post(f"{base}/v1/assets/{asset}/playback", json={"ttl_s": 86400},
                               headers={"Authorization": f"Bearer {key}"}, timeout=10).json()["url"]
        prefix = urlsplit(master).path.rsplit("/", 1)[0]
        hls = next((work / "data" / "hot" / "tenants").glob(f"*/assets/{asset}/hls"))
        segs = sorted((hls / "720p").glob("seg_*.ts"), key=lambda p: abs(p.stat().st_size - (1 << 20)))
        seg, herd_seg = segs[0], segs[1]
        playlist = hls / "720p" / "index.m3u8"
        low_seg = sorted((hls / "180p").glob("seg_*.ts"))[1]
        static_root = work / "static"
        (static_root / "720p").mkdir(parents=True)
        (static_root / "180p").mkdir(parents=True)
        for f in (seg, herd_seg, playlist):
            shutil.copy(f, static_root / "720p" / f.name)
        for f in (low_seg, hls / "180p" / "index.m3u8"):
            shutil.copy(f, static_root / "180p" / f.name)
        for d in (static_root, static_root / "720p", static_root / "180p"):
            os.chmod(d, 0o755)
        print(f"segment {seg.name}: {seg.stat().st_size} bytes; playlist {playlist.stat().st_size} "
              f"bytes; viewers' segment 180p/{low_seg.name}: {low_seg.stat().st_size} bytes")

        nport = free_port()
        ng = static_nginx(static_root, nport, work)
        procs.append(ng.proc)
        wait_port(nport)
        nbase = f"http://127.0.0.1:{nport}"
        spids = lambda: [sl.pid]  # noqa: E731

        results = {}
        rel_seg, rel_pl = f"720p/{seg.name}", "720p/index.m3u8"
        for f in (rel_seg, rel_pl):  # warm both caches
            requests.get(f"{base}{prefix}/{f}", timeout=10)
            requests.get(f"{nbase}/{f}", timeout=10)
        results["segment"] = compare("1 MiB segment, 64 connections", [
            ("sluice", f"{base}{prefix}/{rel_seg}", spids),
            ("nginx", f"{nbase}/{rel_seg}", ng.pids)], args.rounds, args.seconds)
        results["playlist"] = compare("small playlist, 64 connections", [
            ("sluice", f"{base}{prefix}/{rel_pl}", spids),
            ("nginx", f"{nbase}/{rel_pl}", ng.pids)], args.rounds, args.seconds)

        # Thundering herd on a segment nobody has read.
        def reads():
            t = requests.get(f"{base}/metrics", timeout=10).text
            m = re.search(r'^sluice_storage_reads_total\{tier="hot"\} (\S+)$', t, re.M)
            return float(m.group(1)) if m else 0.0
        before = reads()
        barrier = threading.Barrier(1000)
        statuses = []

        def herd():
            barrier.wait()
            statuses.append(requests.get(f"{base}{prefix}/720p/{herd_seg.name}", timeout=60).status_code)
        ts = [threading.Thread(target=herd) for _ in range(1000)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        results["herd"] = {"requests": len(statuses), "ok": statuses.count(200),
                           "storage_reads": reads() - before}
        print(f"\n== thundering herd: {results['herd']}")

        # Many viewers.
        print(f"\n== {args.viewers} keep-alive viewers, a playlist and a segment every 2 s, "
              f"{args.viewer_seconds} s")
        results["viewers"] = {}
        for name, addr, pre in (("sluice", f"127.0.0.1:{port}", prefix), ("nginx", f"127.0.0.1:{nport}", "")):
            out = subprocess.run([viewers_bin, "--addr", addr, "--playlist", f"{pre}/180p/index.m3u8",
                                  "--segment", f"{pre}/180p/{low_seg.name}", "--viewers", str(args.viewers),
                                  "--duration-s", str(args.viewer_seconds)],
                                 capture_output=True, text=True, timeout=args.viewer_seconds + 300)
            v = json.loads(out.stdout.strip().splitlines()[-1])
            if name == "sluice":
                v["gateway_peak_rss_mib"] = round(peak_rss_mib(sl.pid), 1)
            results["viewers"][name] = v
            print(f"  {name:<8} {v}", flush=True)

        # The generated edge in front of Sluice, against nginx static.
        eport = free_port()
        edir = work / "edge"
        edir.mkdir()
        os.chmod(edir, 0o777)
        conf = subprocess.run([sluice_bin, "edge", "nginx", "--origin", base, "--listen",
                               f"127.0.0.1:{eport}", "--cache-dir", str(edir)],
                              capture_output=True, text=True, check=True).stdout
        conf = conf.replace(f"access_log {edir}/access.log;", "access_log off;")
        edge = Nginx(conf, edir)
        procs.append(edge.proc)
        wait_port(eport)
        eurl = f"http://127.0.0.1:{eport}{prefix}/{rel_seg}"
        requests.get(eurl, timeout=10)
        results["edge"] = compare("1 MiB segment through the edge vs nginx static", [
            ("edge", eurl, edge.pids),
            ("nginx", f"{nbase}/{rel_seg}", ng.pids)], args.rounds, args.seconds)

        print("\n== summary (medians; ratio = Sluice / nginx)")
        for k in ("segment", "playlist"):
            s, n = results[k]["sluice"], results[k]["nginx"]
            print(f"  {k:<9} req/s {s['rps']:.0f} vs {n['rps']:.0f} = {s['rps'] / n['rps']:.2f}x; "
                  f"p99 {s['p99_ms']:.2f} vs {n['p99_ms']:.2f} ms; "
                  f"CPU/req {s['cpu_us_per_req']:.1f} vs {n['cpu_us_per_req']:.1f} µs")
        e, n = results["edge"]["edge"], results["edge"]["nginx"]
        print(f"  edge      req/s {e['rps']:.0f} vs {n['rps']:.0f} = {e['rps'] / n['rps']:.2f}x; "
              f"p99 {e['p99_ms']:.2f} vs {n['p99_ms']:.2f} ms")
        print(f"  herd      {results['herd']}")
        print(f"  viewers   {results['viewers']}")
        print(json.dumps(results))
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
