"""Roles and tenant-scoped keys, black-box: each case first shows the allowed path works,
then the refused one. A viewer key cannot upload, an uploader (device) key cannot read,
the ops role cannot create tenants, a tenant admin creates keys up to its own role only,
tenant A's keys cannot touch tenant B's things (404, nothing of B in the answer), a revoked
key is refused at once, on a second gateway on PostgreSQL too; no key appears in the logs."""

import os
import subprocess
import uuid

import pytest
import requests

from conftest import Sluice
from jwtkit import JwksServer, Key, assert_not_logged, claims, jwt_config


def h(key):
    return {"Authorization": f"Bearer {key}"}


def tus_create(url, key, length=100):
    return requests.post(
        f"{url}/v1/uploads",
        headers={**h(key), "Tus-Resumable": "1.0.0", "Upload-Length": str(length)},
        timeout=10,
    )


def new_key(url, key, role, **extra):
    r = requests.post(f"{url}/v1/keys", json={"role": role, **extra}, headers=h(key), timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture(scope="module")
def env(workdir):
    signer = Key("EdDSA", "ops-key")
    jwks = JwksServer([signer])
    s = Sluice(workdir / "data", config_text=jwt_config(jwks.url))
    secrets = [s.admin_key]
    yield s, signer, secrets
    s.stop()
    jwks.stop()
    # Every key and token these tests used stays out of the logs.
    assert_not_logged(s.log_path.read_text(errors="replace"), secrets)


def test_keys_per_role_listed_without_secrets(env):
    s, _, secrets = env
    t = s.tenant("roles-keys")
    secrets.append(t["api_key"])
    v = new_key(s.url, t["api_key"], "viewer", name="dashboard")
    secrets.append(v["key"])
    assert v["role"] == "viewer" and v["tenant"] == t["id"] and v["name"] == "dashboard"
    assert v["key"].startswith("sk_") and v["key"].startswith(v["prefix"])
    assert len(v["prefix"]) == 11
    # Use it, then the listing shows its prefix and last use, and never a secret.
    assert requests.get(f"{s.url}/v1/jobs", headers=h(v["key"]), timeout=10).status_code == 200
    r = requests.get(f"{s.url}/v1/keys", headers=h(t["api_key"]), timeout=10)
    assert r.status_code == 200, r.text
    keys = {k["id"]: k for k in r.json()["keys"]}
    assert keys[v["id"]]["prefix"] == v["prefix"]
    assert keys[v["id"]]["last_used_at"] is not None
    roles = sorted(k["role"] for k in keys.values())
    assert roles == ["tenant_admin", "viewer"], roles
    assert v["key"] not in r.text and t["api_key"] not in r.text
    assert "hash" not in r.text


def test_viewer_key_cannot_upload(env):
    s, _, secrets = env
    t = s.tenant("roles-viewer")
    secrets.append(t["api_key"])
    viewer = new_key(s.url, t["api_key"], "viewer")["key"]
    secrets.append(viewer)
    # Allowed: the tenant key uploads, the viewer reads what was uploaded.
    r = tus_create(s.url, t["api_key"])
    assert r.status_code == 201, r.text
    asset_id = r.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    r = requests.get(f"{s.url}/v1/assets/{asset_id}", headers=h(viewer), timeout=10)
    assert r.status_code == 200, r.text
    # Refused: the viewer uploading, either way, and managing keys or devices.
    r = tus_create(s.url, viewer)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "forbidden"
    r = requests.post(f"{s.url}/v1/assets", data=b"\0" * 64,
                      headers={**h(viewer), "Content-Type": "video/mp4"}, timeout=10)
    assert r.status_code == 403, r.text
    r = requests.post(f"{s.url}/v1/keys", json={"role": "viewer"}, headers=h(viewer), timeout=10)
    assert r.status_code == 403, r.text
    r = requests.post(f"{s.url}/v1/devices", json={"name": "cam"}, headers=h(viewer), timeout=10)
    assert r.status_code == 403, r.text


def test_uploader_and_device_keys_cannot_read(env):
    s, _, secrets = env
    t = s.tenant("roles-uploader")
    secrets.append(t["api_key"])
    uploader = new_key(s.url, t["api_key"], "uploader")["key"]
    r = requests.post(f"{s.url}/v1/devices", json={"name": "cam"}, headers=h(t["api_key"]),
                      timeout=10)
    assert r.status_code == 201, r.text
    device = r.json()["key"]
    secrets += [uploader, device]
    for key in (uploader, device):
        # Allowed: uploading.
        r = tus_create(s.url, key)
        assert r.status_code == 201, r.text
        asset_id = r.headers["Location"].rstrip("/").rsplit("/", 1)[1]
        # Allowed for the tenant key, refused for the upload-only key: reading it.
        assert requests.get(f"{s.url}/v1/assets/{asset_id}", headers=h(t["api_key"]),
                            timeout=10).status_code == 200
        for path in (f"/v1/assets/{asset_id}", f"/v1/assets/{asset_id}/source", "/v1/jobs",
                     "/v1/keys", "/metrics"):
            r = requests.get(f"{s.url}{path}", headers=h(key), timeout=10)
            assert r.status_code == 403, (path, r.text)
            assert r.json()["error"]["code"] == "device_not_allowed"


def test_ops_role_cannot_create_tenants(env):
    s, signer, secrets = env
    ops = signer.token(claims("ops"))
    admin = signer.token(claims("platform_admin"))
    secrets += [ops, admin]
    # Allowed: a platform-admin token creates a tenant; the ops token does ops things.
    r = requests.post(f"{s.url}/v1/tenants", json={"name": "by-jwt"}, headers=h(admin),
                      timeout=10)
    assert r.status_code == 201, r.text
    secrets.append(r.json()["api_key"])
    r = requests.get(f"{s.url}/v1/edge/admin", headers=h(ops), timeout=10)
    assert r.status_code == 204, r.text
    # Refused: ops creating a tenant, reading a tenant's things, making keys.
    r = requests.post(f"{s.url}/v1/tenants", json={"name": "by-ops"}, headers=h(ops),
                      timeout=10)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "forbidden"
    for path in ("/v1/jobs", "/v1/keys", "/v1/audit", "/v1/admin/jwks"):
        assert requests.get(f"{s.url}{path}", headers=h(ops), timeout=10).status_code == 403


def test_ops_keys_from_the_platform_admin_only(env):
    s, _, secrets = env
    t = s.tenant("roles-ops-key")
    secrets.append(t["api_key"])
    # Allowed: the platform admin makes an ops key (no tenant); it does ops things.
    ops = new_key(s.url, s.admin_key, "ops", name="on-call")
    secrets.append(ops["key"])
    assert ops["tenant"] is None and ops["role"] == "ops"
    r = requests.get(f"{s.url}/v1/edge/admin", headers=h(ops["key"]), timeout=10)
    assert r.status_code == 204, r.text
    listed = requests.get(f"{s.url}/v1/keys", headers=h(s.admin_key), timeout=10).json()["keys"]
    assert [k["role"] for k in listed if k["id"] == ops["id"]] == ["ops"]
    assert all(k["tenant"] is None for k in listed)
    # Refused: ops creating tenants or keys, reading a tenant's things; a tenant admin or a
    # tenant-scoped ops key; then the revoked key.
    r = requests.post(f"{s.url}/v1/tenants", json={"name": "x"}, headers=h(ops["key"]), timeout=10)
    assert r.status_code == 403, r.text
    for path in ("/v1/jobs", "/v1/keys", "/v1/audit"):
        assert requests.get(f"{s.url}{path}", headers=h(ops["key"]), timeout=10).status_code == 403
    r = requests.post(f"{s.url}/v1/keys", json={"role": "ops"}, headers=h(t["api_key"]), timeout=10)
    assert r.status_code == 403, r.text
    r = requests.post(f"{s.url}/v1/keys", json={"role": "ops", "tenant": t["id"]},
                      headers=h(s.admin_key), timeout=10)
    assert r.status_code == 400, r.text
    r = requests.post(f"{s.url}/v1/keys", json={"role": "platform_admin"}, headers=h(s.admin_key),
                      timeout=10)
    assert r.status_code == 403, r.text
    assert requests.delete(f"{s.url}/v1/keys/{ops['id']}", headers=h(s.admin_key),
                           timeout=10).status_code == 204
    r = requests.get(f"{s.url}/v1/edge/admin", headers=h(ops["key"]), timeout=10)
    assert r.status_code == 401, r.text


def test_tenant_admin_grants_up_to_its_own_role(env):
    s, _, secrets = env
    t = s.tenant("roles-grant")
    secrets.append(t["api_key"])
    for role in ("tenant_admin", "uploader", "viewer"):
        secrets.append(new_key(s.url, t["api_key"], role)["key"])
    for role in ("ops", "platform_admin", "root"):
        r = requests.post(f"{s.url}/v1/keys", json={"role": role}, headers=h(t["api_key"]),
                          timeout=10)
        assert r.status_code in (400, 403), (role, r.text)
    # The platform admin names the tenant; without one it is asked for.
    k = new_key(s.url, s.admin_key, "viewer", tenant=t["id"])
    secrets.append(k["key"])
    assert k["tenant"] == t["id"]
    r = requests.post(f"{s.url}/v1/keys", json={"role": "viewer"}, headers=h(s.admin_key),
                      timeout=10)
    assert r.status_code == 400, r.text


def test_tenants_cannot_touch_each_others_things(env):
    s, _, secrets = env
    a, b = s.tenant("iso-a"), s.tenant("iso-b")
    secrets += [a["api_key"], b["api_key"]]
    b_viewer = new_key(s.url, b["api_key"], "viewer")
    secrets.append(b_viewer["key"])
    r = tus_create(s.url, b["api_key"])
    b_asset = r.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    # Allowed: B reaches its own things.
    assert requests.get(f"{s.url}/v1/assets/{b_asset}", headers=h(b["api_key"]),
                        timeout=10).status_code == 200
    assert requests.get(f"{s.url}/v1/assets/{b_asset}", headers=h(b_viewer["key"]),
                        timeout=10).status_code == 200
    # Refused: A's keys of every role on B's asset, keys and audit log: 404, nothing of B.
    a_viewer = new_key(s.url, a["api_key"], "viewer")["key"]
    secrets.append(a_viewer)
    attempts = [
        ("GET", f"/v1/assets/{b_asset}", None, a["api_key"]),
        ("GET", f"/v1/assets/{b_asset}", None, a_viewer),
        ("GET", f"/v1/assets/{b_asset}/source", None, a["api_key"]),
        ("POST", f"/v1/assets/{b_asset}/playback", {}, a_viewer),
        ("DELETE", f"/v1/keys/{b_viewer['id']}", None, a["api_key"]),
        ("DELETE", f"/v1/keys/{b_viewer['id']}?tenant={b['id']}", None, a["api_key"]),
        ("GET", f"/v1/keys?tenant={b['id']}", None, a["api_key"]),
        ("POST", "/v1/keys", {"role": "viewer", "tenant": b["id"]}, a["api_key"]),
        ("GET", f"/v1/audit?tenant={b['id']}", None, a["api_key"]),
    ]
    for method, path, body, key in attempts:
        r = requests.request(method, f"{s.url}{path}", json=body, headers=h(key), timeout=10)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert r.json()["error"]["code"] == "not_found"
        assert "iso-b" not in r.text and b_viewer["prefix"] not in r.text
    # B's key survived A's attempts to revoke it.
    assert requests.get(f"{s.url}/v1/assets/{b_asset}", headers=h(b_viewer["key"]),
                        timeout=10).status_code == 200


def test_revoked_key_is_refused_at_once(env):
    s, _, secrets = env
    t = s.tenant("roles-revoke")
    secrets.append(t["api_key"])
    k = new_key(s.url, t["api_key"], "viewer")
    secrets.append(k["key"])
    assert requests.get(f"{s.url}/v1/jobs", headers=h(k["key"]), timeout=10).status_code == 200
    r = requests.delete(f"{s.url}/v1/keys/{k['id']}", headers=h(t["api_key"]), timeout=10)
    assert r.status_code == 204, r.text
    r = requests.get(f"{s.url}/v1/jobs", headers=h(k["key"]), timeout=10)
    assert r.status_code == 401, r.text
    listed = requests.get(f"{s.url}/v1/keys", headers=h(t["api_key"]), timeout=10).json()
    assert [x["revoked_at"] for x in listed["keys"] if x["id"] == k["id"]] != [None]


def pg_database():
    admin = os.environ.get("SLUICE_TEST_PG_URL")
    assert admin, "SLUICE_TEST_PG_URL must point at PostgreSQL (scripts/test.sh starts one)"
    name = "e2e_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True, timeout=30)
    return admin.rsplit("/", 1)[0] + "/" + name


def test_revoked_key_refused_at_once_on_another_gateway_on_postgres(workdir):
    url = pg_database()
    shared = workdir / "pg-shared"
    cfg = (f'database_url = "{url}"\n'
           f'[storage]\nhot_dir = "{shared / "hot"}"\nuploads_dir = "{shared / "uploads"}"\n')
    admin = "sk_admin_roles_pg_test_key_0123456789"
    env = {"SLUICE_ADMIN_KEY": admin}
    one = Sluice(workdir / "pg1", config_text=cfg, env=env)
    two = Sluice(workdir / "pg2", config_text=cfg, env=env)
    secrets = [admin]
    try:
        t = one.tenant("pg-revoke")
        k = new_key(one.url, t["api_key"], "viewer")
        secrets += [t["api_key"], k["key"]]
        # Allowed: the key made on one gateway works on the other, repeatedly.
        for _ in range(3):
            r = requests.get(f"{two.url}/v1/jobs", headers=h(k["key"]), timeout=10)
            assert r.status_code == 200, r.text
        # Revoked on the first gateway: refused by the second on the very next request.
        r = requests.delete(f"{one.url}/v1/keys/{k['id']}", headers=h(t["api_key"]), timeout=10)
        assert r.status_code == 204, r.text
        r = requests.get(f"{two.url}/v1/jobs", headers=h(k["key"]), timeout=10)
        assert r.status_code == 401, r.text
        assert requests.get(f"{two.url}/v1/jobs", headers=h(t["api_key"]),
                            timeout=10).status_code == 200
    finally:
        one.stop()
        two.stop()
    for s in (one, two):
        assert_not_logged(s.log_path.read_text(errors="replace"), secrets)
