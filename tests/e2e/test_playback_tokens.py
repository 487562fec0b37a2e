"""Playback tokens v2 against the real binary: a URL bound to the client's address plays
from 127.0.0.1 and is refused (403, the contract's error shape) for a network that excludes
it; a URL signed with a previous key plays during the rotation overlap and is refused
after it, while URLs of the new key play on."""

import re

import pytest
import requests

from conftest import Sluice, make_clip

LADDER = """
[transcode]
ladder = [{name = "240p", height = 240, video_bitrate = 300000}]
"""

K1 = "k1-secret-for-the-e2e-rotation-test"


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def assert_error(r, status, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def playback(srv, key, asset_id, **body):
    r = requests.post(f"{srv.url}/v1/assets/{asset_id}/playback", json=body, headers=auth(key), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def plays(url):
    """Master playlist, its first variant and that variant's first segment: the status of
    the first one that fails, else 200. Relative URIs resolve under the same token."""
    r = requests.get(url, timeout=10)
    if r.status_code != 200:
        return r
    variant = next(l for l in r.text.splitlines() if l and not l.startswith("#"))
    vurl = url.rsplit("/", 1)[0] + "/" + variant
    r = requests.get(vurl, timeout=10)
    if r.status_code != 200:
        return r
    seg = next(l for l in r.text.splitlines() if l and not l.startswith("#"))
    return requests.get(vurl.rsplit("/", 1)[0] + "/" + seg, timeout=10)


@pytest.fixture(scope="module")
def ready_asset(workdir):
    """A data dir holding one transcoded asset, served first with key k1 only."""
    data = workdir / "tokens-data"
    config = LADDER + f'[playback]\nkey_id = "k1"\nsecret = "{K1}"\n'
    s = Sluice(data, config_text=config)
    try:
        t = s.tenant("tokens")
        clip = make_clip(workdir / "tokens-clip.mp4", seconds=2, size="320x240", rate=25)
        r = requests.post(
            f"{s.url}/v1/assets",
            data=clip.read_bytes(),
            headers={**auth(t["api_key"]), "Content-Type": "video/mp4"},
            timeout=60,
        )
        assert r.status_code == 201, r.text
        a = s.wait_asset(t["api_key"], r.json()["id"])
        assert a["status"] == "ready", a
        yield s, data, t["api_key"], a["id"]
    finally:
        s.stop()


def test_ip_bound_url_plays_from_its_network_only(ready_asset):
    s, _, key, asset_id = ready_asset
    bound = playback(s, key, asset_id, client_ip="127.0.0.1")
    assert bound["client_ip"] == "127.0.0.1/32"
    assert re.search(r"/k1\.\d+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}/master\.m3u8$", bound["url"])
    r = plays(bound["url"])
    assert r.status_code == 200, r.text
    assert len(r.content) > 1000

    elsewhere = playback(s, key, asset_id, client_ip="203.0.113.0/24")
    assert_error(requests.get(elsewhere["url"], timeout=10), 403, "client_not_allowed")
    # Claiming an address in X-Forwarded-For does not help: no proxy is trusted.
    r = requests.get(elsewhere["url"], headers={"X-Forwarded-For": "203.0.113.5"}, timeout=10)
    assert_error(r, 403, "client_not_allowed")

    r = requests.post(
        f"{s.url}/v1/assets/{asset_id}/playback",
        json={"client_ip": "not-an-ip"},
        headers=auth(key),
        timeout=10,
    )
    assert_error(r, 400, "invalid_request")


def test_previous_key_plays_during_the_overlap_only(ready_asset, workdir):
    s, data, key, asset_id = ready_asset
    old = playback(s, key, asset_id, ttl_s=3600)["url"]
    assert "/k1." in old
    s.stop()
    path = old.split("/v1/", 1)[1]

    def rotated(verify_until):
        return LADDER + (
            '[playback]\nkey_id = "k2"\n'
            f'[[playback.previous_keys]]\nid = "k1"\nsecret = "{K1}"\nverify_until = "{verify_until}"\n'
        )

    during = Sluice(data, config_text=rotated("2999-01-01T00:00:00Z"))
    try:
        r = plays(f"{during.url}/v1/{path}")
        assert r.status_code == 200, r.text
        new = playback(during, key, asset_id)["url"]
        assert "/k2." in new
        new_path = new.split("/v1/", 1)[1]
    finally:
        during.stop()

    after = Sluice(data, config_text=rotated("2001-01-01T00:00:00Z"))
    try:
        r = requests.get(f"{after.url}/v1/{path}", timeout=10)
        assert_error(r, 403, "invalid_token")
        assert K1 not in r.text
        assert K1 not in after.logs()
        r = plays(f"{after.url}/v1/{new_path}")
        assert r.status_code == 200, r.text
    finally:
        after.stop()
