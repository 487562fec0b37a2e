"""A minimal S3 client for test invariants (no SDK in the test venv): AWS Signature V4
signed GETs for ListObjectsV2 and ListMultipartUploads, answers parsed from the XML."""

import datetime
import hashlib
import hmac
import urllib.parse
import xml.etree.ElementTree as ET

import requests

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def _sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _get(s3, query):
    """Signed GET on the bucket (path style) with `query` (dict); returns the XML root."""
    endpoint = s3["ENDPOINT"].rstrip("/")
    host = urllib.parse.urlparse(endpoint).netloc
    path = f"/{s3['BUCKET']}"
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    qs = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(str(v), safe='-_.~')}"
        for k, v in sorted(query.items())
    )
    payload = hashlib.sha256(b"").hexdigest()
    headers = f"host:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n"
    signed = "host;x-amz-content-sha256;x-amz-date"
    canonical = f"GET\n{path}\n{qs}\n{headers}\n{signed}\n{payload}"
    scope = f"{day}/{s3['REGION']}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    k = _sign(("AWS4" + s3["SECRET_ACCESS_KEY"]).encode(), day)
    k = _sign(k, s3["REGION"])
    k = _sign(k, "s3")
    k = _sign(k, "aws4_request")
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    auth = (
        f"AWS4-HMAC-SHA256 Credential={s3['ACCESS_KEY_ID']}/{scope}, "
        f"SignedHeaders={signed}, Signature={sig}"
    )
    r = requests.get(
        f"{endpoint}{path}?{qs}",
        headers={"x-amz-date": amz_date, "x-amz-content-sha256": payload, "Authorization": auth},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return ET.fromstring(r.content)


def list_objects(s3, prefix):
    """{key: size} of every object under `prefix`."""
    out, token = {}, None
    while True:
        q = {"list-type": "2", "prefix": prefix}
        if token:
            q["continuation-token"] = token
        root = _get(s3, q)
        for c in root.findall(f"{NS}Contents"):
            out[c.find(f"{NS}Key").text] = int(c.find(f"{NS}Size").text)
        if root.findtext(f"{NS}IsTruncated") != "true":
            return out
        token = root.findtext(f"{NS}NextContinuationToken")


def list_multipart_uploads(s3, prefix):
    """(key, upload id) of every multipart upload open under `prefix`."""
    root = _get(s3, {"uploads": "", "prefix": prefix})
    return [
        (u.findtext(f"{NS}Key"), u.findtext(f"{NS}UploadId")) for u in root.findall(f"{NS}Upload")
    ]
