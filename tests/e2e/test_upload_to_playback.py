"""The first end-to-end slice: a tus upload of a clip made at test time becomes adaptive
HLS that a player opens with no headers, checked independently with ffprobe."""

import re
import urllib.parse

import pytest
import requests

from conftest import ffprobe_json, make_clip, raw_request, sha256

CLIP_SECONDS = 12
SEGMENT_S = 2.0


def parse_master(text):
    lines = text.strip().splitlines()
    assert lines[0] == "#EXTM3U"
    variants = []
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            attrs = dict(re.findall(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', line.split(":", 1)[1]))
            variants.append((attrs, lines[i + 1]))
    return variants


def parse_media(text):
    lines = text.strip().splitlines()
    assert lines[0] == "#EXTM3U"
    assert "#EXT-X-ENDLIST" in lines
    target = int(next(l for l in lines if l.startswith("#EXT-X-TARGETDURATION:")).split(":")[1])
    segs = []
    for i, line in enumerate(lines):
        if line.startswith("#EXTINF:"):
            segs.append((float(line[8:].split(",")[0]), lines[i + 1]))
    return target, segs


@pytest.fixture(scope="module")
def ready_asset(server, workdir):
    clip = make_clip(workdir / "clip.mp4", seconds=CLIP_SECONDS)
    t = server.tenant("e2e")
    asset_id = server.tus_upload(t["api_key"], clip, chunk_size=256 * 1024)
    a = server.wait_asset(t["api_key"], asset_id)
    assert a["status"] == "ready", a
    return t, clip, a


def test_asset_json_and_source(server, ready_asset):
    t, clip, a = ready_asset
    assert a["error"] is None
    assert a["progress"] == 1.0
    assert a["filename"] == "clip.mp4"
    assert abs(a["duration_s"] - CLIP_SECONDS) <= 0.5
    # 720p source: never upscaled to 1080p; 720/480/360 with even widths.
    assert [(r["name"], r["width"], r["height"]) for r in a["renditions"]] == [
        ("720p", 1280, 720),
        ("480p", 854, 480),
        ("360p", 640, 360),
    ]
    assert all(r["bandwidth"] > 0 for r in a["renditions"])
    # Progress was visible while the job ran: polled every 0.3 s over a transcode of
    # several seconds (stored about once a second), some value strictly between 0 and 1
    # was seen while the asset was processing, and it never went backwards.
    running = [p for status, p in a["_progress_seen"] if status == "processing"]
    assert any(0.0 < p < 1.0 for p in running), a["_progress_seen"]
    assert running == sorted(running), a["_progress_seen"]
    # The original bytes, exactly as uploaded.
    r = requests.get(
        f"{server.url}/v1/assets/{a['id']}/source",
        headers={"Authorization": f"Bearer {t['api_key']}"},
        timeout=30,
    )
    assert r.status_code == 200
    assert sha256(r.content) == sha256(clip)
    # The job is visible and succeeded.
    j = requests.get(
        f"{server.url}/v1/jobs/{a['job_id']}",
        headers={"Authorization": f"Bearer {t['api_key']}"},
        timeout=10,
    ).json()
    assert j["status"] == "succeeded" and j["progress"] == 1.0 and j["attempts"] == 1
    # Report the transcode real-time factor (wall time of the job / clip duration).
    from datetime import datetime

    started = datetime.fromisoformat(j["started_at"].replace("Z", "+00:00"))
    finished = datetime.fromisoformat(j["finished_at"].replace("Z", "+00:00"))
    wall = (finished - started).total_seconds()
    print(f"\nTRANSCODE {CLIP_SECONDS}s 1280x720@30 -> 720p/480p/360p: wall {wall:.2f}s, "
          f"real-time factor {wall / CLIP_SECONDS:.2f}")


def test_hls_playback_checked_by_ffprobe(server, ready_asset, workdir):
    t, _clip, a = ready_asset
    r = requests.post(
        f"{server.url}/v1/assets/{a['id']}/playback",
        json={"ttl_s": 600},
        headers={"Authorization": f"Bearer {t['api_key']}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    url = r.json()["url"]
    assert r.json()["expires_at"].endswith("Z")

    # A player opens it with no headers; a page on another origin may too (CORS).
    m = requests.get(url, headers={"Origin": "https://player.example"}, timeout=10)
    assert m.status_code == 200, m.text
    assert m.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert m.headers["Access-Control-Allow-Origin"] == "*"
    variants = parse_master(m.text)
    assert len(variants) == 3
    rend = {r["name"]: r for r in a["renditions"]}

    starts = {}
    durations = {}
    for attrs, uri in variants:
        assert int(attrs["BANDWIDTH"]) > 0
        w, h = map(int, attrs["RESOLUTION"].split("x"))
        codecs = attrs["CODECS"].strip('"')
        assert re.fullmatch(r"avc1\.[0-9a-f]{6},mp4a\.40\.2", codecs), codecs
        name = uri.split("/")[0]
        assert (rend[name]["width"], rend[name]["height"]) == (w, h)
        vurl = urllib.parse.urljoin(url, uri)
        pl = requests.get(vurl, timeout=10)
        assert pl.status_code == 200
        target, segs = parse_media(pl.text)
        assert all(round(d) <= target for d, _ in segs)
        total = sum(d for d, _ in segs)
        assert abs(total - CLIP_SECONDS) <= 0.5, (name, total)
        durations[name] = [round(d, 2) for d, _ in segs]
        seg_starts = []
        vdir = workdir / "dl" / name
        vdir.mkdir(parents=True, exist_ok=True)
        concat = vdir / "all.ts"
        with open(concat, "wb") as out:
            for i, (d, suri) in enumerate(segs):
                s = requests.get(urllib.parse.urljoin(vurl, suri), timeout=10)
                assert s.status_code == 200
                assert s.headers["Content-Type"] == "video/mp2t"
                assert "immutable" in s.headers["Cache-Control"]
                f = vdir / f"{i}.ts"
                f.write_bytes(s.content)
                out.write(s.content)
                info = ffprobe_json(
                    "-select_streams", "v:0", "-show_streams",
                    "-show_frames", "-read_intervals", "%+#1",
                    "-show_entries", "stream=width,height,codec_name:frame=key_frame,pts_time,pict_type",
                    str(f),
                )
                st = info["streams"][0]
                assert (st["width"], st["height"]) == (w, h), (name, i)
                assert st["codec_name"] == "h264"
                first = info["frames"][0]
                assert first["key_frame"] == 1, f"{name} segment {i} does not start on a keyframe"
                seg_starts.append(float(first["pts_time"]))
                # Every segment carries the audio track too.
                aud = ffprobe_json("-select_streams", "a", "-show_entries", "stream=codec_name", str(f))
                assert aud["streams"][0]["codec_name"] == "aac"
        starts[name] = seg_starts
        whole = ffprobe_json("-show_entries", "format=duration", str(concat))
        assert abs(float(whole["format"]["duration"]) - CLIP_SECONDS) <= 0.5

    # Keyframes aligned across variants: same segment boundaries, same start times.
    names = list(starts)
    for n in names[1:]:
        assert len(starts[n]) == len(starts[names[0]])
        assert durations[n] == durations[names[0]]
        for a_start, b_start in zip(starts[names[0]], starts[n]):
            assert abs(a_start - b_start) < 0.034, (names[0], n, a_start, b_start)
    # Thumbnails from the same decode, served beside the playlists.
    base = url.rsplit("/", 1)[0]
    poster = requests.get(f"{base}/poster.jpg", timeout=10)
    assert poster.status_code == 200 and poster.headers["Content-Type"] == "image/jpeg"
    assert poster.content[:2] == b"\xff\xd8"
    vtt = requests.get(f"{base}/storyboard.vtt", timeout=10)
    assert vtt.status_code == 200 and vtt.text.startswith("WEBVTT")
    assert vtt.text.count("storyboard.jpg#xywh=") == CLIP_SECONDS // 2
    assert requests.get(f"{base}/storyboard.jpg", timeout=10).content[:2] == b"\xff\xd8"
    # Segment boundaries at the configured duration (all but the last are 2 s).
    assert all(abs(d - SEGMENT_S) < 0.05 for d in durations[names[0]][:-1])


def test_playback_token_is_enforced(server, ready_asset):
    t, _clip, a = ready_asset
    url = requests.post(
        f"{server.url}/v1/assets/{a['id']}/playback",
        headers={"Authorization": f"Bearer {t['api_key']}"},
        timeout=10,
    ).json()["url"]
    parts = url.split("/")
    # Tamper with the signature.
    tok = parts[-2]
    bad = tok[:-1] + ("A" if tok[-1] != "A" else "B")
    r = requests.get("/".join(parts[:-2] + [bad, parts[-1]]), timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "invalid_token"
    # Climb out of the asset: sent as raw bytes, so the server really sees the dot
    # segments and encoded slashes (an HTTP library would normalise them away).
    base_path = "/" + url.split("/", 3)[3].rsplit("/", 1)[0]
    source = requests.get(f"{server.url}/v1/assets/{a['id']}/source",
                          headers={"Authorization": f"Bearer {t['api_key']}"}, timeout=30).content
    for climb in ["/../../source", "/../../../source", "/%2e%2e/%2e%2e/source", "/..%2f..%2fsource",
                  "/360p/..%2F..%2F..%2Fsource", "/%2E%2E/%2E%2E/source", "/360p/../../source"]:
        status, body = raw_request(server.url, "GET", base_path + climb)
        assert status in (400, 403, 404), (climb, status)
        assert source not in body and b"ftyp" not in body[:64], climb
    # Missing file in a valid asset.
    r = requests.get(url.rsplit("/", 1)[0] + "/720p/nope.ts", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    # Range request on a segment.
    seg_url = url.rsplit("/", 1)[0] + "/360p/seg_00000.ts"
    r = requests.get(seg_url, headers={"Range": "bytes=0-187"}, timeout=10)
    assert r.status_code == 206 and len(r.content) == 188 and r.content[0] == 0x47
    # Conditional request.
    full = requests.get(seg_url, timeout=10)
    r = requests.get(seg_url, headers={"If-None-Match": full.headers["ETag"]}, timeout=10)
    assert r.status_code == 304
