"""Per-tenant transcode presets: validation, a tenant ladder that changes the output
(checked with ffprobe), the audio-only rendition, the snapshot of the preset into a job,
and re-running one rendition of a ready asset while the rest stays byte-identical."""

import re
import time
import urllib.parse

import pytest
import requests

from conftest import ffprobe_json, make_clip, sha256

CLIP_SECONDS = 6
SEGMENT_S = 3
PRESET = {
    "ladder": [
        {"name": "240p", "height": 240, "video_bitrate": 400000},
        {"name": "144p", "height": 144, "video_bitrate": 150000},
        # Above the 320x240 source: never upscaled, so never made.
        {"name": "480p", "height": 480, "video_bitrate": 900000},
    ],
    "x264_preset": "ultrafast",
    "segment_duration_s": SEGMENT_S,
    "audio_bitrate": 64000,
    "audio_only": True,
}


def auth(t):
    return {"Authorization": f"Bearer {t['api_key']}"}


def put_preset(server, t, body):
    return requests.put(f"{server.url}/v1/preset", json=body, headers=auth(t), timeout=10)


def parse_master(text):
    lines = text.strip().splitlines()
    assert lines[0] == "#EXTM3U"
    out = []
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            attrs = dict(re.findall(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', line.split(":", 1)[1]))
            out.append((attrs, lines[i + 1]))
    return out


def parse_media(text):
    lines = text.strip().splitlines()
    assert "#EXT-X-ENDLIST" in lines
    target = int(next(l for l in lines if l.startswith("#EXT-X-TARGETDURATION:")).split(":")[1])
    segs = [
        (float(line[8:].split(",")[0]), lines[i + 1])
        for i, line in enumerate(lines)
        if line.startswith("#EXTINF:")
    ]
    return target, segs


def playback_url(server, t, asset_id):
    r = requests.post(
        f"{server.url}/v1/assets/{asset_id}/playback", json={"ttl_s": 900}, headers=auth(t), timeout=10
    )
    assert r.status_code == 200, r.text
    return r.json()["url"]


def download_rendition(url, name, dest):
    """The rendition's playlist and segments: [(uri, bytes, etag)], target duration."""
    pl = requests.get(urllib.parse.urljoin(url, f"{name}/index.m3u8"), timeout=10)
    assert pl.status_code == 200, pl.text
    target, segs = parse_media(pl.text)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for d, uri in segs:
        s = requests.get(urllib.parse.urljoin(url, f"{name}/{uri}"), timeout=10)
        assert s.status_code == 200, (name, uri)
        (dest / uri).write_bytes(s.content)
        out.append((uri, d, s.content, s.headers.get("ETag")))
    return target, out


def first_video_frame(path):
    v = ffprobe_json(
        "-select_streams", "v:0", "-read_intervals", "%+#1",
        "-show_entries", "frame=key_frame,pict_type,pts_time,width,height", str(path),
    )
    return v["frames"][0]


@pytest.fixture(scope="module")
def tenant(server):
    return server.tenant("presets")


@pytest.fixture(scope="module")
def preset_asset(server, tenant, workdir):
    r = put_preset(server, tenant, PRESET)
    assert r.status_code == 200, r.text
    clip = make_clip(workdir / "preset-clip.mp4", seconds=CLIP_SECONDS, size="320x240", rate=25)
    asset_id = server.tus_upload(tenant["api_key"], clip)
    # The job is queued with the preset above; changing it now must not change this job.
    r = put_preset(server, tenant, {"segment_duration_s": 2, "audio_only": False})
    assert r.status_code == 200, r.text
    a = server.wait_asset(tenant["api_key"], asset_id, timeout=180)
    assert a["status"] == "ready", a
    return a


def test_preset_validation(server, workdir):
    t = server.tenant("preset-validation")
    r = requests.get(f"{server.url}/v1/preset", headers=auth(t), timeout=10)
    assert r.status_code == 200
    view = r.json()
    assert view["overrides"] == {} and view["updated_at"] is None
    eff = view["effective"]
    assert eff["segment_duration_s"] == 2.0 and eff["audio_only"] is False
    assert [x["name"] for x in eff["ladder"]] == ["1080p", "720p", "480p", "360p"]

    rung = {"name": "480p", "height": 480, "video_bitrate": 1400000}
    cases = [
        ({"ladder": [dict(rung, height=0)]}, "height must be between 16 and 4320"),
        ({"ladder": [rung, dict(rung, height=360)]}, 'rung name "480p" is used twice'),
        ({"ladder": [dict(rung, video_bitrate=10)]}, "video_bitrate must be between 50000 and 50000000"),
        ({"ladder": [dict(rung, video_bitrate=10**8)]}, "video_bitrate must be between"),
        ({"ladder": [dict(rung, name=f"r{i}", height=100 + i) for i in range(9)]}, "1 to 8 rungs, got 9"),
        ({"ladder": []}, "1 to 8 rungs, got 0"),
        ({"ladder": [dict(rung, name="../x")]}, "rung name"),
        ({"ladder": [dict(rung, name="audio")]}, "reserved for the audio-only rendition"),
        ({"x264_preset": "warp"}, 'unknown x264_preset "warp"'),
        ({"segment_duration_s": 0.5}, "segment_duration_s must be between 1 and 10"),
        ({"segment_duration_s": 11}, "segment_duration_s must be between 1 and 10"),
        ({"audio_bitrate": 1000}, "audio_bitrate must be between 32000 and 320000"),
        ({"segment_secs": 2}, "unknown field"),
        ({"ladder": [dict(rung, fps=30)]}, "unknown field"),
        ({"ladder": [dict(rung, height=-5)]}, "invalid value"),
    ]
    for body, words in cases:
        r = put_preset(server, t, body)
        assert r.status_code == 400, (body, r.text)
        err = r.json()["error"]
        assert words in err["message"], (body, err)
    r = requests.put(f"{server.url}/v1/preset", data="{", headers=auth(t), timeout=10)
    assert r.status_code == 400
    # Nothing of the refused bodies was stored.
    assert requests.get(f"{server.url}/v1/preset", headers=auth(t), timeout=10).json()["overrides"] == {}
    # Tenant keys only.
    r = requests.get(
        f"{server.url}/v1/preset", headers={"Authorization": f"Bearer {server.admin_key}"}, timeout=10
    )
    assert r.status_code == 403
    # Set, read back, reset.
    r = put_preset(server, t, {"x264_preset": "fast"})
    assert r.status_code == 200 and r.json()["effective"]["x264_preset"] == "fast"
    assert r.json()["overrides"] == {"x264_preset": "fast"} and r.json()["updated_at"]
    r = requests.delete(f"{server.url}/v1/preset", headers=auth(t), timeout=10)
    assert r.status_code == 204
    assert requests.get(f"{server.url}/v1/preset", headers=auth(t), timeout=10).json()["overrides"] == {}


def test_tenant_preset_changes_the_ladder(server, tenant, preset_asset, workdir):
    a = preset_asset
    rend = {r["name"]: r for r in a["renditions"]}
    assert set(rend) == {"240p", "144p", "audio"}, a["renditions"]
    assert (rend["240p"]["width"], rend["240p"]["height"]) == (320, 240)
    assert (rend["144p"]["width"], rend["144p"]["height"]) == (192, 144)
    job = requests.get(f"{server.url}/v1/jobs/{a['job_id']}", headers=auth(tenant), timeout=10).json()
    assert job["rendition"] is None

    url = playback_url(server, tenant, a["id"])
    master = requests.get(url, timeout=10).text
    variants = parse_master(master)
    assert [uri for _, uri in variants] == ["240p/index.m3u8", "144p/index.m3u8", "audio/index.m3u8"]
    for name in ("240p", "144p"):
        target, segs = download_rendition(url, name, workdir / "preset-dl" / name)
        # The preset's 3 s segments (the 2 s set after enqueue did not apply).
        assert target == SEGMENT_S
        assert [round(d, 2) for _, d, _, _ in segs] == [3.0, 3.0], segs
        for uri, _, _, _ in segs:
            f = first_video_frame(workdir / "preset-dl" / name / uri)
            assert f["key_frame"] == 1
            assert (f["width"], f["height"]) == (rend[name]["width"], rend[name]["height"])
        info = ffprobe_json("-show_entries", "stream=codec_type,height", urllib.parse.urljoin(url, f"{name}/index.m3u8"))
        heights = [s["height"] for s in info["streams"] if s["codec_type"] == "video"]
        assert heights == [rend[name]["height"]]


def test_audio_only_rendition_plays(server, tenant, preset_asset, workdir):
    a = preset_asset
    url = playback_url(server, tenant, a["id"])
    variants = parse_master(requests.get(url, timeout=10).text)
    attrs, uri = variants[-1]
    assert uri == "audio/index.m3u8"
    assert attrs["CODECS"] == '"mp4a.40.2"'
    assert "RESOLUTION" not in attrs and "FRAME-RATE" not in attrs
    audio = next(r for r in a["renditions"] if r["name"] == "audio")
    assert int(attrs["BANDWIDTH"]) == audio["bandwidth"]
    # 64 kbit/s AAC in MPEG-TS: the measured peak carries the container's overhead.
    assert 60_000 < audio["bandwidth"] < 160_000, audio
    assert (audio["width"], audio["height"], audio["codecs"]) == (0, 0, "mp4a.40.2")

    aurl = urllib.parse.urljoin(url, uri)
    target, segs = parse_media(requests.get(aurl, timeout=10).text)
    assert target == SEGMENT_S and len(segs) == 2
    # It plays: ffprobe reads the whole playlist, audio only, as long as the video.
    info = ffprobe_json("-show_entries", "format=duration:stream=codec_type,codec_name", aurl)
    assert [(s["codec_type"], s["codec_name"]) for s in info["streams"]] == [("audio", "aac")]
    assert abs(float(info["format"]["duration"]) - CLIP_SECONDS) < 0.15, info
    # Aligned with the video segments: each starts within one AAC frame of its video one.
    vt, vsegs = parse_media(requests.get(urllib.parse.urljoin(url, "240p/index.m3u8"), timeout=10).text)
    v_at = a_at = 0.0
    for (vd, _), (ad, _) in zip(vsegs, segs):
        assert -0.001 <= a_at - v_at <= 1024 / 48000 + 0.001, (vsegs, segs)
        v_at += vd
        a_at += ad


def wait_job(server, t, job_id, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        j = requests.get(f"{server.url}/v1/jobs/{job_id}", headers=auth(t), timeout=10).json()
        if j["status"] not in ("queued", "running"):
            return j
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish: {j}")


def test_rerun_one_rendition(server, tenant, preset_asset, workdir):
    a = preset_asset
    url = playback_url(server, tenant, a["id"])
    before = {}
    for name in ("240p", "144p", "audio"):
        _, segs = download_rendition(url, name, workdir / "rerun-before" / name)
        before[name] = segs
    master_before = requests.get(url, timeout=10).text

    # Bad requests first.
    base = f"{server.url}/v1/assets/{a['id']}/renditions"
    r = requests.post(f"{base}/1080p/rerun", headers=auth(tenant), timeout=10)
    assert r.status_code == 404 and "rendition 1080p" in r.json()["error"]["message"], r.text
    r = requests.post(
        f"{server.url}/v1/jobs/{a['job_id']}/retry", json={"rendition": "nope"}, headers=auth(tenant), timeout=10
    )
    assert r.status_code == 404, r.text
    other = server.tenant("presets-other")
    assert requests.post(f"{base}/144p/rerun", headers=auth(other), timeout=10).status_code == 404

    r = requests.post(f"{base}/144p/rerun", headers=auth(tenant), timeout=10)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["rendition"] == "144p" and job["asset_id"] == a["id"]
    # One job per asset at a time.
    r2 = requests.post(f"{base}/240p/rerun", headers=auth(tenant), timeout=10)
    assert r2.status_code == 409, r2.text
    # The asset stays ready and playable while the rendition is re-made.
    deadline = time.time() + 120
    while True:
        assert server.asset(tenant["api_key"], a["id"])["status"] == "ready"
        assert requests.get(url, timeout=10).status_code == 200
        j = requests.get(f"{server.url}/v1/jobs/{job['id']}", headers=auth(tenant), timeout=10).json()
        if j["status"] not in ("queued", "running"):
            break
        assert time.time() < deadline, j
        time.sleep(0.2)
    assert j["status"] == "succeeded", j

    after = {}
    for name in ("240p", "144p", "audio"):
        _, segs = download_rendition(url, name, workdir / "rerun-after" / name)
        after[name] = segs
    # The rest of the ladder is byte-identical, down to the stored objects.
    for name in ("240p", "audio"):
        assert [(u, sha256(b), e) for u, _, b, e in after[name]] == [
            (u, sha256(b), e) for u, _, b, e in before[name]
        ], name
    # The re-run rendition's segments are new objects, cut at the same keyframes.
    assert [u for u, *_ in after["144p"]] == [u for u, *_ in before["144p"]]
    assert all(x[3] != y[3] for x, y in zip(after["144p"], before["144p"])), "segments not re-written"
    for (u, d, _, _), (u0, d0, _, _), (v, _, _, _) in zip(after["144p"], before["144p"], after["240p"]):
        assert abs(d - d0) < 0.001
        f = first_video_frame(workdir / "rerun-after" / "144p" / u)
        g = first_video_frame(workdir / "rerun-after" / "240p" / v)
        assert f["key_frame"] == 1 and f["pict_type"] == "I"
        assert abs(float(f["pts_time"]) - float(g["pts_time"])) < 0.001
    # The master is complete; only the 144p entry may have new figures.
    master_after = requests.get(url, timeout=10).text
    keep = [(x, u) for x, u in parse_master(master_before) if not u.startswith("144p/")]
    assert [(x, u) for x, u in parse_master(master_after) if not u.startswith("144p/")] == keep
    assert [u for _, u in parse_master(master_after)] == [u for _, u in parse_master(master_before)]
    a2 = server.asset(tenant["api_key"], a["id"])
    assert a2["status"] == "ready" and a2["job_id"] == a["job_id"]
    assert [r["name"] for r in a2["renditions"]] == [r["name"] for r in a["renditions"]]
    # The same through the job route.
    r = requests.post(
        f"{server.url}/v1/jobs/{a['job_id']}/retry", json={"rendition": "240p"}, headers=auth(tenant), timeout=10
    )
    assert r.status_code == 202 and r.json()["rendition"] == "240p", r.text
    assert wait_job(server, tenant, r.json()["id"])["status"] == "succeeded"


def test_rerun_needs_a_ready_asset(server, tenant):
    r = requests.post(
        f"{server.url}/v1/uploads/",
        headers=dict(auth(tenant), **{"Tus-Resumable": "1.0.0", "Upload-Length": "100"}),
        timeout=10,
    )
    assert r.status_code == 201, r.text
    asset_id = r.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    r = requests.post(
        f"{server.url}/v1/assets/{asset_id}/renditions/240p/rerun", headers=auth(tenant), timeout=10
    )
    assert r.status_code == 409, r.text
    assert "only the renditions of a ready asset" in r.json()["error"]["message"]


def test_fmp4_segments_play_through_the_gateway(server, workdir):
    """A tenant preset with `segment_format: fmp4`: every rendition gets an init.mp4 and
    .m4s fragments behind EXT-X-MAP, served with the right types, and ffprobe plays the
    whole ladder from the signed URL."""
    t = server.tenant("fmp4-tenant")
    body = {
        "ladder": [{"name": "240p", "height": 240, "video_bitrate": 400000}],
        "x264_preset": "ultrafast",
        "segment_format": "fmp4",
        "audio_only": True,
    }
    r = put_preset(server, t, body)
    assert r.status_code == 200, r.text
    assert put_preset(server, t, {"segment_format": "mkv"}).status_code == 400
    clip = make_clip(workdir / "fmp4-src.mp4", seconds=5, size="320x240")
    asset_id = server.tus_upload(t["api_key"], clip)
    a = server.wait_asset(t["api_key"], asset_id, timeout=180)
    assert a["status"] == "ready", a
    url = playback_url(server, t, asset_id)
    base = url.rsplit("/", 1)[0]
    for rendition in ("240p", "audio"):
        media = requests.get(f"{base}/{rendition}/index.m3u8", timeout=10)
        assert media.status_code == 200
        assert '#EXT-X-MAP:URI="init.mp4"' in media.text
        _, segs = parse_media(media.text)
        assert segs and all(uri.endswith(".m4s") for _, uri in segs)
        init = requests.get(f"{base}/{rendition}/init.mp4", timeout=10)
        assert init.status_code == 200 and init.headers["content-type"] == "video/mp4"
        assert init.content[4:8] == b"ftyp"
        seg = requests.get(f"{base}/{rendition}/{segs[0][1]}", timeout=10)
        assert seg.headers["content-type"] == "video/iso.segment"
        assert b"moof" in seg.content and b"moov" not in seg.content
    probe = ffprobe_json("-show_format", "-show_streams", url)
    assert abs(float(probe["format"]["duration"]) - 5.0) < 0.5, probe["format"]
    codecs = sorted(s["codec_name"] for s in probe["streams"])
    assert "h264" in codecs and "aac" in codecs, codecs


def test_a_source_beyond_the_tenant_duration_limit_fails_clearly(server, workdir):
    t = server.tenant("short-limit")
    assert put_preset(server, t, {"max_duration_s": 0.5}).status_code == 400
    r = put_preset(server, t, {"max_duration_s": 2, "x264_preset": "ultrafast"})
    assert r.status_code == 200, r.text
    clip = make_clip(workdir / "too-long.mp4", seconds=4, size="320x240")
    asset_id = server.tus_upload(t["api_key"], clip)
    a = server.wait_asset(t["api_key"], asset_id, timeout=120)
    assert a["status"] == "failed", a
    assert "limit of this tenant's preset" in a["error"], a
    assert server.alive()
