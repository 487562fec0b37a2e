"""The audit log, black-box: admin actions (tenants, keys, devices, webhooks) are written
with who (key prefix, JWT subject or the admin key), role, action, target, outcome and
request id; refused attempts are written as `denied`; `GET /v1/audit` pages newest first
with bounded pages; the platform admin sees every row, a tenant admin its tenant's only, a
viewer nothing; the table refuses changes; a tenant's rows reach its webhooks that subscribe
to `audit.entry`; no key appears in the logs."""

import sqlite3

import pytest
import requests

from conftest import Sluice
from jwtkit import JwksServer, Key, assert_not_logged, claims, jwt_config


def h(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def env(workdir):
    signer = Key("ES256", "audit-key")
    jwks = JwksServer([signer])
    s = Sluice(workdir / "data", config_text=jwt_config(jwks.url) +
               '[webhooks]\nallow_hosts = ["127.0.0.1"]\n')
    secrets = [s.admin_key]
    yield s, signer, secrets
    s.stop()
    jwks.stop()
    assert_not_logged(s.log_path.read_text(errors="replace"), secrets)


def audit(s, key, **params):
    r = requests.get(f"{s.url}/v1/audit", params=params, headers=h(key), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_admin_actions_are_audited(env):
    s, signer, secrets = env
    r = requests.post(f"{s.url}/v1/tenants", json={"name": "audited"}, headers=h(s.admin_key),
                      timeout=10)
    assert r.status_code == 201, r.text
    t = r.json()
    create_tenant_rid = r.headers["x-request-id"]
    secrets.append(t["api_key"])
    k = requests.post(f"{s.url}/v1/keys", json={"role": "viewer", "name": "v"},
                      headers=h(t["api_key"]), timeout=10).json()
    secrets.append(k["key"])
    assert requests.delete(f"{s.url}/v1/keys/{k['id']}", headers=h(t["api_key"]),
                           timeout=10).status_code == 204
    d = requests.post(f"{s.url}/v1/devices", json={"name": "cam"}, headers=h(t["api_key"]),
                      timeout=10).json()
    secrets.append(d["key"])
    assert requests.delete(f"{s.url}/v1/devices/{d['id']}", headers=h(t["api_key"]),
                           timeout=10).status_code == 204
    r = requests.post(f"{s.url}/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"},
                      headers=h(t["api_key"]), timeout=10)
    assert r.status_code == 201, r.text
    hook = r.json()["id"]
    assert requests.delete(f"{s.url}/v1/webhooks/{hook}", headers=h(t["api_key"]),
                           timeout=10).status_code in (200, 204)
    # A JWT admin: the subject names the actor.
    tok = signer.token(claims("tenant_admin", t["id"], sub="alice@idp"))
    secrets.append(tok)
    k2 = requests.post(f"{s.url}/v1/keys", json={"role": "uploader"}, headers=h(tok),
                       timeout=10).json()
    secrets.append(k2["key"])

    rows = audit(s, s.admin_key, limit=500)["entries"]
    mine = [r for r in rows if r["tenant"] == t["id"] or r["target"] == t["id"]]
    actions = [r["action"] for r in reversed(mine)]
    assert actions == ["create_tenant", "create_key", "revoke_key", "create_device",
                       "delete_device", "create_webhook", "delete_webhook", "create_key"], actions
    by = {(r["action"], r["target"]): r for r in mine}
    ct = by[("create_tenant", t["id"])]
    assert ct["actor"] == "admin_key" and ct["role"] == "platform_admin"
    assert ct["outcome"] == "ok" and ct["status"] == 201
    assert ct["request_id"] == create_tenant_rid
    tenant_key_prefix = t["api_key"][:11]
    assert by[("create_key", k["id"])]["actor"] == f"key:{tenant_key_prefix}"
    assert by[("create_key", k["id"])]["role"] == "tenant_admin"
    assert by[("revoke_key", k["id"])]["outcome"] == "ok"
    assert by[("create_device", d["id"])]["target"] == d["id"]
    assert by[("create_key", k2["id"])]["actor"] == "jwt:alice@idp"
    for r in mine:
        assert t["api_key"] not in str(r) and k["key"] not in str(r)


def test_refused_attempts_are_audited_as_denied(env):
    s, _, secrets = env
    t = requests.post(f"{s.url}/v1/tenants", json={"name": "denied"}, headers=h(s.admin_key),
                      timeout=10).json()
    secrets.append(t["api_key"])
    viewer = requests.post(f"{s.url}/v1/keys", json={"role": "viewer"},
                           headers=h(t["api_key"]), timeout=10).json()
    secrets.append(viewer["key"])
    r = requests.post(f"{s.url}/v1/keys", json={"role": "viewer"}, headers=h(viewer["key"]),
                      timeout=10)
    assert r.status_code == 403
    r = requests.post(f"{s.url}/v1/tenants", json={"name": "x"}, headers=h(t["api_key"]),
                      timeout=10)
    assert r.status_code == 403
    rows = audit(s, t["api_key"])["entries"]
    denied = [(r["action"], r["actor"], r["outcome"]) for r in rows if r["outcome"] == "denied"]
    assert ("create_key", f"key:{viewer['prefix']}", "denied") in denied
    assert ("create_tenant", f"key:{t['api_key'][:11]}", "denied") in denied


def test_tenant_admins_see_their_own_rows_and_viewers_none(env):
    s, _, secrets = env
    a = requests.post(f"{s.url}/v1/tenants", json={"name": "seer-a"}, headers=h(s.admin_key),
                      timeout=10).json()
    b = requests.post(f"{s.url}/v1/tenants", json={"name": "seer-b"}, headers=h(s.admin_key),
                      timeout=10).json()
    secrets += [a["api_key"], b["api_key"]]
    for t in (a, b):
        kk = requests.post(f"{s.url}/v1/keys", json={"role": "viewer"}, headers=h(t["api_key"]),
                           timeout=10).json()
        secrets.append(kk["key"])
        t["viewer"] = kk["key"]
    # Allowed: the platform admin sees both tenants' rows; each tenant admin its own.
    every = {r["tenant"] for r in audit(s, s.admin_key, limit=500)["entries"]}
    assert {a["id"], b["id"]} <= every
    for t, other in ((a, b), (b, a)):
        rows = audit(s, t["api_key"], limit=500)["entries"]
        assert rows and all(r["tenant"] == t["id"] for r in rows)
        assert other["id"] not in str(rows)
        # Refused: a viewer, and naming the other tenant.
        r = requests.get(f"{s.url}/v1/audit", headers=h(t["viewer"]), timeout=10)
        assert r.status_code == 403, r.text
        r = requests.get(f"{s.url}/v1/audit", params={"tenant": other["id"]},
                         headers=h(t["api_key"]), timeout=10)
        assert r.status_code == 404, r.text


def test_paging_is_bounded_and_complete(env):
    s, _, _ = env
    everything = audit(s, s.admin_key, limit=500)["entries"]
    assert len(everything) >= 5
    pages, before = [], None
    while True:
        params = {"limit": 2}
        if before:
            params["before"] = before
        page = audit(s, s.admin_key, **params)
        assert len(page["entries"]) <= 2
        pages += page["entries"]
        before = page["next"]
        if not before:
            break
    assert [r["id"] for r in pages] == [r["id"] for r in everything]
    for bad in ("0", "501", "-1", "x"):
        r = requests.get(f"{s.url}/v1/audit", params={"limit": bad}, headers=h(s.admin_key),
                         timeout=10)
        assert r.status_code == 400, (bad, r.text)


def test_the_table_is_append_only(env):
    s, _, _ = env
    assert audit(s, s.admin_key)["entries"]
    db = sqlite3.connect(s.data_dir / "meta.db", timeout=10)
    try:
        for sql in ("UPDATE audit_log SET outcome = 'ok'", "DELETE FROM audit_log"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(sql)
        assert db.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] > 0
    finally:
        db.close()


def test_audit_rows_reach_a_subscribed_webhook_signed_and_retried(env):
    """The tenant's audit rows go to a webhook that subscribes to `audit.entry`, with the
    webhooks' signing and retries (the receiver fails the first attempt); a webhook with
    the default events gets none."""
    from test_webhooks import Receiver, verify
    import json as _json
    import threading
    import time

    s, _, secrets = env
    t = requests.post(f"{s.url}/v1/tenants", json={"name": "sink"}, headers=h(s.admin_key),
                      timeout=10).json()
    secrets.append(t["api_key"])
    sink, plain = Receiver(), Receiver()
    plain.fail_first = 0
    for r in (sink, plain):
        threading.Thread(target=r.serve_forever, daemon=True).start()
    try:
        r = requests.post(f"{s.url}/v1/webhooks", headers=h(t["api_key"]), timeout=10, json={
            "url": f"http://127.0.0.1:{sink.server_address[1]}/audit", "events": ["audit.entry"]})
        assert r.status_code == 201, r.text
        secret = r.json()["secret"]
        secrets.append(secret)
        r = requests.post(f"{s.url}/v1/webhooks", headers=h(t["api_key"]), timeout=10, json={
            "url": f"http://127.0.0.1:{plain.server_address[1]}/plain"})
        assert r.status_code == 201, r.text
        assert "audit.entry" not in r.json()["events"]
        k = requests.post(f"{s.url}/v1/keys", json={"role": "viewer"}, headers=h(t["api_key"]),
                          timeout=10).json()
        secrets.append(k["key"])

        def delivered():
            return [b for _, b, st, _ in sink.received if st == 200
                    and _json.loads(b)["data"]["action"] == "create_key"]
        deadline = time.time() + 60
        while not delivered() and time.time() < deadline:
            time.sleep(0.2)
        bodies = delivered()
        assert bodies, sink.received
        headers = [hd for hd, b, st, _ in sink.received if b == bodies[0]][-1]
        verify(secret, headers, bodies[0])
        event = _json.loads(bodies[0])
        assert event["type"] == "audit.entry"
        assert event["data"]["target"] == k["id"] and event["data"]["tenant"] == t["id"]
        assert k["key"] not in bodies[0].decode()
        assert any(st == 500 for _, _, st, _ in sink.received), "the first attempt failed"
        assert plain.received == [], "a webhook with the default events gets no audit rows"
    finally:
        sink.shutdown()
        plain.shutdown()
