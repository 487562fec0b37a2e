"""HTTPS on the real binary: a self-signed certificate made by openssl in the test, HTTP/2
negotiated through ALPN (curl --http2), HTTP/1.1 with Python requests, certificate reload
on SIGHUP without dropping an open keep-alive connection, a bad new certificate keeping the
old one, and the handshake deadline."""

import hashlib
import signal
import socket
import ssl
import subprocess
import time

import pytest
import requests

from conftest import Sluice


def make_cert(d, name, cn):
    cert, key = d / f"{name}.crt", d / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", f"/CN={cn}",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def fingerprint_of(port):
    """The SHA-256 of the leaf certificate a new connection is served."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


def file_fingerprint(cert):
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    return hashlib.sha256(der).hexdigest()


def read_response(sock):
    """One HTTP/1.1 response with a Content-Length from a socket: (status, headers, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a full head: {buf!r}"
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a body"
        rest += chunk
    return status, headers, rest[:n]


@pytest.fixture()
def tls_server(tmp_path):
    cert, key = make_cert(tmp_path, "first", "first.test")
    # The file watcher is slowed right down, so the reload the test sees is the SIGHUP's.
    s = Sluice(tmp_path / "data", config_text="[gateway]\ntls_handshake_timeout_s = 2\n"
               "tls_reload_poll_s = 3600\n",
               extra_args=["--tls-cert", str(cert), "--tls-key", str(key)])
    s.cert, s.key = cert, key
    yield s
    s.stop()


def test_https_speaks_h2_through_alpn_and_http1_to_requests(tls_server):
    s = tls_server
    assert s.url.startswith("https://"), s.stdout_lines
    url = f"https://localhost:{s.port}/healthz"
    out = subprocess.run(
        ["curl", "-sS", "-v", "--http2", "--cacert", str(s.cert), "-o", "/dev/null",
         "-w", "%{http_version} %{http_code}", url],
        capture_output=True, text=True, timeout=30,
    )
    assert out.stdout == "2 200", (out.stdout, out.stderr)
    assert "ALPN: server accepted h2" in out.stderr, out.stderr
    out = subprocess.run(
        ["curl", "-sS", "--http1.1", "--cacert", str(s.cert), "-o", "/dev/null",
         "-w", "%{http_version} %{http_code}", url],
        capture_output=True, text=True, timeout=30,
    )
    assert out.stdout == "1.1 200", out

    # A real client over TLS: create a tenant and read its (absent) asset.
    r = requests.post(f"{s.url}/v1/tenants", json={"name": "tls"}, verify=str(s.cert),
                      headers={"Authorization": f"Bearer {s.admin_key}"}, timeout=10)
    assert r.status_code == 201, r.text
    assert r.headers["Strict-Transport-Security"].startswith("max-age="), r.headers
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    key = r.json()["api_key"]
    r = requests.get(f"{s.url}/v1/assets/01HZZZZZZZZZZZZZZZZZZZZZZZ", verify=str(s.cert),
                     headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
    # Without the certificate trusted, the client refuses; plain HTTP gets no answer.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{s.url}/healthz", timeout=10)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{s.port}/healthz", timeout=10)


def test_sighup_reloads_the_certificate_and_keeps_open_connections(tls_server, tmp_path):
    s = tls_server
    first = file_fingerprint(s.cert)
    assert fingerprint_of(s.port) == first

    # A keep-alive connection opened under the first certificate.
    ctx = ssl.create_default_context(cafile=str(s.cert))
    ctx.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    kept = ctx.wrap_socket(raw, server_hostname="localhost")
    req = f"GET /healthz HTTP/1.1\r\nHost: localhost:{s.port}\r\n\r\n".encode()
    kept.sendall(req)
    assert read_response(kept)[0] == 200

    new_cert, new_key = make_cert(tmp_path, "second", "second.test")
    s.cert.write_bytes(new_cert.read_bytes())
    s.key.write_bytes(new_key.read_bytes())
    second = file_fingerprint(s.cert)
    assert second != first
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 20
    while fingerprint_of(s.port) != second:
        assert time.time() < deadline, f"the new certificate was not served\n{s.logs()}"
        time.sleep(0.2)

    # The connection opened before the reload still answers, on its old session.
    kept.sendall(req)
    status, headers, _ = read_response(kept)
    assert status == 200, headers
    assert hashlib.sha256(kept.getpeercert(binary_form=True)).hexdigest() == first
    kept.close()
    r = requests.get(f"{s.url}/healthz", verify=str(new_cert), timeout=10)
    assert r.status_code == 200

    # A broken replacement is refused: the second certificate stays, with an error logged.
    s.cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 20
    while "TLS certificate reload failed" not in s.logs():
        assert time.time() < deadline, s.logs()
        time.sleep(0.2)
    assert fingerprint_of(s.port) == second
    assert s.alive()


def test_a_client_that_never_finishes_the_handshake_is_cut_off(tls_server):
    s = tls_server
    with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
        c.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then silence
        started = time.time()
        assert c.recv(1) == b""  # closed by the server, not by our 30 s timeout
        assert time.time() - started < 20
    # The listener still serves others.
    assert requests.get(f"{s.url}/healthz", verify=str(s.cert), timeout=10).status_code == 200
