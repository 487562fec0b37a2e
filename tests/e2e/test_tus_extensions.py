"""tus creation-defer-length and concatenation, with raw requests and real clients:
tus-js-client (`parallelUploads`, which uses concatenation, and `uploadLengthDeferred`) and
Uppy (@uppy/core + @uppy/tus with default options, run in Node)."""

import subprocess
from pathlib import Path

import pytest
import requests

from conftest import make_clip, sha256

JS = Path(__file__).parent / "js"
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


@pytest.fixture(scope="module")
def tenant(server):
    return server.tenant("tus-ext")


@pytest.fixture(scope="module")
def clip(workdir):
    return make_clip(workdir / "tus-ext.mp4", seconds=3, size="480x270")


def auth(key):
    return {"Authorization": f"Bearer {key}", **TUS}


def assert_error(r, status, code=None):
    assert r.status_code == status, r.text
    assert r.headers["Tus-Resumable"] == "1.0.0"
    if code:
        assert r.json()["error"]["code"] == code, r.text


def node(script, *args):
    out = subprocess.run(
        ["node", str(JS / script), *args], capture_output=True, text=True, timeout=180, cwd=JS
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def check_ready_source(server, key, asset_id, path, filename=None):
    a = server.wait_asset(key, asset_id)
    assert a["status"] == "ready", a
    assert a["size"] == path.stat().st_size
    if filename:
        assert a["filename"] == filename
    src = requests.get(f"{server.url}/v1/assets/{asset_id}/source", headers=auth(key), timeout=30)
    assert src.status_code == 200
    assert sha256(src.content) == sha256(path)


def test_extensions_are_advertised(server):
    o = requests.options(f"{server.url}/v1/uploads/", timeout=5)
    ext = o.headers["Tus-Extension"].split(",")
    assert "creation-defer-length" in ext and "concatenation" in ext
    assert "concatenation-unfinished" not in ext


def test_defer_length_with_raw_requests(server, tenant, clip):
    base = f"{server.url}/v1/uploads/"
    h = auth(tenant["api_key"])
    # Invalid combinations.
    for bad in (
        {"Upload-Defer-Length": "1", "Upload-Length": "10"},
        {"Upload-Defer-Length": "0"},
        {"Upload-Defer-Length": "yes"},
        {},
    ):
        assert_error(requests.post(base, headers={**h, **bad}, timeout=5), 400, "invalid_request")

    data = clip.read_bytes()
    half = len(data) // 2
    r = requests.post(base, headers={**h, "Upload-Defer-Length": "1"}, timeout=5)
    assert r.status_code == 201, r.text
    loc = r.headers["Location"]
    asset_id = loc.rsplit("/", 1)[1]
    head = requests.head(loc, headers=h, timeout=5)
    assert head.headers["Upload-Defer-Length"] == "1" and head.headers["Upload-Offset"] == "0"
    assert "Upload-Length" not in head.headers
    # Bytes before the length is known.
    r = requests.patch(loc, headers={**h, **OCTETS, "Upload-Offset": "0"}, data=data[:half], timeout=10)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(half)
    head = requests.head(loc, headers=h, timeout=5)
    assert head.headers["Upload-Defer-Length"] == "1" and head.headers["Upload-Offset"] == str(half)
    # A length below what was received, or above the maximum, is refused.
    pt = {**h, **OCTETS, "Upload-Offset": str(half)}
    assert_error(requests.patch(loc, headers={**pt, "Upload-Length": str(half - 1)}, timeout=5), 400)
    assert_error(requests.patch(loc, headers={**pt, "Upload-Length": str(1 << 50)}, timeout=5), 413)
    assert requests.head(loc, headers=h, timeout=5).headers["Upload-Defer-Length"] == "1"
    # The last PATCH declares the length.
    r = requests.patch(loc, headers={**pt, "Upload-Length": str(len(data))}, data=data[half:], timeout=10)
    assert r.status_code == 204, r.text
    assert r.headers["Upload-Offset"] == str(len(data))
    head = requests.head(loc, headers=h, timeout=5)
    assert head.headers["Upload-Length"] == str(len(data))
    assert "Upload-Defer-Length" not in head.headers
    check_ready_source(server, tenant["api_key"], asset_id, clip)

    # Once known, the length cannot change.
    r = requests.post(base, headers={**h, "Upload-Defer-Length": "1"}, timeout=5)
    loc = r.headers["Location"]
    r = requests.patch(loc, headers={**h, **OCTETS, "Upload-Offset": "0", "Upload-Length": "100"}, data=b"x" * 10, timeout=5)
    assert r.status_code == 204
    r = requests.patch(loc, headers={**h, **OCTETS, "Upload-Offset": "10", "Upload-Length": "99"}, data=b"x", timeout=5)
    assert_error(r, 400, "invalid_request")
    assert requests.head(loc, headers=h, timeout=5).headers["Upload-Length"] == "100"
    assert requests.delete(loc, headers=h, timeout=5).status_code == 204


def test_concatenation_with_raw_requests(server, tenant, clip):
    base = f"{server.url}/v1/uploads/"
    h = auth(tenant["api_key"])
    data = clip.read_bytes()
    cut = len(data) // 3

    def partial(body, length=None, key=tenant["api_key"]):
        hh = {**auth(key), "Upload-Concat": "partial", "Upload-Length": str(len(body) if length is None else length)}
        r = requests.post(base, headers=hh, timeout=5)
        assert r.status_code == 201, r.text
        loc = r.headers["Location"]
        if body:
            r = requests.patch(loc, headers={**auth(key), **OCTETS, "Upload-Offset": "0"}, data=body, timeout=10)
            assert r.status_code == 204, r.text
        return loc

    def final(*locs, extra=None):
        hh = {**h, "Upload-Concat": "final;" + " ".join(locs), **(extra or {})}
        return requests.post(base, headers=hh, timeout=30)

    a, b = partial(data[:cut]), partial(data[cut:])
    # Partials are tus uploads, not assets.
    assert requests.head(a, headers=h, timeout=5).headers["Upload-Concat"] == "partial"
    pid = a.rsplit("/", 1)[1]
    r = requests.get(f"{server.url}/v1/assets/{pid}", headers=h, timeout=5)
    assert r.status_code == 404

    unfinished = partial(b"", length=10)
    plain = requests.post(base, headers={**h, "Upload-Length": "5"}, timeout=5).headers["Location"]
    other = server.tenant("tus-ext-other")
    foreign = partial(b"zz", key=other["api_key"])
    assert_error(final(a, unfinished), 400, "invalid_request")
    assert_error(final(a, plain), 400, "invalid_request")
    assert_error(final(a, a), 400, "invalid_request")
    assert_error(final(a, foreign), 404, "not_found")
    assert_error(final(a, base + "01NOSUCHUPLOAD000000000000"), 404, "not_found")
    assert_error(final(a, "/elsewhere/x"), 400, "invalid_request")
    assert_error(final(a, b, extra={"Upload-Defer-Length": "1"}), 400, "invalid_request")
    assert_error(final(a, b, extra={"Upload-Length": "3"}), 400, "invalid_request")
    assert_error(requests.post(base, headers={**h, "Upload-Concat": "whole"}, timeout=5), 400)
    # Nothing was consumed by the refused requests.
    assert requests.head(a, headers=h, timeout=5).headers["Upload-Offset"] == str(cut)

    # Relative URLs are accepted as well as absolute ones.
    rel_b = "/v1/uploads/" + b.rsplit("/", 1)[1]
    r = final(a, rel_b, extra={"Upload-Metadata": "filename Y29uY2F0Lm1wNA=="})
    assert r.status_code == 201, r.text
    loc = r.headers["Location"]
    head = requests.head(loc, headers=h, timeout=5)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(data))
    assert head.headers["Upload-Concat"] == f"final;{a} {server.url}{rel_b}"
    # A final upload takes no PATCH; its partials are gone.
    r = requests.patch(loc, headers={**h, **OCTETS, "Upload-Offset": str(len(data))}, data=b"x", timeout=5)
    assert_error(r, 403, "forbidden")
    for p in (a, b):
        assert requests.head(p, headers=h, timeout=5).status_code == 404
    check_ready_source(server, tenant["api_key"], loc.rsplit("/", 1)[1], clip, "concat.mp4")


def test_tus_js_client_parallel_uploads(server, tenant, clip):
    url = node("upload-parallel.mjs", f"{server.url}/v1/uploads/", tenant["api_key"], str(clip), "3")
    asset_id = url.rsplit("/", 1)[1]
    h = auth(tenant["api_key"])
    head = requests.head(url, headers=h, timeout=5)
    concat = head.headers["Upload-Concat"]
    assert concat.startswith("final;")
    partials = concat[len("final;"):].split()
    assert len(partials) == 3
    for p in partials:
        assert requests.head(p, headers=h, timeout=5).status_code == 404
    check_ready_source(server, tenant["api_key"], asset_id, clip, clip.name)


def test_tus_js_client_deferred_length(server, tenant, clip):
    url = node("upload-parallel.mjs", f"{server.url}/v1/uploads/", tenant["api_key"], str(clip), "defer")
    check_ready_source(server, tenant["api_key"], url.rsplit("/", 1)[1], clip, clip.name)


def test_uppy_with_default_options(server, tenant, clip):
    url = node("uppy-upload.mjs", f"{server.url}/v1/uploads/", tenant["api_key"], str(clip))
    check_ready_source(server, tenant["api_key"], url.rsplit("/", 1)[1], clip, clip.name)
