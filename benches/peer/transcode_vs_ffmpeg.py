#!/usr/bin/env python3
"""Peer comparison: the same 1080p30 source → the same 4-rung HLS ladder
(1080/720/480/360, x264 veryfast, same bitrates, 2 s closed GOPs, AAC 128k), made by
Sluice's worker pipeline and by ffmpeg (split + var_stream_map), alternately in one run.

Each run is a child process measured with wait4(): wall time, CPU time (user+sys) and
peak RSS. Prints the medians and the Sluice/ffmpeg ratios (lower is better for Sluice).

usage: benches/peer/transcode_vs_ffmpeg.py [--seconds 25] [--runs 3]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LADDER = [(1920, 1080, 5000), (1280, 720, 2800), (854, 480, 1400), (640, 360, 800)]


def measure(cmd):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace")
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({p.returncode}):\n{err[-3000:]}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0  # MiB


def ffmpeg_cmd(src, out):
    split = "".join(f"[v{i}]" for i in range(len(LADDER)))
    fc = f"[0:v]fps=30,split={len(LADDER)}{split};" + ";".join(
        f"[v{i}]scale={w}:{h},format=yuv420p[o{i}]" for i, (w, h, _) in enumerate(LADDER)
    )
    cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-filter_complex", fc]
    for i in range(len(LADDER)):
        cmd += ["-map", f"[o{i}]", "-map", "0:a"]
    for i, (_, _, kbps) in enumerate(LADDER):
        cmd += [f"-b:v:{i}", f"{kbps}k", f"-maxrate:v:{i}", f"{kbps}k", f"-bufsize:v:{i}", f"{kbps}k"]
    cmd += [
        "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-bf", "2",
        "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", "128k",
        "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod",
        "-hls_segment_filename", f"{out}/%v/seg_%05d.ts",
        "-master_pl_name", "master.m3u8",
        "-var_stream_map", " ".join(f"v:{i},a:{i}" for i in range(len(LADDER))),
        f"{out}/%v/index.m3u8",
    ]
    return cmd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=25)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "sluice-benches",
                    "--bin", "sluice-transcode"], check=True, cwd=ROOT)
    sluice = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "sluice-transcode"
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        tmp = Path(tmp)
        src = tmp / "src.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y",
                        "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30",
                        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                        "-t", str(a.seconds), "-c:v", "libx264", "-preset", "veryfast",
                        "-pix_fmt", "yuv420p", "-b:v", "8M", "-c:a", "aac", str(src)], check=True)
        res = {"sluice": [], "ffmpeg": []}
        for r in range(a.runs):
            for name in ("sluice", "ffmpeg"):
                out = tmp / f"{name}-{r}"
                out.mkdir()
                cmd = [str(sluice), str(src), str(out)] if name == "sluice" else ffmpeg_cmd(src, out)
                res[name].append(measure(cmd))
                w, c, m = res[name][-1]
                print(f"run {r + 1} {name:6}: wall {w:6.2f} s  cpu {c:6.2f} s  peak {m:6.0f} MiB", flush=True)
        med = {n: [statistics.median(x[i] for x in v) for i in range(3)] for n, v in res.items()}
        print(f"\n{a.seconds} s 1080p30 source -> 1080/720/480/360, x264 veryfast, {a.runs} runs, medians:")
        for n, (w, c, m) in med.items():
            print(f"  {n:6}: wall {w:6.2f} s (real-time factor {w / a.seconds:.2f})  cpu {c:6.2f} s  peak {m:6.0f} MiB")
        s, f = med["sluice"], med["ffmpeg"]
        print(f"  ratio sluice/ffmpeg: wall {s[0] / f[0]:.2f}  cpu {s[1] / f[1]:.2f}  peak memory {s[2] / f[2]:.2f}")


if __name__ == "__main__":
    main()
