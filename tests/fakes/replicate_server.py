"""A local fake of Replicate's HTTP API, good enough for the official `replicate` client.

Speaks the endpoints the renderer uses: POST /v1/models/{owner}/{name}/predictions,
POST /v1/predictions (with "version"), GET /v1/predictions/{id}, POST /v1/files (multipart uploads);
honours `Prefer: wait`; serves the generated PNGs and clips from /files/. A prediction whose input has
an `image` (an uploaded file's URL) is image-to-video: it answers an MP4 clip of that image with a white
bar sweeping left to right (CLIP_SECONDS at CLIP_RATE), a clock tests can read in the rendered video.
Misbehaves on purpose, like the real service sometimes does:

- the first prediction create of the server's life gets 429 with Retry-After (configurable);
- a model whose name contains "fail" ends in status "failed" with an error message;
- a model whose name contains "datauri" returns its image as a data: URI instead of a URL;
- an image-to-video model whose name contains "badclip" answers with the image instead of a video;
- requests without the expected bearer token get 401.

Images are small PNGs whose colours derive from (prompt, seed), so different prompts give
visibly different images (cuts are detectable in the rendered video).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import json
import re
import struct
import subprocess
import tempfile
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

TOKEN = "r8_fake_token"
IMAGE_SIZE = {"16:9": (192, 108), "9:16": (108, 192), "1:1": (144, 144)}


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an (h, w, 3) uint8 array as PNG with only the standard library."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def make_image(prompt: str, seed: int, aspect: str) -> bytes:
    """A gradient with a disc, coloured by a hash of (prompt, seed)."""
    w, h = IMAGE_SIZE.get(aspect, (192, 108))
    digest = hashlib.sha256(f"{prompt}|{seed}".encode()).digest()
    c1 = np.frombuffer(digest[:3], dtype=np.uint8).astype(np.float32)
    c2 = np.frombuffer(digest[3:6], dtype=np.uint8).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx / w)[..., None]
    img = c1 * (1 - t) + c2 * t
    cx, cy, r = w * (0.3 + 0.4 * digest[6] / 255), h * (0.3 + 0.4 * digest[7] / 255), h * 0.25
    disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
    img[disc] = 255 - img[disc]
    return png_bytes(np.clip(img, 0, 255).astype(np.uint8))


CLIP_SECONDS = 2.0
CLIP_RATE = 16
CLIP_BAR = 6  # the sweeping bar's width, pixels of the clip


def make_clip(image: bytes) -> bytes:
    """An MP4 of `image` (any format ffmpeg reads) with a white bar sweeping from the left edge (first frame)
    to the right edge (last frame)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = f"{tmp}/in.img"
        with open(src, "wb") as f:
            f.write(image)
        w, h = 192, 108
        rgb = subprocess.run(["ffmpeg", "-v", "error", "-i", src, "-frames:v", "1", "-vf", f"scale={w}:{h}",
                              "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
        base = np.frombuffer(rgb, dtype=np.uint8).reshape(h, w, 3)
        n = round(CLIP_SECONDS * CLIP_RATE)
        frames = []
        for k in range(n):
            frame = base.copy()
            x = round(k / (n - 1) * (w - CLIP_BAR))
            frame[:, x:x + CLIP_BAR] = 255
            frames.append(frame.tobytes())
        out = f"{tmp}/clip.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                        "-r", str(CLIP_RATE), "-i", "-", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0",
                        "-pix_fmt", "yuv444p", "-movflags", "+faststart", out],
                       input=b"".join(frames), check=True)  # fmt: skip
        with open(out, "rb") as f:
            return f.read()


HUGE_OUTPUT_BYTES = 1024**3  # a "huge" model's output, if read to the end


@dataclass
class Stats:
    """What the server saw, for assertions."""

    creates: int = 0  # successful creates
    throttled: int = 0  # 429s served
    prefer_wait: int = 0  # creates that carried Prefer: wait
    polls: int = 0
    cancels: int = 0  # POST /v1/predictions/{id}/cancel on an unfinished prediction
    huge_bytes_sent: int = 0  # of a "huge" model's output, before the client hung up
    unauthorized: int = 0
    files_served: int = 0
    uploads: int = 0  # POST /v1/files
    clips: int = 0  # image-to-video predictions answered
    clip_images: list[str] = field(default_factory=list)  # the `image` URL of each
    create_times: list[float] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)


class FakeReplicate:
    """Run with `with FakeReplicate() as fake:`; then fake.url, fake.token, fake.stats."""

    def __init__(self, throttle_first: int = 1, retry_after: str = "1", token: str = TOKEN) -> None:
        self.token = token
        self.throttle_left = throttle_first
        self.retry_after = retry_after
        self.stats = Stats()
        self.predictions: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeReplicate:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---------------------------------------------------------------- behaviour

    def _create(
        self, model: str, version: str, body: dict[str, Any], wait: bool
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self.lock:
            if self.throttle_left > 0:
                self.throttle_left -= 1
                self.stats.throttled += 1
                return (
                    429,
                    {"title": "Too Many Requests", "detail": "Request was throttled.", "status": 429},
                    {"Retry-After": self.retry_after},
                )
            self.stats.creates += 1
            self.stats.prefer_wait += int(wait)
            self.stats.create_times.append(time.monotonic())
            self.stats.inputs.append(dict(body.get("input") or {}))
            pid = uuid.uuid4().hex[:12]
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            pred: dict[str, Any] = {
                "id": pid, "model": model, "version": version or "fakeversion", "status": "starting",
                "input": body.get("input") or {}, "output": None, "logs": "", "error": None,
                "metrics": {}, "created_at": now, "started_at": None, "completed_at": None,
                "urls": {"get": f"{self.url}/v1/predictions/{pid}", "cancel": f"{self.url}/v1/predictions/{pid}/cancel"},
                "_polls_left": 0 if wait else 2,
            }  # fmt: skip
            self.predictions[pid] = pred
            if wait:
                self._finish(pred)
            return 201, self._public(pred), {}

    def _finish(self, pred: dict[str, Any]) -> None:
        model = pred["model"]
        if "hang" in model:  # a model that never finishes (until canceled)
            pred["status"] = "processing"
            return
        pred["started_at"] = pred["completed_at"] = pred["created_at"]
        if "fail" in model:
            pred["status"] = "failed"
            pred["error"] = "CUDA out of memory (simulated model failure)"
            return
        inp = pred["input"]
        if "image" in inp:  # image-to-video: a clip of the uploaded image
            name = str(inp["image"]).rsplit("/", 1)[-1]
            source = self.files.get(name)
            if source is None:
                pred["status"] = "failed"
                pred["error"] = f"cannot read input image {inp['image']}"
                return
            # A "badclip" model answers with its input image: not a video.
            self.files[f"{pred['id']}.mp4"] = source if "badclip" in pred["model"] else make_clip(source)
            self.stats.clips += 1
            self.stats.clip_images.append(str(inp["image"]))
            pred["output"] = f"{self.url}/files/{pred['id']}.mp4"
            pred["status"] = "succeeded"
            return
        image = make_image(str(inp.get("prompt", "")), int(inp.get("seed", 0)), str(inp.get("aspect_ratio", "16:9")))
        if "datauri" in model:
            pred["output"] = ["data:image/png;base64," + base64.b64encode(image).decode()]
        elif "huge" in model:  # an output of HUGE_OUTPUT_BYTES, streamed without a length
            pred["output"] = [f"{self.url}/huge/{pred['id']}.png"]
        else:
            name = f"{pred['id']}.png"
            self.files[name] = image
            pred["output"] = [f"{self.url}/files/{name}"]
        pred["status"] = "succeeded"

    def _poll(self, pid: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.stats.polls += 1
            pred = self.predictions.get(pid)
            if pred is None:
                return 404, {"detail": "Not found.", "status": 404}
            if pred["status"] in ("starting", "processing"):
                if pred["_polls_left"] > 0:
                    pred["_polls_left"] -= 1
                    pred["status"] = "processing"
                else:
                    self._finish(pred)
            return 200, self._public(pred)

    def _cancel(self, pid: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            pred = self.predictions.get(pid)
            if pred is None:
                return 404, {"detail": "Not found.", "status": 404}
            if pred["status"] in ("starting", "processing"):
                pred["status"] = "canceled"
                self.stats.cancels += 1
            return 200, self._public(pred)

    def _upload(self, content_type: str, body: bytes) -> tuple[int, dict[str, Any]]:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        part = next((p for p in message.iter_parts() if p.get_param("name", header="content-disposition") == "content"),
                    None) if message.is_multipart() else None
        if part is None:
            return 400, {"detail": "multipart field 'content' is required", "status": 400}
        data = part.get_payload(decode=True) or b""
        with self.lock:
            self.stats.uploads += 1
            fid = uuid.uuid4().hex[:12]
            name = f"upload-{fid}"
            self.files[name] = data
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return 201, {"id": fid, "name": part.get_filename() or "file", "content_type": part.get_content_type(),
                     "size": len(data), "etag": hashlib.md5(data).hexdigest(),
                     "checksums": {"sha256": hashlib.sha256(data).hexdigest()}, "metadata": {}, "created_at": now,
                     "expires_at": None, "urls": {"get": f"{self.url}/files/{name}"}}  # fmt: skip

    @staticmethod
    def _public(pred: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in pred.items() if not k.startswith("_")}

    # ---------------------------------------------------------------- HTTP

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, code: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                self._send(code, json.dumps(data).encode(), "application/json", headers)

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {fake.token}":
                    return True
                with fake.lock:
                    fake.stats.unauthorized += 1
                self._json(401, {"title": "Unauthenticated", "detail": "You did not pass a valid authentication token",
                                 "status": 401})  # fmt: skip
                return False

            def do_GET(self) -> None:
                if self.path.startswith("/huge/"):
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    chunk = b"\x89PNG" + b"\0" * (1024 * 1024 - 4)
                    try:
                        for _ in range(HUGE_OUTPUT_BYTES // len(chunk)):
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            with fake.lock:
                                fake.stats.huge_bytes_sent += len(chunk)
                        self.wfile.write(b"0\r\n\r\n")
                    except OSError:  # the client hung up: what a bounded download does
                        pass
                    return
                if self.path.startswith("/files/"):
                    data = fake.files.get(self.path.removeprefix("/files/"))
                    if data is None:
                        self._send(404, b"not found", "text/plain")
                        return
                    with fake.lock:
                        fake.stats.files_served += 1
                    self._send(200, data, "video/mp4" if self.path.endswith(".mp4") else "image/png")
                    return
                if not self._authorized():
                    return
                m = re.fullmatch(r"/v1/predictions/([A-Za-z0-9]+)", self.path)
                if not m:
                    self._json(404, {"detail": "Not found.", "status": 404})
                    return
                code, body = fake._poll(m.group(1))
                self._json(code, body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                if not self._authorized():
                    return
                if self.path == "/v1/files":
                    code, data = fake._upload(self.headers.get("Content-Type", ""), raw)
                    self._json(code, data)
                    return
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._json(400, {"detail": "invalid JSON", "status": 400})
                    return
                wait = self.headers.get("Prefer", "").startswith("wait")
                m = re.fullmatch(r"/v1/models/([^/]+)/([^/]+)/predictions", self.path)
                cancel = re.fullmatch(r"/v1/predictions/([^/]+)/cancel", self.path)
                if cancel:
                    code, data = fake._cancel(cancel.group(1))
                    self._json(code, data)
                    return
                if m:
                    code, data, headers = fake._create(f"{m.group(1)}/{m.group(2)}", "", body, wait)
                elif self.path == "/v1/predictions":
                    version = str(body.get("version", ""))
                    code, data, headers = fake._create(f"fake/{version[:8] or 'model'}", version, body, wait)
                else:
                    self._json(404, {"detail": "Not found.", "status": 404})
                    return
                self._json(code, data, headers)

        return Handler


if __name__ == "__main__":  # manual poking: python tests/fakes/replicate_server.py
    with FakeReplicate() as fake:
        print(f"REPLICATE_BASE_URL={fake.url} REPLICATE_API_TOKEN={fake.token}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
