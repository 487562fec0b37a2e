"""`sluice upload`, the built-in tus client, against the real server: parallel uploads
followed to `ready`, resuming after the client is SIGKILLed, surviving a connection cut
mid-request, and clear errors for a wrong key and for bad files."""

import base64
import hashlib
import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import BIN, make_clip, sha256

RUN_TIMEOUT = 300


@pytest.fixture(scope="module")
def key(server):
    return server.tenant("upload-cli")["api_key"]


def client_env():
    env = dict(os.environ)
    for k in ("SLUICE_KEY", "SLUICE_SERVER", "RUST_BACKTRACE", "RUST_LIB_BACKTRACE"):
        env.pop(k, None)
    return env


def upload_args(server_url, key, state, *files, extra=()):
    return [
        BIN, "upload", "--server", server_url, "--key", key, "--state", str(state),
        "--json", "--no-progress", *extra, *map(str, files),
    ]


def run_upload(server_url, key, state, *files, extra=()):
    p = subprocess.run(
        upload_args(server_url, key, state, *files, extra=extra),
        capture_output=True, text=True, timeout=RUN_TIMEOUT, env=client_env(),
    )
    results = {}
    for line in p.stdout.splitlines():
        obj = json.loads(line)
        results[obj["file"]] = obj
    return p, results


def source_sha(server, key, asset_id):
    r = requests.get(
        f"{server.url}/v1/assets/{asset_id}/source",
        headers={"Authorization": f"Bearer {key}"}, timeout=60,
    )
    assert r.status_code == 200, r.text
    return sha256(r.content)


def head_offset(key, url):
    r = requests.head(
        url, headers={"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0"}, timeout=10
    )
    assert r.status_code == 200, (r.status_code, url)
    return int(r.headers["Upload-Offset"]), int(r.headers["Upload-Length"])


def state_entries(path):
    if not path.exists():
        return []
    return json.loads(path.read_text())["uploads"]


def upload_bytes_counter(server):
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("sluice_upload_bytes_total "):
            return float(line.split()[1])
    return 0.0


class Proxy:
    """A TCP proxy in front of the server. `rate` (bytes/s, client to server) makes uploads
    slow enough to interrupt at a chosen moment; `cut_after` closes the one connection
    that has carried that many bytes to the server, like a network failure mid-PATCH."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.rate = None
        self.cut_after = None
        self.cuts = 0
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.url = f"http://127.0.0.1:{self.lsock.getsockname()[1]}"
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.closed = True
        self.lsock.close()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.lsock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src, dst, to_server):
        sent = 0
        try:
            while True:
                data = src.recv(16384)
                if not data:
                    break
                if to_server:
                    cut = self.cut_after
                    if cut is not None and sent + len(data) > cut:
                        self.cut_after = None
                        self.cuts += 1
                        dst.sendall(data[: cut - sent])
                        raise ConnectionAbortedError("cut by the test")
                    if self.rate:
                        time.sleep(len(data) / self.rate)
                dst.sendall(data)
                sent += len(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def cut_once_after(self, n):
        self.cut_after = n


@pytest.fixture
def proxy(server):
    p = Proxy(server.port)
    yield p
    p.close()


def test_parallel_upload_and_wait(server, key, workdir, tmp_path):
    a = make_clip(workdir / "cli-a.mp4", seconds=4, size="640x360")
    b = make_clip(workdir / "cli-b.mp4", seconds=4, size="480x270", rate=25)
    p, results = run_upload(
        server.url, key, tmp_path / "state.json", a, b, extra=("--wait", "--parallel", "2")
    )
    assert p.returncode == 0, p.stderr
    assert set(results) == {str(a), str(b)}, p.stdout
    for path in (a, b):
        r = results[str(path)]
        assert r["status"] == "ready", r
        assert "error" not in r, r
        assert r["size"] == path.stat().st_size
        assert r["sha256"] == sha256(path)
        assert source_sha(server, key, r["asset_id"]) == r["sha256"]
        asset = server.asset(key, r["asset_id"])
        assert asset["status"] == "ready" and asset["filename"] == path.name, asset
    # Completed uploads are forgotten.
    assert state_entries(tmp_path / "state.json") == []


def test_resume_after_sigkill(server, key, proxy, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(40 << 20))
    size = big.stat().st_size
    state = tmp_path / "state.json"
    # Throttled so the first run is still sending when it is killed.
    proxy.rate = 8 << 20
    proc = subprocess.Popen(
        upload_args(proxy.url, key, state, big, extra=("--chunk-size", "1MiB")),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=client_env(),
    )
    url = None
    deadline = time.time() + 60
    try:
        while time.time() < deadline:
            assert proc.poll() is None, proc.communicate()
            entries = state_entries(state)
            if entries:
                url = entries[0]["url"]
                if head_offset(key, url)[0] > 0:
                    break
            time.sleep(0.02)
        else:
            raise AssertionError("the upload never got going")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # Let the server commit what reached it before the connection dropped.
    offset = head_offset(key, url)[0]
    for _ in range(50):
        time.sleep(0.3)
        now = head_offset(key, url)[0]
        if now == offset:
            break
        offset = now
    assert 0 < offset < size, offset
    entries = state_entries(state)
    assert [e["url"] for e in entries] == [url], entries
    assert entries[0]["size"] == size and entries[0]["path"] == str(big.resolve())

    proxy.rate = None
    before = upload_bytes_counter(server)
    p, results = run_upload(proxy.url, key, state, big, extra=("--chunk-size", "1MiB"))
    assert p.returncode == 0, p.stderr
    r = results[str(big)]
    assert r["status"] == "uploaded", r
    # Same upload, continued from the server's offset rather than started over.
    assert r["asset_id"] == url.rstrip("/").rsplit("/", 1)[1]
    assert r["resumed_from"] == offset, (r, offset)
    assert upload_bytes_counter(server) - before == size - offset
    assert head_offset(key, url) == (size, size)
    assert r["sha256"] == sha256(big)
    assert source_sha(server, key, r["asset_id"]) == r["sha256"]
    assert state_entries(state) == []


def test_connection_cut_mid_patch_is_retried(server, key, proxy, tmp_path):
    f = tmp_path / "cut.bin"
    f.write_bytes(os.urandom(5 << 20))
    # Cut the connection half-way through the second 1 MiB PATCH.
    proxy.cut_once_after((3 << 20) // 2)
    p, results = run_upload(
        proxy.url, key, tmp_path / "state.json", f, extra=("--chunk-size", "1MiB")
    )
    assert p.returncode == 0, p.stderr
    assert proxy.cuts == 1
    assert "PATCH at" in p.stderr and "try 2/6" in p.stderr, p.stderr
    r = results[str(f)]
    assert r["sha256"] == sha256(f)
    assert source_sha(server, key, r["asset_id"]) == sha256(f)


class ChecksumTusServer(http.server.ThreadingHTTPServer):
    """A minimal tus server that advertises the checksum extension (the real one does not
    yet), checks every chunk's `Upload-Checksum`, and answers the first PATCH with 460 as if
    the chunk had been damaged on the way."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ChecksumTusHandler)
        self.data = bytearray()
        self.length = None
        self.metadata = None
        self.patches = []  # (offset, status)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class ChecksumTusHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, headers=()):
        self.send_response(status)
        self.send_header("Tus-Resumable", "1.0.0")
        self.send_header("Content-Length", "0")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()

    def do_OPTIONS(self):
        self.reply(204, [("Tus-Version", "1.0.0"), ("Tus-Extension", "creation,checksum"),
                         ("Tus-Checksum-Algorithm", "md5,sha1")])

    def do_POST(self):
        srv = self.server
        srv.length = int(self.headers["Upload-Length"])
        srv.metadata = self.headers.get("Upload-Metadata")
        self.reply(201, [("Location", f"{srv.url}/v1/uploads/FAKEASSET")])

    def do_HEAD(self):
        srv = self.server
        self.reply(200, [("Upload-Offset", str(len(srv.data))), ("Upload-Length", str(srv.length))])

    def do_PATCH(self):
        srv = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        offset = int(self.headers["Upload-Offset"])
        algo, _, digest = self.headers.get("Upload-Checksum", "").partition(" ")
        good = algo == "sha1" and base64.b64decode(digest) == hashlib.sha1(body).digest()
        if offset != len(srv.data):
            status = 409
        elif not good or not srv.patches:
            status = 460
        else:
            srv.data += body
            status = 204
        srv.patches.append((offset, status, good))
        self.reply(status, [("Upload-Offset", str(len(srv.data)))])


def test_checksums_when_the_server_offers_them(tmp_path):
    fake = ChecksumTusServer()
    try:
        f = tmp_path / "checked.bin"
        f.write_bytes(os.urandom(3 * (1 << 20) + 12345))
        p, results = run_upload(
            fake.url, "k", tmp_path / "s.json", f, extra=("--chunk-size", "1MiB")
        )
        assert p.returncode == 0, p.stderr
        assert bytes(fake.data) == f.read_bytes()
        # Every PATCH carried a correct SHA-1; the 460 was answered by re-sending the chunk.
        assert all(good for _, _, good in fake.patches), fake.patches
        assert fake.patches[0][:2] == (0, 460) and fake.patches[1][:2] == (0, 204)
        assert len(fake.patches) == 5
        assert "460" in p.stderr and "try 2/6" in p.stderr, p.stderr
        assert fake.metadata == "filename " + base64.b64encode(b"checked.bin").decode()
        r = results[str(f)]
        assert r["asset_id"] == "FAKEASSET" and r["sha256"] == sha256(f)
    finally:
        fake.shutdown()
        fake.server_close()


def test_wrong_key_and_bad_files(server, key, workdir, tmp_path):
    clip = make_clip(workdir / "cli-c.mp4", seconds=2, size="320x240")
    # The server's own words for a wrong key.
    r = requests.post(
        f"{server.url}/v1/uploads/",
        headers={
            "Authorization": "Bearer sk_wrong",
            "Tus-Resumable": "1.0.0",
            "Upload-Length": "1",
        },
        timeout=10,
    )
    assert r.status_code == 401
    message = r.json()["error"]["message"]
    p = subprocess.run(
        [BIN, "upload", "--server", server.url, "--key", "sk_wrong",
         "--state", str(tmp_path / "s1.json"), str(clip)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, env=client_env(),
    )
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert message in p.stderr and "401" in p.stderr, p.stderr
    assert p.stdout == ""

    missing = tmp_path / "no-such-clip.mp4"
    p, results = run_upload(server.url, key, tmp_path / "s2.json", missing, tmp_path, clip)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert f"error: {missing}: " in p.stderr and "No such file" in p.stderr, p.stderr
    assert f"error: {tmp_path}: is a directory" in p.stderr, p.stderr
    assert results[str(missing)]["status"] == "error" and results[str(missing)]["asset_id"] is None
    assert results[str(tmp_path)]["status"] == "error"
    ok = results[str(clip)]
    assert ok["status"] == "uploaded" and "error" not in ok, ok
    assert source_sha(server, key, ok["asset_id"]) == sha256(clip) == ok["sha256"]
