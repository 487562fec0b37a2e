"""Real tus clients resuming the way devices need them to: tus-js-client and tuspy through a
connection that is cut in the middle of a PATCH, and tus-js-client across a gateway killed
with SIGKILL and restarted. Each upload must end with the stored source's sha256 equal to
the file's, and must resume from the committed offset rather than start over (checked by
counting the bytes the client had to send)."""

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from tusclient import client as tus_client

from conftest import Sluice, free_port, sha256

JS = Path(__file__).parent / "js"
MiB = 1024 * 1024


class CuttingProxy:
    """A loopback TCP proxy in front of a gateway: forwards client bytes at a bounded rate
    (so an upload is still in flight when we act), can cut one connection abruptly once a
    given number of client bytes went through, and can be pointed at a restarted gateway."""

    def __init__(self, upstream_port, rate=16 * MiB):
        self.upstream_port = upstream_port
        self.rate = rate
        self.cut_at = None  # total client bytes after which the current connection dies
        self.cuts = 0
        self.forwarded = 0
        self.connections = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.closed = True
        self.sock.close()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                c.close()  # the gateway is down: the client sees a refused connection
                continue
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._up, args=(c, u), daemon=True).start()
            threading.Thread(target=self._down, args=(u, c), daemon=True).start()

    @staticmethod
    def _reset(*socks):
        for s in socks:
            try:
                # SO_LINGER 0: close with a reset, as a dropped network path looks.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()
            except OSError:
                pass

    def _up(self, c, u):
        try:
            while True:
                data = c.recv(64 * 1024)
                if not data:
                    u.shutdown(socket.SHUT_WR)
                    return
                time.sleep(len(data) / self.rate)
                with self.lock:
                    self.forwarded += len(data)
                    cut = self.cut_at is not None and self.forwarded >= self.cut_at
                    if cut:
                        self.cut_at = None
                        self.cuts += 1
                if cut:
                    self._reset(c, u)
                    return
                u.sendall(data)
        except OSError:
            self._reset(c, u)

    def _down(self, u, c):
        try:
            while True:
                data = u.recv(64 * 1024)
                if not data:
                    c.shutdown(socket.SHUT_WR)
                    return
                c.sendall(data)
        except OSError:
            self._reset(c, u)


@pytest.fixture(scope="module")
def gateway(workdir):
    s = Sluice(workdir / "resume-data")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def key(gateway):
    return gateway.tenant("resume")["api_key"]


def source_sha(srv, key, asset_id):
    r = requests.get(
        f"{srv.url}/v1/assets/{asset_id}/source",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return sha256(r.content)


def random_file(path, size):
    path.write_bytes(os.urandom(size))
    return path


def node_upload(endpoint, key, path, chunk=None):
    args = ["node", str(JS / "upload-resume.mjs"), endpoint, key, str(path)]
    if chunk:
        args.append(str(chunk))
    return subprocess.Popen(args, cwd=JS, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_tus_js_client_resumes_after_a_cut_connection(gateway, key, workdir):
    size = 16 * MiB
    f = random_file(workdir / "cut-js.bin", size)
    proxy = CuttingProxy(gateway.port)
    proxy.cut_at = 5 * MiB  # in the middle of the one PATCH (chunkSize Infinity)
    try:
        p = node_upload(f"{proxy.url}/v1/uploads/", key, f)
        out, err = p.communicate(timeout=120)
    finally:
        proxy.close()
    assert p.returncode == 0, err
    assert proxy.cuts == 1 and "retry 1" in err, err
    # Resumed from what the gateway committed when the body broke, not from zero.
    assert proxy.forwarded < size + 2 * MiB, proxy.forwarded
    asset_id = out.strip().rsplit("/", 1)[1]
    assert source_sha(gateway, key, asset_id) == sha256(f)


def test_tuspy_resumes_after_a_cut_connection(gateway, key, workdir):
    size = 16 * MiB
    f = random_file(workdir / "cut-py.bin", size)
    proxy = CuttingProxy(gateway.port)
    proxy.cut_at = 5 * MiB
    try:
        c = tus_client.TusClient(
            f"{proxy.url}/v1/uploads/", headers={"Authorization": f"Bearer {key}"}
        )
        up = c.uploader(str(f), chunk_size=size, retries=5, retry_delay=1)
        up.upload()
    finally:
        proxy.close()
    assert proxy.cuts == 1
    assert proxy.forwarded < size + 2 * MiB, proxy.forwarded
    asset_id = up.url.rstrip("/").rsplit("/", 1)[1]
    assert source_sha(gateway, key, asset_id) == sha256(f)


def test_tus_js_client_resumes_across_a_killed_gateway(workdir):
    data_dir = workdir / "resume-killed"
    s = Sluice(data_dir)
    key = s.tenant("resume-killed")["api_key"]
    size = 24 * MiB
    chunk = 4 * MiB  # each PATCH commits (fsync) its 4 MiB
    f = random_file(workdir / "killed-js.bin", size)
    proxy = CuttingProxy(s.port, rate=8 * MiB)
    s2 = None
    try:
        p = node_upload(f"{proxy.url}/v1/uploads/", key, f, chunk)
        # Kill the gateway once at least two chunks are committed and a third is in flight.
        deadline = time.time() + 30
        while proxy.forwarded < 10 * MiB and time.time() < deadline:
            time.sleep(0.05)
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait()
        s.log.close()
        killed_at = proxy.forwarded
        assert killed_at < size, "the upload finished before the gateway was killed"
        s2 = Sluice(data_dir, port=free_port())
        proxy.upstream_port = s2.port
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "retry 1" in err, err
        # At most the chunk in flight is sent again.
        assert proxy.forwarded < size + chunk + MiB, (proxy.forwarded, killed_at)
        asset_id = out.strip().rsplit("/", 1)[1]
        assert source_sha(s2, key, asset_id) == sha256(f)
    finally:
        proxy.close()
        if s2:
            s2.stop()
