"""Black-box test harness: spawns the real `sluice` binary on a free loopback port with a
temporary data dir, and offers helpers that talk to it as real clients do."""

import hashlib
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.parse
import time
from pathlib import Path

import pytest
import requests

BIN = os.environ.get("SLUICE_BIN") or str(
    Path(__file__).resolve().parents[2] / "target" / "debug" / "sluice"
)


# How long `sluice serve` may take to print its listening line before the test fails.
STARTUP_DEADLINE_S = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sluice:
    """One running `sluice serve` process."""

    def __init__(self, data_dir, config_text=None, env=None, port=None, extra_args=()):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [BIN, "serve", "--addr", f"127.0.0.1:{self.port}", "--data-dir", str(data_dir)]
        args += list(extra_args)
        if config_text is not None:
            cfg = self.data_dir.parent / f"config-{self.port}.toml"
            cfg.write_text(config_text)
            args += ["--config", str(cfg)]
        full_env = dict(os.environ, RUST_LOG="info,sqlx=warn,apalis=warn")
        full_env.pop("SLUICE_ADMIN_KEY", None)
        full_env.update(env or {})
        self.log_path = self.data_dir.parent / f"sluice-{self.port}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, env=full_env)
        self.admin_key = (env or {}).get("SLUICE_ADMIN_KEY")
        self.stdout_lines = []
        # stdout is read by a thread, so the start-up deadline holds even when the process
        # prints nothing at all (a blocking readline would wait forever).
        lines = queue.Queue()

        def pump():
            for raw in iter(self.proc.stdout.readline, b""):
                lines.put(raw.decode(errors="replace"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.time() + STARTUP_DEADLINE_S
        listening = False
        while not listening:
            remaining = deadline - time.time()
            if remaining <= 0:
                break
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            self.stdout_lines.append(line)
            m = re.match(r"admin key \(shown once, stored in .*\): (\S+)", line)
            if m:
                self.admin_key = m.group(1)
            if line.startswith(f"listening on http://127.0.0.1:{self.port}"):
                listening = True
            elif line.startswith(f"listening on https://127.0.0.1:{self.port}"):
                self.url = f"https://127.0.0.1:{self.port}"
                listening = True
        if not listening:
            self.stop()
            raise RuntimeError(
                f"sluice did not start within {STARTUP_DEADLINE_S} s: {self.stdout_lines}\n{self.logs()}"
            )
        if self.admin_key is None:
            self.admin_key = (self.data_dir / "admin.key").read_text().strip()

    def logs(self):
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    # ---- API helpers ----
    def tenant(self, name="acme"):
        r = requests.post(
            f"{self.url}/v1/tenants",
            json={"name": name},
            headers={"Authorization": f"Bearer {self.admin_key}"},
            timeout=10,
        )
        assert r.status_code == 201, r.text
        return r.json()

    def asset(self, key, asset_id):
        r = requests.get(
            f"{self.url}/v1/assets/{asset_id}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        return r.json()

    def ready_asset(self, workdir, name, seconds=6, size="320x180"):
        """A tenant and a small clip uploaded and transcoded: (api key, asset id)."""
        clip = make_clip(Path(workdir) / f"{name}.mp4", seconds=seconds, size=size)
        key = self.tenant(name)["api_key"]
        asset_id = self.tus_upload(key, clip)
        a = self.wait_asset(key, asset_id)
        assert a["status"] == "ready", a
        return key, asset_id

    def wait_asset(self, key, asset_id, timeout=240):
        """Poll until the asset is ready or failed. The result carries `_progress_seen`:
        the (status, progress) pairs observed *before* it finished, so a test can check
        what was visible while the job ran (not the final value, which is always there)."""
        deadline = time.time() + timeout
        seen = []
        while time.time() < deadline:
            a = self.asset(key, asset_id)
            if a["status"] in ("ready", "failed"):
                a["_progress_seen"] = seen
                return a
            seen.append((a["status"], a["progress"]))
            assert self.alive(), self.logs()
            time.sleep(0.3)
        raise AssertionError(f"asset {asset_id} not finished after {timeout}s: {a}\n{self.logs()}")

    def tus_upload(self, key, path, chunk_size=1 << 20, filename=None):
        """Upload with tuspy, the Python tus client; returns the asset id."""
        from tusclient import client

        c = client.TusClient(f"{self.url}/v1/uploads/", headers={"Authorization": f"Bearer {key}"})
        up = c.uploader(
            str(path),
            chunk_size=chunk_size,
            metadata={"filename": filename or Path(path).name},
        )
        up.upload()
        return up.url.rstrip("/").rsplit("/", 1)[-1]


@pytest.fixture(scope="session")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="sluice-e2e-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def server(workdir):
    s = Sluice(workdir / "data")
    yield s
    s.stop()


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=120)


def make_clip(path, seconds=12, size="1280x720", rate=30, audio=True, extra=()):
    """A test clip generated at test time: moving test pattern, a tone, H.264 + AAC."""
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    args += ["-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac", "-b:a", "96k"]
    ffmpeg(*args, *extra, str(path))
    return path


def ffprobe_json(*args):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *args],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    return json.loads(out)


def sha256(path_or_bytes):
    h = hashlib.sha256()
    if isinstance(path_or_bytes, (bytes, bytearray)):
        h.update(path_or_bytes)
    else:
        with open(path_or_bytes, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def raw_request(url_base, method, path, body=b"", headers=None):
    """Send `path` exactly as given (no dot-segment normalisation, no re-encoding: what
    `requests` does before sending), so the server really sees `..`, `%2e%2e` or `%2f`.
    Returns (status, body)."""
    import http.client
    from urllib.parse import urlsplit
    u = urlsplit(url_base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def wait_for(predicate, timeout, what, interval=0.1):
    """Poll `predicate` until it returns a truthy value (returned), or fail after `timeout`
    seconds naming `what`. Tests synchronise on observable state with this, never on a
    fixed sleep."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def pytest_collection_finish(session):
    """The whole-suite run (scripts/test.sh without arguments) sets SLUICE_MIN_TESTS: fewer
    collected tests than that means tests went missing (a broken import, a renamed file),
    and the run fails instead of printing success."""
    floor = os.environ.get("SLUICE_MIN_TESTS")
    if floor and len(session.items) < int(floor):
        raise pytest.UsageError(
            f"only {len(session.items)} black-box tests collected; the suite has at least {floor}"
        )


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class Edge:
    def __init__(self, origin_url):
        # World-writable: nginx's workers drop root for `nobody` when started as root.
        self.dir = tempfile.mkdtemp(prefix="sluice-edge-")
        os.chmod(self.dir, 0o777)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = subprocess.run(
            [BIN, "edge", "nginx", "--origin", origin_url, "--listen", f"127.0.0.1:{self.port}",
             "--cache-dir", self.dir, "--max-size", "1g"],
            capture_output=True, check=True, timeout=30,
        ).stdout
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "wb") as f:
            f.write(conf)
        self.proc = subprocess.Popen([NGINX, "-c", self.conf, "-g", "daemon off;"],
                                     stderr=subprocess.PIPE)
        wait_for(lambda: self._up(), 15, "nginx listening")

    def _up(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode()}")
        try:
            requests.get(f"{self.url}/healthz", timeout=2)
            return True
        except requests.ConnectionError:
            return False

    def via(self, url):
        """The same URL with the origin's scheme, host and port replaced by the edge's."""
        p = urllib.parse.urlsplit(url)
        return urllib.parse.urlunsplit(("http", f"127.0.0.1:{self.port}", p.path, p.query, ""))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
