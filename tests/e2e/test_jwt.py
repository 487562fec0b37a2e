"""JWTs against a real JWKS server (http.server in a thread) and the real binary. Each case
first shows a good token is accepted, then the refused one: `alg: none`, HS256 keyed with
the public key, a kid naming a key of another algorithm, wrong issuer, wrong audience,
expired, not yet valid, an unknown tenant; an unknown kid (refused, then accepted once the
key set has it), a rotated-out key (accepted during its grace period, refused after), a
JWKS server that is down (cached keys keep working, metric and warning), one fetch for a
burst of requests with a new kid, and no token in the logs."""

import concurrent.futures
import time

import pytest
import requests

from conftest import Sluice, wait_for
from jwtkit import (JwksServer, Key, assert_not_logged, claims, hs256_token, jwt_config,
                    none_token)


def h(token):
    return {"Authorization": f"Bearer {token}"}


def status(s, token, path="/v1/jobs"):
    return requests.get(f"{s.url}{path}", headers=h(token), timeout=10).status_code


@pytest.fixture
def idp(workdir, request):
    """A JWKS server with one key of each algorithm, Sluice trusting it, and a tenant."""
    keys = {alg: Key(alg, f"k-{alg.lower()}") for alg in ("RS256", "ES256", "EdDSA")}
    jwks = JwksServer(keys.values())
    s = Sluice(workdir / f"data-{request.node.name}", config_text=jwt_config(jwks.url))
    tenant = s.tenant("jwt")
    secrets = [s.admin_key, tenant["api_key"]]
    yield s, jwks, keys, tenant["id"], secrets
    s.stop()
    jwks.stop()
    assert_not_logged(s.log_path.read_text(errors="replace"), secrets)


def test_each_algorithm_and_role(idp):
    s, _, keys, tenant, secrets = idp
    for key in keys.values():
        tok = key.token(claims("viewer", tenant))
        secrets.append(tok)
        assert status(s, tok) == 200, key.alg
    admin = keys["ES256"].token(claims("tenant_admin", tenant))
    viewer = keys["EdDSA"].token(claims("viewer", tenant))
    uploader = keys["RS256"].token(claims("uploader", tenant))
    secrets += [admin, viewer, uploader]
    # A JWT is accepted wherever a key of its role is, and nowhere else.
    assert status(s, admin, "/v1/keys") == 200
    assert status(s, viewer, "/v1/keys") == 403
    assert status(s, uploader, "/v1/jobs") == 403
    r = requests.post(f"{s.url}/v1/uploads", timeout=10,
                      headers={**h(uploader), "Tus-Resumable": "1.0.0", "Upload-Length": "10"})
    assert r.status_code == 201, r.text
    r = requests.post(f"{s.url}/v1/uploads", timeout=10,
                      headers={**h(viewer), "Tus-Resumable": "1.0.0", "Upload-Length": "10"})
    assert r.status_code == 403, r.text


def test_forged_and_invalid_tokens_are_refused(idp):
    s, _, keys, tenant, secrets = idp
    rsa, es = keys["RS256"], keys["ES256"]
    good = rsa.token(claims("viewer", tenant))
    secrets.append(good)
    assert status(s, good) == 200
    now = int(time.time())
    bad = {
        "alg none": none_token(claims("viewer", tenant), rsa.kid),
        "HS256 keyed with the public key": hs256_token(rsa.public_pem(),
                                                       claims("viewer", tenant), rsa.kid),
        "HS256 keyed with the JWK's n": hs256_token(rsa.jwk()["n"].encode(),
                                                    claims("viewer", tenant), rsa.kid),
        "kid of an ES256 key, alg RS256": rsa.token(claims("viewer", tenant), kid=es.kid),
        "wrong issuer": rsa.token(claims("viewer", tenant, iss="https://evil.test/")),
        "wrong audience": rsa.token(claims("viewer", tenant, aud="other")),
        "expired": rsa.token(claims("viewer", tenant, exp=now - 60)),
        "not yet valid": rsa.token(claims("viewer", tenant, nbf=now + 60)),
        "no exp": rsa.token(claims("viewer", tenant, exp=None)),
        "unknown tenant": rsa.token(claims("viewer", "01NOSUCHTENANT0000000000000")),
        "no tenant": rsa.token(claims("viewer")),
        "unknown role": rsa.token(claims("superuser", tenant)),
        "signature of another key": es.token(claims("viewer", tenant), kid=rsa.kid, alg="RS256"),
        "tampered payload": good.split(".")[0] + "." + rsa.token(
            claims("tenant_admin", tenant)).split(".")[1] + "." + good.split(".")[2],
    }
    for what, tok in bad.items():
        secrets.append(tok.split(".")[-1] or tok)
        r = requests.get(f"{s.url}/v1/jobs", headers=h(tok), timeout=10)
        assert r.status_code == 401, (what, r.status_code, r.text)
        assert r.json()["error"]["code"] == "unauthorized", what
    # Within the leeway (5 s) is still fine.
    assert status(s, rsa.token(claims("viewer", tenant, exp=now - 2))) == 200


def test_unknown_kid_is_fetched_once_then_accepted(idp):
    s, jwks, keys, tenant, secrets = idp
    assert status(s, keys["RS256"].token(claims("viewer", tenant))) == 200
    new = Key("EdDSA", "k-new")
    tok = new.token(claims("viewer", tenant))
    secrets.append(tok)
    time.sleep(1.1)  # past refresh_min_interval_s
    assert status(s, tok) == 401, "not in the key set yet"
    jwks.keys.append(new)
    time.sleep(1.1)
    # A burst of requests with the new kid: all accepted, one fetch between them.
    before = jwks.fetches
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda _: status(s, tok), range(200)))
    assert codes == [200] * 200, set(codes)
    assert jwks.fetches - before <= 2, jwks.fetches - before  # one, plus a stale-set refresh
    r = requests.get(f"{s.url}/v1/admin/jwks", headers=h(s.admin_key), timeout=10)
    assert r.status_code == 200, r.text
    listed = {k["kid"]: k for k in r.json()["keys"]}
    assert listed["k-new"]["alg"] == "EdDSA" and listed["k-rs256"]["alg"] == "RS256"
    assert {"fetched_at", "expires"} <= set(listed["k-new"])
    assert status(s, keys["ES256"].token(claims("tenant_admin", tenant)), "/v1/admin/jwks") == 403


def test_rotated_out_key_valid_during_grace_only(idp):
    s, jwks, keys, tenant, secrets = idp
    old = keys["ES256"]
    tok = old.token(claims("viewer", tenant, exp=int(time.time()) + 600))
    secrets.append(tok)
    assert status(s, tok) == 200
    # Rotation: the old key leaves the set, a new one arrives (fetched for its kid).
    new = Key("ES256", "k-rotated-in")
    jwks.keys = [k for k in jwks.keys if k is not old] + [new]
    time.sleep(1.1)
    assert status(s, new.token(claims("viewer", tenant))) == 200
    removed_at = time.time()
    assert status(s, tok) == 200, "in its grace period (3 s)"
    wait_for(lambda: status(s, tok) == 401, 10, "the old key to lapse after its grace")
    assert time.time() - removed_at >= 2.5, "refused before its grace period ended"


def test_jwks_down_keeps_the_cached_keys(idp):
    s, jwks, keys, tenant, secrets = idp
    tok = keys["EdDSA"].token(claims("viewer", tenant))
    secrets.append(tok)
    assert status(s, tok) == 200
    jwks.down = True
    before = jwks.fetches
    # The set's cache (2 s) runs out; every refresh fails; the cached keys keep working.
    deadline = time.time() + 6
    while time.time() < deadline:
        assert status(s, tok) == 200
        time.sleep(0.25)
    assert jwks.fetches > before, "the set was fetched again once stale"
    assert jwks.fetches - before <= 8, "failed fetches are throttled"
    metrics = requests.get(f"{s.url}/metrics", timeout=10).text
    assert 'sluice_jwks_refresh_total{outcome="error"}' in metrics
    assert "JWKS refresh failed, keeping the cached keys" in s.log_path.read_text()
    # Back up: a new key is fetched again.
    jwks.down = False
    new = Key("RS256", "k-after-outage")
    jwks.keys.append(new)
    time.sleep(1.1)
    assert status(s, new.token(claims("viewer", tenant))) == 200


def test_jwks_from_a_file(workdir, tmp_path):
    key = Key("EdDSA", "file-key")
    path = tmp_path / "jwks.json"
    import json
    path.write_text(json.dumps({"keys": [key.jwk()]}))
    s = Sluice(workdir / "data-file", config_text=jwt_config(f"file://{path}"))
    try:
        t = s.tenant("jwt-file")
        tok = key.token(claims("tenant_admin", t["id"]))
        assert status(s, tok, "/v1/keys") == 200
        other = Key("EdDSA", "not-in-file")
        assert status(s, other.token(claims("tenant_admin", t["id"])), "/v1/keys") == 401
    finally:
        s.stop()
    assert_not_logged(s.log_path.read_text(errors="replace"), [tok, s.admin_key, t["api_key"]])
