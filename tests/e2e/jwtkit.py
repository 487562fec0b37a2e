"""JWT test kit: signing keys made with `cryptography`, tokens assembled by hand (so the
tests can also build the tokens a correct library refuses to make: `alg: none`, HS256
keyed with a public key, a kid naming another key's algorithm), and a real JWKS server
(http.server in a thread) whose key set, caching headers and availability tests change
while Sluice runs, counting the fetches it serves."""

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "https://id.sluice.test/"
AUDIENCE = "sluice"


def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _int(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return b64(n.to_bytes(size, "big"))


class Key:
    """A signing key: RS256, ES256 or EdDSA."""

    def __init__(self, alg, kid):
        self.alg, self.kid = alg, kid
        if alg == "RS256":
            self.priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "ES256":
            self.priv = ec.generate_private_key(ec.SECP256R1())
        elif alg == "EdDSA":
            self.priv = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(alg)

    def jwk(self):
        pub = self.priv.public_key()
        if self.alg == "RS256":
            n = pub.public_numbers()
            return {"kty": "RSA", "kid": self.kid, "alg": "RS256", "use": "sig",
                    "n": _int(n.n), "e": _int(n.e)}
        if self.alg == "ES256":
            n = pub.public_numbers()
            return {"kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256",
                    "x": _int(n.x, 32), "y": _int(n.y, 32)}
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "alg": "EdDSA", "x": b64(raw)}

    def public_pem(self):
        return self.priv.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, msg):
        if self.alg == "RS256":
            return self.priv.sign(msg, padding.PKCS1v15(), hashes.SHA256())
        if self.alg == "ES256":
            r, s = decode_dss_signature(self.priv.sign(msg, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return self.priv.sign(msg)

    def token(self, claims, **header):
        h = {"alg": self.alg, "typ": "JWT", "kid": self.kid}
        h.update(header)
        signing_input = b64(json.dumps(h).encode()) + "." + b64(json.dumps(claims).encode())
        return signing_input + "." + b64(self.sign(signing_input.encode()))


def hs256_token(secret, claims, kid):
    """An HS256 token keyed with `secret` (the attack: a public key used as the secret)."""
    h = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing_input = b64(json.dumps(h).encode()) + "." + b64(json.dumps(claims).encode())
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(sig)


def none_token(claims, kid):
    h = {"alg": "none", "typ": "JWT", "kid": kid}
    return b64(json.dumps(h).encode()) + "." + b64(json.dumps(claims).encode()) + "."


def claims(role, tenant=None, **over):
    now = int(time.time())
    c = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-" + role, "iat": now, "exp": now + 300,
         "role": role}
    if tenant is not None:
        c["tenant"] = tenant
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


class JwksServer:
    """A real HTTP server for the key set. `keys`, `cache_control` and `down` may be
    changed at any time; `fetches` counts the key-set requests answered."""

    def __init__(self, keys=()):
        self.keys = list(keys)
        self.cache_control = None
        self.down = False
        self.fetches = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with outer.lock:
                    outer.fetches += 1
                    down, keys, cc = outer.down, list(outer.keys), outer.cache_control
                if down:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"keys": [k.jwk() for k in keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if cc:
                    self.send_header("Cache-Control", cc)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def jwt_config(jwks_url, **over):
    """An `[auth.jwt]` section with short times for tests."""
    opts = {"leeway_s": 5, "removed_key_grace_s": 3, "refresh_min_interval_s": 1,
            "min_cache_s": 1, "default_cache_s": 2, "max_cache_s": 60, "fetch_timeout_s": 2}
    opts.update(over)
    lines = ["[auth.jwt]", f'issuer = "{ISSUER}"', f'audience = "{AUDIENCE}"',
             f'jwks_url = "{jwks_url}"']
    lines += [f"{k} = {v}" for k, v in opts.items()]
    return "\n".join(lines) + "\n"


def assert_not_logged(logs, secrets):
    """No token, key or signature used by a test appears in the logs."""
    for s in secrets:
        assert s, "an empty secret proves nothing"
        parts = [s] + (s.split(".") if s.count(".") == 2 else [])
        for p in parts:
            if len(p) >= 16:
                assert p not in logs, f"a secret ({p[:6]}…) appears in the logs"
