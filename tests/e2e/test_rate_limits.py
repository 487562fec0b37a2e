"""Rate limits, black-box: exact GCRA boundaries per tenant (set and changed through the
API) and per client IP, the 429 answer and its headers, and the Redis backend: two gateways
on one Redis share one limit (N in total, not 2N), a stopped Redis gets the configured
fail-open or fail-closed answer within the budget, and a restarted Redis is used again
without any restart of the gateways."""

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from conftest import Sluice, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "sk_admin_ratelimit_test_key_0123456789"
# Requests of one burst must land within one refill interval (1 s): on a machine so
# loaded that they do not, the burst is retried with a fresh bucket (never a false pass:
# every attempt checks the exact boundary).
ATTEMPTS = 3


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def parse_ratelimit(r):
    """(policy name, q, w) and (policy name, r, t) from the draft's two fields."""
    p = re.fullmatch(r'"([a-z-]+)";q=(\d+);w=(\d+)', r.headers["RateLimit-Policy"])
    s = re.fullmatch(r'"([a-z-]+)";r=(\d+);t=(\d+)', r.headers["RateLimit"])
    assert p and s, r.headers
    return (p.group(1), int(p.group(2)), int(p.group(3))), (s.group(1), int(s.group(2)), int(s.group(3)))


def burst_boundary(send, n, policy):
    """Send n + 1 requests: n pass with `RateLimit` counting down to 0, the next is a 429.
    Returns the refusal, or None when the machine was too slow to hold one interval."""
    start = time.monotonic()
    answers = [send() for _ in range(n + 1)]
    if time.monotonic() - start >= 0.9:
        return None
    for i, r in enumerate(answers[:n]):
        assert r.status_code < 400, (i, r.status_code, r.text)
        (pname, q, _), (sname, left, _) = parse_ratelimit(r)
        assert (pname, sname, q) == (policy, policy, n)
        assert left == n - 1 - i, (i, r.headers["RateLimit"])
    refused = answers[n]
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    (_, q, _), (_, left, t) = parse_ratelimit(refused)
    assert (q, left) == (n, 0) and t >= 1
    return refused


@pytest.fixture(scope="module")
def limited(workdir):
    cfg = "[rate_limit.ops]\nip = { requests_per_s = 1, burst = 4 }\n"
    s = Sluice(workdir / "rl-local", config_text=cfg, env={"SLUICE_ADMIN_KEY": ADMIN})
    yield s
    s.stop()


def wait_for_ok(url):
    """GET until it passes the limiter (a refused request takes no cell)."""
    out = {}

    def ok():
        out["r"] = requests.get(url, timeout=10)
        return out["r"].status_code == 200

    wait_for(ok, 15, url)
    return out["r"]


def new_tenant(s, rate_limit=None):
    body = {"name": "rl"}
    if rate_limit:
        body["rate_limit"] = rate_limit
    r = requests.post(f"{s.url}/v1/tenants", json=body, headers=auth(s.admin_key), timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


def test_tenant_limit_is_exact_and_refills(limited):
    s = limited
    for _ in range(ATTEMPTS):
        t = new_tenant(s, {"requests_per_s": 1, "burst": 5})
        assert t["rate_limit"] == {"requests_per_s": 1, "burst": 5}
        send = lambda: requests.get(f"{s.url}/v1/jobs", headers=auth(t["api_key"]), timeout=10)
        if burst_boundary(send, 5, "admin-tenant") is not None:
            break
    else:
        pytest.fail("the machine never held five requests within one second")
    # A refusal takes no cell: one interval later exactly one more request passes.
    wait_for(lambda: send().status_code == 200, 5, "a refilled cell")
    r = send()
    assert r.status_code == 429, r.text
    # Another tenant is not touched by this one's limit.
    other = new_tenant(s)
    r = requests.get(f"{s.url}/v1/jobs", headers=auth(other["api_key"]), timeout=10)
    assert r.status_code == 200 and "RateLimit" not in r.headers


def test_patch_changes_a_tenants_limit_at_once(limited):
    s = limited
    t = new_tenant(s)
    send = lambda: requests.get(f"{s.url}/v1/jobs", headers=auth(t["api_key"]), timeout=10)
    for _ in range(8):
        assert send().status_code == 200
    for attempt in range(ATTEMPTS):
        burst = 3 + attempt  # a new limit is a new, full bucket
        r = requests.patch(
            f"{s.url}/v1/tenants/{t['id']}",
            json={"rate_limit": {"requests_per_s": 1, "burst": burst}},
            headers=auth(s.admin_key),
            timeout=10,
        )
        assert r.status_code == 200, r.text
        assert r.json()["rate_limit"] == {"requests_per_s": 1, "burst": burst}
        if burst_boundary(send, burst, "admin-tenant") is not None:
            break
    else:
        pytest.fail("the machine never held a burst within one second")
    # Removing the tenant's own limit (no class default configured): unlimited again.
    r = requests.patch(
        f"{s.url}/v1/tenants/{t['id']}", json={"rate_limit": None}, headers=auth(s.admin_key), timeout=10
    )
    assert r.status_code == 200 and r.json()["rate_limit"] is None
    assert all(send().status_code == 200 for _ in range(6))
    # A tenant key may not change limits.
    r = requests.patch(
        f"{s.url}/v1/tenants/{t['id']}", json={"rate_limit": None}, headers=auth(t["api_key"]), timeout=10
    )
    assert r.status_code == 403, r.text


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "rate_limit": {"requests_per_s": 0, "burst": 1}},
        {"name": "x", "rate_limit": {"requests_per_s": 1, "burst": 0}},
        {"name": "x", "rate_limit": {"requests_per_s": 10**9, "burst": 1}},
        {"name": "x", "rate_limit": {"requests_per_s": 1, "burst": 10**7}},
        {"name": "x", "rate_limit": {"requests_per_s": 1}},
        {"name": "x", "rate_limit": {"requests_per_s": 1, "burst": 1, "window": 2}},
        {"name": "x", "rate_limit": {"requests_per_s": -1, "burst": 1}},
    ],
)
def test_rate_limit_values_are_bounded(limited, body):
    r = requests.post(f"{limited.url}/v1/tenants", json=body, headers=auth(limited.admin_key), timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request"


def test_anonymous_requests_are_limited_per_ip_by_class(limited):
    s = limited
    for _ in range(ATTEMPTS):
        wait_for(lambda: requests.get(f"{s.url}/healthz", timeout=10).status_code == 200, 10, "healthz")
        time.sleep(4.1)  # not synchronisation: lets the burst of 4 refill completely
        if burst_boundary(lambda: requests.get(f"{s.url}/healthz", timeout=10), 4, "ops-ip") is not None:
            break
    else:
        pytest.fail("the machine never held four requests within one second")
    # Another class is not limited by the ops bucket.
    r = requests.get(f"{s.url}/v1/usage", timeout=10)
    assert r.status_code == 401 and "RateLimit" not in r.headers
    m = wait_for_ok(f"{s.url}/metrics")
    assert re.search(r'sluice_rate_limited_total\{class="ops"\} [1-9]', m.text), m.text[-2000:]


# ---- Redis ---------------------------------------------------------------------------


class Redis:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="sluice-e2e-redis-"))
        self.port = free_port()
        self.url = self.start()

    def start(self):
        out = subprocess.run(
            [ROOT / "scripts" / "redis.sh", "start", self.dir, str(self.port)],
            check=True, capture_output=True, text=True, timeout=30,
        )
        return out.stdout.strip()

    def stop(self):
        subprocess.run([ROOT / "scripts" / "redis.sh", "stop", self.dir], check=True, timeout=30)


@pytest.fixture(scope="module")
def redis_pair(workdir):
    assert shutil.which("redis-server"), "redis-server must be installed (scripts/setup.sh)"
    redis = Redis()
    base = (
        f'[rate_limit]\nbackend = "redis"\nredis_url = "{redis.url}"\n'
        "[rate_limit.ops]\nip = { requests_per_s = 1, burst = 6 }\n"
    )
    env = {"SLUICE_ADMIN_KEY": ADMIN}
    a = Sluice(workdir / "rl-a", config_text=base.replace("[rate_limit.ops]", 'on_backend_error = "open"\n[rate_limit.ops]'), env=env)
    b = Sluice(workdir / "rl-b", config_text=base.replace("[rate_limit.ops]", 'on_backend_error = "closed"\n[rate_limit.ops]'), env=env)
    yield redis, a, b
    a.stop()
    b.stop()
    redis.stop()
    shutil.rmtree(redis.dir, ignore_errors=True)


def shared_boundary(a, b, n):
    """n requests alternating between the gateways pass, the next on either is refused."""
    for _ in range(ATTEMPTS):
        wait_for(lambda: requests.get(f"{a.url}/healthz", timeout=10).status_code == 200, 15, "a")
        time.sleep(n + 0.2)  # not synchronisation: lets the shared burst refill completely
        gws = [a, b]
        i = iter(range(10**6))
        if burst_boundary(lambda: requests.get(f"{gws[next(i) % 2].url}/healthz", timeout=10), n, "ops-ip") is not None:
            r = requests.get(f"{a.url}/healthz", timeout=10)
            assert r.status_code == 429, "the other gateway shares the exhausted bucket"
            return
    pytest.fail("the machine never held the burst within one second")


def test_two_gateways_share_one_limit_on_redis(redis_pair):
    _, a, b = redis_pair
    shared_boundary(a, b, 6)
    # Refill is shared too: one interval later one request passes on one gateway, and the
    # other gateway's next request is refused again.
    wait_for(lambda: requests.get(f"{b.url}/healthz", timeout=10).status_code == 200, 5, "a refilled cell")
    assert requests.get(f"{a.url}/healthz", timeout=10).status_code == 429


def test_redis_down_fails_open_or_closed_within_budget_and_recovers(redis_pair):
    redis, a, b = redis_pair
    redis.stop()
    # Fail open: answered (no hang), without rate-limit fields; fail closed: 503.
    for _ in range(10):
        t0 = time.monotonic()
        r = requests.get(f"{a.url}/healthz", timeout=10)
        assert r.status_code == 200 and "RateLimit" not in r.headers, r.headers
        ra = time.monotonic() - t0
        t0 = time.monotonic()
        r = requests.get(f"{b.url}/healthz", timeout=10)
        rb = time.monotonic() - t0
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "rate_limit_unavailable"
        assert r.headers["Retry-After"] == "1"
        # A bound a hung request misses and a busy machine does not (budget is 50 ms).
        assert ra < 2 and rb < 2, (ra, rb)
    m = requests.get(f"{a.url}/metrics", timeout=10).text
    assert re.search(r"sluice_rate_limit_backend_errors_total [1-9]", m), m[-2000:]
    assert "rate limiter backend (redis) failed" in a.logs()
    # Redis back on the same port: both gateways use it again by themselves.
    redis.start()
    wait_for(lambda: "RateLimit" in requests.get(f"{a.url}/healthz", timeout=10).headers, 30, "gateway a back on redis")
    wait_for(lambda: requests.get(f"{b.url}/healthz", timeout=10).status_code == 200, 30, "gateway b back on redis")
    shared_boundary(a, b, 6)
