"""Webhooks: events reach a real HTTP receiver, signed with HMAC-SHA256, and a failed
delivery is retried with backoff until acknowledged."""

import hashlib
import hmac
import http.server
import json
import os
import threading
import time

import pytest
import requests

from conftest import Sluice, make_clip

# The receivers of these tests listen on loopback, which webhooks refuse by default.
ALLOW_LOOPBACK = """
[webhooks]
allow_hosts = ["127.0.0.1"]
"""


@pytest.fixture(scope="module")
def server(workdir):
    s = Sluice(workdir / "data-webhooks", config_text=ALLOW_LOOPBACK)
    yield s
    s.stop()


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self):
        self.received = []  # (headers, body, status answered)
        self.fail_first = 1
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        srv = self.server
        status = 200
        if srv.fail_first > 0:
            srv.fail_first -= 1
            status = 500
        srv.received.append(({k.lower(): v for k, v in self.headers.items()}, body, status, time.time()))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    r = Receiver()
    t = threading.Thread(target=r.serve_forever, daemon=True)
    t.start()
    yield r
    r.shutdown()


def verify(secret, headers, body):
    parts = dict(p.split("=", 1) for p in headers["sluice-signature"].split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected), "bad signature"
    assert abs(int(parts["t"]) - time.time()) < 60


def test_webhooks_signed_and_retried(server, receiver, workdir):
    t = server.tenant("hooks")
    key = t["api_key"]
    h = {"Authorization": f"Bearer {key}"}
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    r = requests.post(f"{server.url}/v1/webhooks", json={"url": url, "events": ["asset.ready", "asset.failed"]}, headers=h, timeout=5)
    assert r.status_code == 201, r.text
    hook = r.json()
    secret = hook["secret"]
    assert secret.startswith("whsec_")
    listed = requests.get(f"{server.url}/v1/webhooks", headers=h, timeout=5).json()["webhooks"]
    assert [w["id"] for w in listed] == [hook["id"]] and "secret" not in listed[0]
    # Bad registrations.
    for bad in ({"url": "ftp://x/y"}, {"url": url, "events": ["asset.exploded"]}, {"url": url, "events": []}):
        r = requests.post(f"{server.url}/v1/webhooks", json=bad, headers=h, timeout=5)
        assert r.status_code == 400, (bad, r.text)

    good = make_clip(workdir / "hook.mp4", seconds=2, size="320x240")
    ready_id = server.tus_upload(key, good)
    # Unrecognisable bytes pass the upload's content sniffing and fail in the worker
    # (text would be refused at upload time and never become an asset).
    text = workdir / "hook.bin"
    text.write_bytes(os.urandom(50_000))
    failed_id = server.tus_upload(key, text)

    deadline = time.time() + 90
    while time.time() < deadline:
        ok = [json.loads(b) for _, b, s, _ in receiver.received if s == 200]
        if {e["type"] for e in ok} >= {"asset.ready", "asset.failed"}:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"events not delivered: {receiver.received}\n{server.logs()}")

    for headers, body, _, _ in receiver.received:
        verify(secret, headers, body)
        assert headers["sluice-event"] == json.loads(body)["type"]
    events = {e["type"]: e for e in ok}
    assert events["asset.ready"]["data"]["id"] == ready_id
    assert events["asset.ready"]["data"]["status"] == "ready"
    assert events["asset.failed"]["data"]["id"] == failed_id
    assert events["asset.failed"]["data"]["error"]
    # The first attempt got a 500 and was retried (same delivery id, later).
    first = receiver.received[0]
    retries = [r for r in receiver.received[1:] if r[0]["sluice-delivery"] == first[0]["sluice-delivery"]]
    assert first[2] == 500 and retries and retries[0][2] == 200
    assert retries[0][3] - first[3] >= 0.9, "retried without backoff"
    # Each event delivered exactly once with a 2xx.
    delivered = [json.loads(b)["id"] for _, b, s, _ in receiver.received if s == 200]
    assert len(delivered) == len(set(delivered)) == 2

    r = requests.delete(f"{server.url}/v1/webhooks/{hook['id']}", headers=h, timeout=5)
    assert r.status_code == 204
    assert requests.delete(f"{server.url}/v1/webhooks/{hook['id']}", headers=h, timeout=5).status_code == 404


def test_webhooks_refuse_non_public_targets(workdir):
    """Review finding 15 (SSRF): without an explicit allowlist, a tenant cannot point a
    webhook at loopback, private, link-local (cloud metadata) or unique-local addresses."""
    s = Sluice(workdir / "data-webhooks-default")
    try:
        key = s.tenant("ssrf")["api_key"]
        h = {"Authorization": f"Bearer {key}"}
        for url in ["http://127.0.0.1:9/x", "http://10.0.0.1/x", "http://192.168.0.10/x",
                    "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/x", "http://[fd00::5]/x"]:
            r = requests.post(f"{s.url}/v1/webhooks", json={"url": url}, headers=h, timeout=5)
            assert r.status_code == 400, (url, r.text)
            assert "non-public" in r.json()["error"]["message"]
    finally:
        s.stop()
