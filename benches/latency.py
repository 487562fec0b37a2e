#!/usr/bin/env python3
"""Latencies the black-box tests must not assert (a busy 2-core machine makes any fixed
bound flaky), measured here instead, against the real `sluice` binary:

- cancel: from `POST /v1/jobs/{id}/cancel` on a running transcode to the job reading
  `cancelled`;
- viewer lag: from the moment a live segment and the playlist naming it are both stored
  (the later PUT answered) to the segment showing in the viewer playlist;
- stalled: how long after `live.stall_after_s` of silence a stream reads `stalled`.

Prints the median and the maximum of each over the runs (polling every 10 ms, so figures
are within about 10 ms plus one request).

usage: SLUICE_BIN=target/debug/sluice benches/latency.py [--runs 5]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from conftest import Sluice, make_clip  # noqa: E402

CONFIG = """
[live]
stall_after_s = 2
idle_timeout_s = 60
sweep_interval_s = 1

[transcode]
ladder = [{name = "360p", height = 360, video_bitrate = 800000}]
"""


def poll(fn, timeout=60, every=0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return time.monotonic()
        time.sleep(every)
    raise RuntimeError("timed out")


def summary(name, xs):
    print(f"{name:12} median {statistics.median(xs) * 1000:7.1f} ms   max {max(xs) * 1000:7.1f} ms   "
          f"({len(xs)} runs)")


def cancel_latency(s, key, clip, runs):
    h = {"Authorization": f"Bearer {key}"}
    out = []
    for _ in range(runs):
        asset = s.tus_upload(key, clip)
        job = s.asset(key, asset)["job_id"]
        get = lambda: requests.get(f"{s.url}/v1/jobs/{job}", headers=h, timeout=10).json()  # noqa: E731
        poll(lambda: get()["status"] == "running" and get()["progress"] > 0.05, timeout=120, every=0.1)
        t0 = time.monotonic()
        requests.post(f"{s.url}/v1/jobs/{job}/cancel", headers=h, timeout=10).raise_for_status()
        out.append(poll(lambda: get()["status"] == "cancelled") - t0)
    return out


def live_segments(root, n):
    d = root / "live"
    d.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=15",
                    "-t", str(n), "-c:v", "libx264", "-preset", "veryfast", "-g", "15",
                    "-sc_threshold", "0", "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
                    "-hls_segment_filename", str(d / "s%d.ts"), str(d / "x.m3u8")], check=True)
    return [(d / f"s{i}.ts").read_bytes() for i in range(n)]


def live_latencies(s, key, segments):
    h = {"Authorization": f"Bearer {key}"}
    st = requests.post(f"{s.url}/v1/live", json={}, headers=h, timeout=10).json()
    ing = st["ingest_url"]
    url = requests.post(f"{s.url}/v1/live/{st['id']}/playback", json={}, headers=h, timeout=10).json()["url"]
    lags = []
    for i, seg in enumerate(segments):
        lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:2", "#EXT-X-MEDIA-SEQUENCE:0"]
        for k in range(i + 1):
            lines += ["#EXTINF:1.0,", f"index{k}.ts"]
        requests.put(ing + f"index{i}.ts", data=seg, timeout=10).raise_for_status()
        requests.put(ing + "index.m3u8", data="\n".join(lines) + "\n", timeout=10).raise_for_status()
        t0 = time.monotonic()
        lags.append(poll(lambda: requests.get(url, timeout=10).text.count("#EXTINF") > i) - t0)
    # Silence: stalled after stall_after_s (2 s).
    t0 = time.monotonic()
    state = lambda: requests.get(f"{s.url}/v1/live/{st['id']}", headers=h, timeout=10).json()["state"]  # noqa: E731
    stalled = poll(lambda: state() == "stalled", every=0.05) - t0 - 2.0
    return lags, stalled


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sluice-latency-"))
    clip = make_clip(root / "long.mp4", seconds=40, size="1280x720")
    s = Sluice(root / "data", config_text=CONFIG)
    try:
        key = s.tenant("bench")["api_key"]
        summary("cancel", cancel_latency(s, key, clip, args.runs))
        segments = live_segments(root, 8)
        lags, stalls = [], []
        for _ in range(args.runs):
            lag, stalled = live_latencies(s, key, segments)
            lags += lag
            stalls.append(stalled)
        summary("viewer lag", lags)
        summary("stalled", stalls)
    finally:
        s.stop()


if __name__ == "__main__":
    main()
