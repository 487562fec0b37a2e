"""Regression tests for the defects of the code review (issue: eighteen correctness and
security defects). Each test failed on the code the review read; the docstring names the
finding it guards."""

import socket

import pytest
import requests

from conftest import Sluice

TUS = {"Tus-Resumable": "1.0.0"}


def auth(key):
    return {"Authorization": f"Bearer {key}", **TUS}


def test_another_tenant_cannot_terminate_or_lock_an_upload(server):
    """Finding 1: tenant B's DELETE on tenant A's in-progress upload answered 204 and A's
    upload was gone; B's PATCH took A's lease for a moment (A got 423)."""
    a = server.tenant("review-a")["api_key"]
    b = server.tenant("review-b")["api_key"]
    r = requests.post(f"{server.url}/v1/uploads/", headers={**auth(a), "Upload-Length": "2048"}, timeout=10)
    assert r.status_code == 201, r.text
    path = r.headers["Location"]
    url = path if path.startswith("http") else server.url + path
    first = bytes(range(256)) * 4
    r = requests.patch(url, data=first, timeout=10, headers={
        **auth(a), "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 204, r.text

    # B cannot see, terminate or patch it: 404 every time, and nothing changes for A.
    r = requests.delete(url, headers=auth(b), timeout=10)
    assert r.status_code == 404, r.text
    r = requests.patch(url, data=b"x" * 10, timeout=10, headers={
        **auth(b), "Upload-Offset": "1024", "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 404, r.text
    # A's next PATCH is not locked out by B's attempt (the lease was never taken).
    r = requests.head(url, headers=auth(a), timeout=10)
    assert r.status_code == 200 and r.headers["Upload-Offset"] == "1024", r.headers
    r = requests.patch(url, data=first, timeout=10, headers={
        **auth(a), "Upload-Offset": "1024", "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 204, r.text
    assert r.headers["Upload-Offset"] == "2048"
    r = requests.get(f"{server.url}/v1/assets/{url.rstrip('/').rsplit('/', 1)[1]}",
                     headers=auth(a), timeout=10)
    assert r.status_code == 200 and r.json()["status"] != "uploading", r.text


TIMEOUTS = """
[gateway]
header_read_timeout_s = 2
body_idle_timeout_s = 2
"""


@pytest.fixture(scope="module")
def strict(workdir):
    """A server with short header and body deadlines."""
    s = Sluice(workdir / "data-strict", config_text=TIMEOUTS)
    yield s
    s.stop()


def read_answer(sock):
    """Everything the server sends until it closes the connection (or 30 s pass: the
    deadline of the test, far above the 2 s under test)."""
    sock.settimeout(30)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except socket.timeout:
        pytest.fail(f"the server kept a stalled connection open; received {data[:200]!r}")
    return data


def test_a_client_that_never_finishes_its_headers_is_disconnected(strict):
    """Finding 4: no header-read timeout (hyper's is silently off without a timer), so a
    slowloris client held its connection forever."""
    with socket.create_connection(("127.0.0.1", strict.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line, ever
        answer = read_answer(sock)
    assert b"200 OK" not in answer


def test_a_stalled_upload_body_ends_and_releases_the_upload(strict):
    """Findings 3 and 4: a PATCH whose client stops sending held its task, socket, file and
    write lease forever. With a body-idle timeout below the lease, it ends; the bytes that
    arrived are kept, and the client's next PATCH is not locked out."""
    key = strict.tenant("stall")["api_key"]
    r = requests.post(f"{strict.url}/v1/uploads/", headers={**auth(key), "Upload-Length": "4096"}, timeout=10)
    assert r.status_code == 201, r.text
    path = r.headers["Location"].split(str(strict.port), 1)[-1]
    head = (f"PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
            "Content-Type: application/offset+octet-stream\r\nContent-Length: 4096\r\n\r\n")
    first = bytes(range(256)) * 4
    with socket.create_connection(("127.0.0.1", strict.port)) as sock:
        sock.sendall(head.encode() + first)  # 1024 of 4096 bytes, then silence
        read_answer(sock)
    url = strict.url + path
    r = requests.head(url, headers=auth(key), timeout=10)
    assert r.status_code == 200 and r.headers["Upload-Offset"] == "1024", (r.status_code, r.headers)
    r = requests.patch(url, data=first * 3, timeout=10, headers={
        **auth(key), "Upload-Offset": "1024", "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 204, r.text


def test_a_live_playlist_with_a_wrong_token_is_refused_before_its_body(strict):
    """Finding 5: live playlist bodies (up to 1 MiB) were read before the ingest token was
    checked. Now a wrong token is answered at once, while the body is still unsent."""
    key = strict.tenant("live-token")["api_key"]
    r = requests.post(f"{strict.url}/v1/live", json={}, headers=auth(key), timeout=10)
    assert r.status_code == 201, r.text
    ingest = r.json()["ingest_url"].split(str(strict.port), 1)[1]
    parts = ingest.rstrip("/").split("/")
    parts[-1] = "0" * len(parts[-1])  # the token segment, forged
    forged = "/".join(parts) + "/index.m3u8"
    head = (f"PUT {forged} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
            "Content-Type: application/vnd.apple.mpegurl\r\n\r\n")
    with socket.create_connection(("127.0.0.1", strict.port)) as sock:
        sock.sendall(head.encode() + b"#EXTM3U\n")
        sock.settimeout(30)
        answer = sock.recv(65536)
    # Answered before the body: 404, not a body-idle failure after the deadline.
    assert answer.startswith(b"HTTP/1.1 404"), answer[:200]


def new_tenant(server, name, quotas=None):
    body = {"name": name, **({"quotas": quotas} if quotas else {})}
    r = requests.post(f"{server.url}/v1/tenants", json=body,
                      headers={"Authorization": f"Bearer {server.admin_key}"}, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["api_key"]


def partial(server, key, body):
    r = requests.post(f"{server.url}/v1/uploads/", timeout=10, headers={
        **auth(key), "Upload-Concat": "partial", "Upload-Length": str(len(body))})
    assert r.status_code == 201, r.text
    loc = r.headers["Location"]
    r = requests.patch(loc, data=body, timeout=10, headers={
        **auth(key), "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    return loc, r


def final(server, key, *locs):
    return requests.post(f"{server.url}/v1/uploads/", timeout=30, headers={
        **auth(key), "Upload-Concat": "final;" + " ".join(locs)})


def test_concatenation_is_counted_once_against_the_quota(server):
    """Finding 7: a final upload reserved its bytes on top of its partials, which still
    counted until consumed: 2 x 1000 bytes of partials could not become one 2000-byte
    upload under a 3000-byte quota."""
    key = new_tenant(server, "review-quota", {"storage_bytes": 3000})
    body = bytes(range(256)) * 4
    a, r = partial(server, key, body[:1000])
    assert r.status_code == 204, r.text
    b, r = partial(server, key, body[:1000])
    assert r.status_code == 204, r.text
    r = final(server, key, a, b)
    assert r.status_code == 201, r.text


def test_partials_are_not_sniffed_but_the_final_is(server):
    """Finding 8: the content sniffer ran on concatenation partials, which start mid-file:
    a partial whose first bytes look like gzip (or JPEG, ZIP) was refused and deleted. Now
    partials are taken as they are and the final upload's head is judged."""
    key = new_tenant(server, "review-sniff")
    mp4_head = b"\x00\x00\x00\x20ftypisom" + bytes(range(256)) * 2
    gzip_like = b"\x1f\x8b\x08\x00" + bytes(range(256)) * 2
    a, r = partial(server, key, mp4_head)
    assert r.status_code == 204, r.text
    b, r = partial(server, key, gzip_like)
    assert r.status_code == 204, r.text  # refused with 415 before the fix
    r = final(server, key, a, b)
    assert r.status_code == 201, r.text
    # A final whose head is text is refused, whatever its partials looked like one by one.
    c, r = partial(server, key, b"plain text, " * 30)
    assert r.status_code == 204, r.text
    d, r = partial(server, key, b"more text. " * 30)
    assert r.status_code == 204, r.text
    r = final(server, key, c, d)
    assert r.status_code == 415, r.text


def test_deferred_length_uploads_are_charged_as_bytes_arrive(server):
    """Finding 6: an upload of deferred length reserved nothing and was not charged while
    its bytes arrived, so it could pass the tenant's storage quota."""
    key = new_tenant(server, "review-deferred", {"storage_bytes": 3000})
    r = requests.post(f"{server.url}/v1/uploads/", timeout=10,
                      headers={**auth(key), "Upload-Defer-Length": "1"})
    assert r.status_code == 201, r.text
    loc = r.headers["Location"]
    body = bytes(range(256)) * 16  # 4096 bytes, past the quota
    r = requests.patch(loc, data=body, timeout=10, headers={
        **auth(key), "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "quota_exceeded", r.text
    # Nothing of the refused request was kept; what fits is accepted.
    assert requests.head(loc, headers=auth(key), timeout=10).headers["Upload-Offset"] == "0"
    r = requests.patch(loc, data=body[:2000], timeout=10, headers={
        **auth(key), "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 204, r.text


def ts_bytes(packets):
    return b"".join(b"\x47" + bytes([0x10 + (i % 16)]) * 187 for i in range(packets))


def test_live_segments_are_charged_to_the_quota(server):
    """Finding 6, live: a stream's segments were not charged while they arrived, so a
    push could store far past the tenant's storage quota."""
    key = new_tenant(server, "review-live-quota", {"storage_bytes": 3000})
    r = requests.post(f"{server.url}/v1/live", json={}, headers=auth(key), timeout=10)
    assert r.status_code == 201, r.text
    ingest = r.json()["ingest_url"]
    r = requests.put(ingest + "seg0.ts", data=ts_bytes(10), timeout=10)  # 1880 bytes
    assert r.status_code == 201, r.text
    r = requests.put(ingest + "seg1.ts", data=ts_bytes(10), timeout=10)  # 3760 in all
    assert r.status_code == 403 and r.json()["error"]["code"] == "quota_exceeded", r.text
