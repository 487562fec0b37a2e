#!/usr/bin/python3
"""Push live HLS to an HTTP ingest URL with GStreamer's hlssink2, the way GStreamer users
do it: hlssink2's `get-playlist-stream` / `get-fragment-stream` signals return a
Gio.OutputStream per file, and its `delete-fragment` signal becomes an HTTP DELETE.

Each returned stream is a Gio.UnixOutputStream over a pipe. GStreamer writes into the pipe
from its streaming thread; a Python thread reads the other end and sends the bytes as a
chunked HTTP PUT while they are produced (nothing waits for a whole file). A full pipe
blocks the encoder thread, so a slow server slows the pipeline down instead of growing a
buffer. Playlists are PUT in the order hlssink2 wrote them (one after the other); a
segment's PUT runs beside them, as with any encoder that uploads in the background.

A fragment's PUT ends when hlssink2 reports the fragment closed
(`splitmuxsink-fragment-closed` on the bus: all its bytes are in the pipe) and the pipe is
drained; a playlist's when hlssink2 drops its stream after writing it (the stream's last
reference closes the pipe). After `--duration` seconds the pipeline gets EOS, so hlssink2
writes its final playlist with #EXT-X-ENDLIST. `--late-playlist-copies` re-sends the
previous playlist after each one, as when uploads from several threads overtake each other.

Needs the system's python3-gi and gir1.2-gstreamer-1.0 (run it with /usr/bin/python3).
Exit status: 0 when the pipeline ran to EOS, 1 on a pipeline error or timeout, 2 on bad
arguments; with --fail-on-http-error also 3 when any request got an HTTP error or failed.
A JSON summary is printed on stdout; HTTP errors are reported (and counted) on stderr.
"""

import argparse
import http.client
import json
import os
import select
import sys
import threading
import time
import urllib.parse

import gi

gi.require_version("Gst", "1.0")
gi.require_version("Gio", "2.0")
from gi.repository import Gio, Gst  # noqa: E402

CHUNK = 64 * 1024


def log(msg):
    print(f"hlssink2_push: {msg}", file=sys.stderr, flush=True)


class Uploader:
    """Sends PUTs and DELETEs under the ingest URL and keeps the tally."""

    def __init__(self, ingest_url, timeout, events=None):
        u = urllib.parse.urlsplit(ingest_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"the ingest URL must be http(s)://…, got {ingest_url!r}")
        self.scheme = u.scheme
        self.host = u.hostname
        self.port = u.port
        self.base_path = u.path if u.path.endswith("/") else u.path + "/"
        self.timeout = timeout
        self.lock = threading.Lock()
        self.stats = {"playlists": 0, "segments": 0, "deletes": 0, "bytes": 0, "http_errors": 0}
        self.statuses = {}
        self.threads = []
        self.last_playlist_done = None  # threading.Event of the previous playlist's PUT
        self.events = events  # a text file: one JSON line per finished request
        self.late_copies = False  # after each playlist, PUT the previous version again
        self.previous_playlist = None

    def _conn(self):
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout)

    def _record(self, method, name, status, started, error=None, late_copy=False):
        with self.lock:
            if self.events is not None:
                self.events.write(json.dumps({
                    "method": method, "name": name, "status": status, "late_copy": late_copy,
                    "started": round(started, 3), "done": round(time.time(), 3),
                }) + "\n")
                self.events.flush()
            self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
            if error is not None or status >= 400:
                self.stats["http_errors"] += 1
                n = self.stats["http_errors"]
                log(f"HTTP error #{n}: {method} {name} -> {status if status else ''} {error or ''}".rstrip())

    def _request(self, method, name, body=None, content_type=None, late_copy=False):
        """One request; `body` yields the chunks of a chunked body. Returns bytes sent."""
        sent = 0
        started = time.time()
        conn = self._conn()
        try:
            headers = {}
            if content_type:
                headers["Content-Type"] = content_type
            if body is None:
                conn.request(method, self.base_path + name, headers=headers)
            else:

                def counted():
                    nonlocal sent
                    for data in body:
                        sent += len(data)
                        yield data

                headers["Transfer-Encoding"] = "chunked"
                conn.request(method, self.base_path + name, body=counted(), headers=headers,
                             encode_chunked=True)
            resp = conn.getresponse()
            text = resp.read()
            if resp.status >= 400:
                self._record(method, name, resp.status, started,
                             text.decode(errors="replace")[:300], late_copy)
            else:
                self._record(method, name, resp.status, started, None, late_copy)
        except (OSError, http.client.HTTPException) as e:
            self._record(method, name, 0, started, f"{type(e).__name__}: {e}", late_copy)
            if body is not None:
                # Keep draining the pipe so GStreamer's write never blocks forever.
                for _ in body:
                    pass
        finally:
            conn.close()
        return sent

    def stream(self, name, content_type, ordered, complete=None):
        """A Gio.OutputStream whose bytes become the body of `PUT name`, sent as they are
        written. The body ends when the stream is closed (its last reference dropped), or
        once `complete` is set and the pipe holds nothing more."""
        rfd, wfd = os.pipe()
        prev = None
        done = threading.Event()
        if ordered:
            with self.lock:
                prev, self.last_playlist_done = self.last_playlist_done, done

        def body():
            while True:
                readable, _, _ = select.select([rfd], [], [], 0.05)
                if readable:
                    data = os.read(rfd, CHUNK)
                    if not data:
                        return  # every writer closed
                    yield data
                elif complete is not None and complete.is_set():
                    return  # finished, and nothing left in the pipe

        def run():
            try:
                if prev is not None:
                    prev.wait()
                copy = []

                def kept():
                    for data in body():
                        copy.append(data)
                        yield data

                n = self._request("PUT", name, kept() if ordered else body(), content_type)
                with self.lock:
                    self.stats["playlists" if ordered else "segments"] += 1
                    self.stats["bytes"] += n
                if ordered and self.late_copies:
                    # What a newer upload overtaking an older one looks like to the server.
                    if self.previous_playlist is not None:
                        self._request("PUT", name, iter([self.previous_playlist]), content_type,
                                      late_copy=True)
                        with self.lock:
                            self.stats["late_copies"] = self.stats.get("late_copies", 0) + 1
                    self.previous_playlist = b"".join(copy)
            finally:
                os.close(rfd)
                done.set()

        t = threading.Thread(target=run, name=f"put {name}", daemon=True)
        t.start()
        with self.lock:
            self.threads.append(t)
        return Gio.UnixOutputStream.new(wfd, True)

    def delete(self, name):
        def run():
            self._request("DELETE", name)
            with self.lock:
                self.stats["deletes"] += 1

        t = threading.Thread(target=run, name=f"delete {name}", daemon=True)
        t.start()
        with self.lock:
            self.threads.append(t)

    def join(self, timeout):
        deadline = time.time() + timeout
        with self.lock:
            threads = list(self.threads)
        for t in threads:
            t.join(max(0.0, deadline - time.time()))
        return all(not t.is_alive() for t in threads)


def build_pipeline(args):
    p = Gst.Pipeline.new("push")

    def make(factory, **props):
        e = Gst.ElementFactory.make(factory, None)
        if e is None:
            raise RuntimeError(f"GStreamer element {factory!r} is not installed")
        for k, v in props.items():
            e.set_property(k.replace("_", "-"), v)
        p.add(e)
        return e

    def caps(text):
        return make("capsfilter", caps=Gst.Caps.from_string(text))

    fps = args.fps
    vsrc = make("videotestsrc", is_live=True, pattern="smpte")
    vcaps = caps(f"video/x-raw,format=I420,width={args.width},height={args.height},framerate={fps}/1")
    venc = make("x264enc", tune="zerolatency", speed_preset="ultrafast",
                key_int_max=fps * args.target_duration, bitrate=args.video_kbps)
    vparse = make("h264parse")
    vq = make("queue", max_size_time=3 * Gst.SECOND, max_size_bytes=0, max_size_buffers=0)
    asrc = make("audiotestsrc", is_live=True, wave="sine", freq=440.0)
    acaps = caps("audio/x-raw,rate=48000,channels=2")
    aconv = make("audioconvert")
    aenc = None
    for factory in ("avenc_aac", "voaacenc", "fdkaacenc"):
        if Gst.ElementFactory.find(factory):
            aenc = make(factory, bitrate=96000)
            break
    if aenc is None:
        raise RuntimeError("no AAC encoder (avenc_aac, voaacenc) is installed")
    aparse = make("aacparse")
    aq = make("queue", max_size_time=3 * Gst.SECOND, max_size_bytes=0, max_size_buffers=0)
    sink = make("hlssink2", location=args.segment_pattern, playlist_location=args.playlist,
                target_duration=args.target_duration, max_files=args.max_files,
                playlist_length=args.playlist_length)
    for chain in ((vsrc, vcaps, venc, vparse, vq), (asrc, aconv, acaps, aenc, aparse, aq)):
        for a, b in zip(chain, chain[1:]):
            if not a.link(b):
                raise RuntimeError(f"cannot link {a.get_name()} to {b.get_name()}")
    for q, pad in ((vq, "video"), (aq, "audio")):
        if q.get_static_pad("src").link(sink.request_pad_simple(pad)) != Gst.PadLinkReturn.OK:
            raise RuntimeError(f"cannot link the {pad} branch to hlssink2")
    return p, sink


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ingest_url", help="the stream's ingest URL (ends in /)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds to push before EOS")
    ap.add_argument("--target-duration", type=int, default=2, help="segment seconds (hlssink2)")
    ap.add_argument("--max-files", type=int, default=5,
                    help="hlssink2 max-files: older segments are DELETEd (0: never)")
    ap.add_argument("--playlist-length", type=int, default=4,
                    help="hlssink2 playlist-length (0: keep every segment)")
    ap.add_argument("--playlist", default="index.m3u8", help="playlist name under the URL")
    ap.add_argument("--segment-pattern", default="segment%05d.ts")
    ap.add_argument("--width", type=int, default=426)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--video-kbps", type=int, default=600)
    ap.add_argument("--http-timeout", type=float, default=30.0)
    ap.add_argument("--events", help="append one JSON line per finished request to this file")
    ap.add_argument("--late-playlist-copies", action="store_true",
                    help="after each playlist, PUT the previous version again, as when uploads "
                    "from several threads overtake each other")
    ap.add_argument("--fail-on-http-error", action="store_true",
                    help="exit 3 when any request got an HTTP error status or failed")
    args = ap.parse_args()
    if args.duration <= 0 or args.target_duration <= 0:
        ap.error("--duration and --target-duration must be positive")
    if "/" in args.playlist or "/" in args.segment_pattern:
        ap.error("--playlist and --segment-pattern are names, not paths")

    Gst.init(None)
    try:
        events = open(args.events, "a") if args.events else None
        up = Uploader(args.ingest_url, args.http_timeout, events)
        up.late_copies = args.late_playlist_copies
        pipeline, sink = build_pipeline(args)
    except (ValueError, RuntimeError) as e:
        log(str(e))
        return 2

    # Completion flags of the fragments hlssink2 opened, oldest first. No reference to the
    # streams themselves is kept: hlssink2 owns them and drops them when done.
    open_fragments = []
    frag_lock = threading.Lock()

    def on_playlist(_sink, location):
        return up.stream(os.path.basename(location), "application/vnd.apple.mpegurl", True)

    def on_fragment(_sink, location):
        complete = threading.Event()
        with frag_lock:
            open_fragments.append(complete)
        return up.stream(os.path.basename(location), "video/mp2t", False, complete)

    def on_delete(_sink, location):
        up.delete(os.path.basename(location))

    sink.connect("get-playlist-stream", on_playlist)
    sink.connect("get-fragment-stream", on_fragment)
    sink.connect("delete-fragment", on_delete)

    def complete_oldest_fragment():
        with frag_lock:
            if open_fragments:
                open_fragments.pop(0).set()

    started = time.time()
    bus = pipeline.get_bus()
    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        log("the pipeline cannot start")
        pipeline.set_state(Gst.State.NULL)
        return 1
    failed = None
    eos_sent = False
    wanted = (Gst.MessageType.ERROR | Gst.MessageType.EOS | Gst.MessageType.ELEMENT
              | Gst.MessageType.WARNING)
    hard_deadline = started + args.duration + 30
    while True:
        now = time.time()
        if not eos_sent and now - started >= args.duration:
            pipeline.send_event(Gst.Event.new_eos())
            eos_sent = True
        if now > hard_deadline:
            failed = "no EOS within 30 s of sending it"
            break
        msg = bus.timed_pop_filtered(100 * Gst.MSECOND, wanted)
        if msg is None:
            continue
        if msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            failed = f"{msg.src.get_name()}: {err.message} ({dbg})"
            break
        if msg.type == Gst.MessageType.WARNING:
            w, _ = msg.parse_warning()
            log(f"warning from {msg.src.get_name()}: {w.message}")
        elif msg.type == Gst.MessageType.ELEMENT:
            # hlssink2 forwards splitmuxsink's messages: this fragment's bytes are all
            # written (its sink saw EOS), so its PUT can end now.
            s = msg.get_structure()
            if s is not None and s.get_name() == "splitmuxsink-fragment-closed":
                complete_oldest_fragment()
        elif msg.type == Gst.MessageType.EOS:
            break
    pipeline.set_state(Gst.State.NULL)
    # Whatever is still open ends its PUT now (after an error: a truncated fragment).
    with frag_lock:
        for complete in open_fragments:
            complete.set()
        open_fragments.clear()
    del pipeline, sink
    if not up.join(args.http_timeout + 10):
        log("some requests did not finish in time")
        failed = failed or "requests did not finish"
    summary = dict(up.stats, statuses=up.statuses, seconds=round(time.time() - started, 2))
    print(json.dumps(summary), flush=True)
    log(f"{summary['segments']} segments, {summary['playlists']} playlists, "
        f"{summary['deletes']} deletes, {summary['http_errors']} HTTP errors")
    if failed:
        log(f"pipeline error: {failed}")
        return 1
    if args.fail_on_http_error and up.stats["http_errors"]:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
