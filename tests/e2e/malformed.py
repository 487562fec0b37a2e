"""Seeded generator of malformed HTTP/1.x requests, sent over raw sockets (so broken framing
is possible), for the security suite. `requests_for(seed, n, ctx)` yields byte strings;
`send(port, raw, deadline)` answers (status or None for a clean close, elapsed) or raises
on a hang."""

import random
import re
import socket
import time

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
           "FOO", "get", "G ET", "", "PRI", "GET\x00", "P" * 300]
VERSIONS = ["HTTP/1.1"] * 8 + ["HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "HTTP/1.1 extra", "", "http/1.1"]
# Payloads for one path segment: traversal, encoded slashes and dots, NUL, overlong UTF-8,
# very long, empty, odd characters.
SEGMENTS = ["..", ".", "%2e%2e", "%2E%2E", "%2e%2e%2f", "..%2f..%2f..", "%2f", "%5c..%5c",
            "..\\..", "a%00b", "%00", "%c0%ae%c0%ae", "%c0%af", "%e0%80%ae", "%252e%252e",
            "x" * 4000, "", "*", "%", "%zz", "~", ";", "a;b=c", "@", "..;", "%ff%fe",
            "\u00e9", "%0d%0aX-Injected:%201", "01HZZZZZZZZZZZZZZZZZZZZZZZ", "master.m3u8",
            "seg_00000.ts", "index.m3u8", "0" * 26]
RANGES = ["bytes=0-10", "bytes=-5", "bytes=5-", "bytes=99999999999999999999-",
          "bytes=10-5", "bytes=0-1,2-3,4-5", "bytes=", "items=0-1", "bytes=-0",
          "bytes=18446744073709551615-18446744073709551616", "bytes=0-0," * 200, "x"]
TUS = {
    "Tus-Resumable": ["1.0.0", "0.2.2", "", "1.0.0, 1.0.0", "x" * 300],
    "Upload-Length": ["0", "1", "100", "-1", "99999999999999999999999", "1e3", "", " 5"],
    "Upload-Offset": ["0", "1", "-1", "18446744073709551616", "abc", ""],
    "Upload-Metadata": ["filename aGVsbG8=", "filename", "filename !!!", ",,,", "a b c d",
                        "filename " + "A" * 5000, "k\x01 dg=="],
    "Upload-Concat": ["partial", "final;/v1/uploads/x /v1/uploads/y", "final;", "final;http://evil/"],
    "Upload-Defer-Length": ["1", "0", "2", "yes"],
    "Upload-Checksum": ["sha1 2jmj7l5rSw0yVb/vlWAYkK/YBwk=", "md5 x", "sha1", "crc32 !!"],
    "Content-Type": ["application/offset+octet-stream", "video/mp4", "application/json",
                     "text/html", "", "multipart/form-data; boundary=x"],
}
OTHER_HEADERS = ["If-None-Match", "If-Modified-Since", "Accept-Encoding", "Origin",
                 "Access-Control-Request-Method", "X-Forwarded-For", "Idempotency-Key",
                 "X-Original-URI", "Expect", "Connection", "Cookie"]
JUNK_VALUES = ["*", "", "gzip, br, deflate", "\"abc\"", "W/\"x\"", "Thu, 01 Jan 1970 00:00:00 GMT",
               "1.2.3.4, 5.6.7.8", "100-continue", "close", "keep-alive", "x" * 2000, "é",
               "/v1/play/a/b/c/master.m3u8"]
BODIES = [b"", b"{}", b"{\"name\": 5}", b"[]", b"null", b"{\"ttl_s\": -1}",
          b"{\"ttl_s\": 99999999999999999999}", b"{\"name\": \"" + b"a" * 3000 + b"\"}",
          b"\x00" * 100, b"#EXTM3U\n#EXT-X-TARGETDURATION:99999999999\n#EXTINF:-1,\nx.ts\n",
          b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:18446744073709551616\n", b"\xff\xfe\xfd" * 50]


def mutate_path(rng, path):
    segs = path.split("/")
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(1, len(segs)) if len(segs) > 1 else 0
        choice = rng.random()
        if choice < 0.6:
            segs[i] = rng.choice(SEGMENTS)
        elif choice < 0.8:
            segs.insert(i, rng.choice(SEGMENTS))
        elif i < len(segs) and segs[i]:
            segs[i] = segs[i][: rng.randrange(len(segs[i]) + 1)]
    p = "/".join(segs)
    r = rng.random()
    if r < 0.1:
        p += "?" + rng.choice(["a=%zz", "token=x&token=y", "%00", "x" * 3000, "="])
    elif r < 0.15:
        p = p.replace("/", "//", 1)
    elif r < 0.18:
        p = "http://evil.example" + p
    elif r < 0.2:
        p = p + "#frag"
    return p


def one(rng, ctx):
    """One request: bytes on the wire."""
    # Mostly well-framed, so most requests reach the router and the handlers.
    method = rng.choice(METHODS[:7]) if rng.random() < 0.85 else rng.choice(METHODS)
    path = rng.choice(ctx["paths"])
    if rng.random() < 0.85:
        path = mutate_path(rng, path)
    version = "HTTP/1.1" if rng.random() < 0.85 else rng.choice(VERSIONS)
    headers = []
    if rng.random() < 0.95:
        good = f"127.0.0.1:{ctx['port']}"
        headers.append(("Host", good if rng.random() < 0.85 else rng.choice(["", "x" * 300, "a b", "[::1"])))
    if rng.random() < 0.7:
        headers.append(("Authorization", rng.choice(
            [f"Bearer {ctx['key']}", f"Bearer {ctx['other_key']}", "Bearer ", "Bearer x",
             "Basic YTpi", "Bearer " + "x" * 5000, f"bearer {ctx['key']}x", "Bearer \x7f"])))
    for name in rng.sample(list(TUS), rng.randint(0, 4)):
        headers.append((name, rng.choice(TUS[name])))
    if rng.random() < 0.3:
        headers.append(("Range", rng.choice(RANGES)))
    for name in rng.sample(OTHER_HEADERS, rng.randint(0, 2)):
        headers.append((name, rng.choice(JUNK_VALUES)))
    body = rng.choice(BODIES) if rng.random() < 0.6 else rng.randbytes(rng.randint(0, 3000))
    framing = rng.random()
    if framing < 0.55:
        headers.append(("Content-Length", str(len(body))))
    elif framing < 0.65:
        headers.append(("Content-Length", rng.choice(
            ["-1", "abc", str(len(body) + 100), "99999999999999999999", f"{len(body)}, 0", ""])))
    elif framing < 0.8:
        headers.append(("Transfer-Encoding", rng.choice(["chunked", "gzip, chunked", "chunked, x", "identity"])))
        if rng.random() < 0.6:
            body = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
        else:
            body = rng.choice([b"zz\r\nabc\r\n", b"5\r\nab", b"FFFFFFFFFFFFFFFFFF\r\n", b"0\r\n"]) + body[:50]
    elif framing < 0.85:
        headers.append(("Content-Length", str(len(body))))
        headers.append(("Content-Length", str(len(body) + 1)))
    elif framing < 0.9:
        headers.append(("Content-Length", str(len(body))))
        headers.append(("Transfer-Encoding", "chunked"))
    if rng.random() < 0.05:
        headers.append(("X-Bad", "a\r\n folded"))
    if rng.random() < 0.03:
        headers.append(("No Colon Header", None))
    if rng.random() < 0.02:
        headers.append(("X-Huge", "h" * 70000))
    lines = [f"{method} {path} {version}".rstrip()]
    for k, v in headers:
        lines.append(k if v is None else f"{k}: {v}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
    if rng.random() < 0.03:
        head = head[: rng.randrange(len(head))]  # a head cut short
    return head + body


def requests_for(seed, n, ctx):
    rng = random.Random(seed)
    for _ in range(n):
        yield one(rng, ctx)


def send(port, raw, deadline_s):
    """Send one request and half-close; read until the server closes. Returns (the status
    of every answer on the connection, empty for a close without one; seconds taken).
    Raises TimeoutError on a hang."""
    started = time.time()
    with socket.create_connection(("127.0.0.1", port), timeout=deadline_s) as s:
        try:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server refused early (a 431 or 400 mid-send) and closed
        got = b""
        while True:
            remaining = deadline_s - (time.time() - started)
            if remaining <= 0:
                raise TimeoutError(f"no answer or close within {deadline_s} s")
            s.settimeout(remaining)
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout as e:
                raise TimeoutError(f"no answer or close within {deadline_s} s") from e
            if not chunk:
                break
            got += chunk
            if len(got) > 1 << 20:
                break
    if got and not got.startswith(b"HTTP/"):
        raise AssertionError(f"not an HTTP answer: {got[:200]!r}")
    statuses = [int(m) for m in re.findall(rb"(?:^|\r\n)HTTP/\d\.\d (\d{3})", got)]
    return statuses, time.time() - started
