"""Images per section from Replicate (and, for style.motion clips, a short clip per section group from an
image-to-video model), cached by content hash next to the outputs.

Uses the official `replicate` client (REPLICATE_API_TOKEN, base URL from REPLICATE_BASE_URL).
The client retries GETs on 429 but not the POST that creates a prediction, so creation is retried
here with backoff honouring Retry-After. Finished images are stored under
`<cache prefix>/replicate/<sha256>.img` keyed by (model, prompt, seed, aspect ratio), so a retried
Job, or a repeated chorus, never pays twice. Clips are cached the same way (`<sha256>.clip`, keyed by the
clip model, the image's key, prompt and seed); the image a clip starts from is uploaded through
Replicate's files API (data URIs are only for small files).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from vibecraft_common.limits import CLIPS_MAX, IMAGES_MAX

from . import egress, storage
from .analysis import Section
from .compose import check_clip, image_format
from .config import RenderSpec
from .errors import ReplicateBudgetError, ReplicateFailedError

log = logging.getLogger(__name__)

MAX_CREATE_ATTEMPTS: Final = 8
MAX_BACKOFF_S: Final = 60.0
PREDICTION_TIMEOUT_S: Final = 600.0
MAX_IMAGE_BYTES: Final = 50 * 1024 * 1024
# All attempts at one output image together (the model's output URL is the tenant's: see egress.py).
IMAGE_DOWNLOAD_DEADLINE_S: Final = 120.0
IMAGE_DOWNLOAD_ATTEMPTS: Final = 3
MAX_IMAGES: Final = IMAGES_MAX  # bounds memory of the compositor (~4 MB each at its working size)
MAX_CLIP_BYTES: Final = 100 * 1024 * 1024  # a few seconds of 480p-720p H.264 is 1-10 MB
SUPPORTED_RATIOS: Final = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")


@dataclass(frozen=True)
class ImageRequest:
    """One image to generate: which section group and variant it illustrates, and how."""

    group: int
    variant: int
    prompt: str
    seed: int
    aspect_ratio: str
    model: str

    @property
    def key(self) -> str:
        """Content hash: identical requests share one cached image."""
        blob = json.dumps([self.model, self.prompt, self.seed, self.aspect_ratio])
        return hashlib.sha256(blob.encode()).hexdigest()

    def model_input(self) -> dict[str, Any]:
        """Input for text-to-image models in the flux/sdxl family (unknown keys are ignored)."""
        return {"prompt": self.prompt, "seed": self.seed, "aspect_ratio": self.aspect_ratio,
                "output_format": "png", "num_outputs": 1}  # fmt: skip


@dataclass(frozen=True)
class ClipRequest:
    """One clip to generate: section group `group` animated from the image with key `image_key`."""

    group: int
    image_key: str
    prompt: str
    seed: int
    model: str

    @property
    def key(self) -> str:
        """Content hash: the same image, prompt and model share one cached clip."""
        blob = json.dumps(["clip", self.model, self.image_key, self.prompt, self.seed])
        return hashlib.sha256(blob.encode()).hexdigest()

    def model_input(self, image_url: str) -> dict[str, Any]:
        """Input for image-to-video models (wan-i2v, kling, seedance, minimax: `image`, `prompt`, `seed`)."""
        return {"image": image_url, "prompt": self.prompt, "seed": self.seed}


def nearest_ratio(width: int, height: int) -> str:
    """The model-supported aspect ratio closest to the video's."""
    target = width / height

    def distance(r: str) -> float:
        a, b = (int(x) for x in r.split(":"))
        return abs(a / b - target)

    return min(SUPPORTED_RATIOS, key=distance)


def plan_requests(spec: RenderSpec, sections: list[Section], per_section: int) -> list[ImageRequest]:
    """Images per section group (a repeated chorus reuses its images), capped at MAX_IMAGES."""
    groups: dict[int, Section] = {}
    for s in sections:
        groups.setdefault(s.group, s)
    per = max(1, min(per_section, MAX_IMAGES // max(1, len(groups))))
    ratio = nearest_ratio(spec.video.width, spec.video.height)
    base = spec.style.prompt.strip() or "abstract dreamlike landscape, cinematic"
    out = []
    for group, sec in sorted(groups.items()):
        for v in range(per):
            prompt = f"{base}, {sec.mood}" + (f", variation {v + 1}" if v else "")
            seed = (spec.style.seed + 1009 * group + 101 * v) % (2**31 - 1)
            out.append(ImageRequest(group, v, prompt, seed, ratio, spec.style.model))
    return out


def plan_clips(spec: RenderSpec, requests: list[ImageRequest]) -> list[ClipRequest]:
    """style.motion clips: one clip per section group from its first image, for the first style.max_clips groups
    (song order; CLIPS_MAX at most); none for stills."""
    if spec.style.motion != "clips":
        return []
    firsts = sorted((r for r in requests if r.variant == 0), key=lambda r: r.group)
    return [ClipRequest(r.group, r.key, f"{r.prompt}, gentle camera motion", r.seed, spec.style.clip_model)
            for r in firsts[:min(spec.style.max_clips, CLIPS_MAX)]]


class ReplicateImages:
    """Generates (or fetches cached) images with bounded concurrency."""

    def __init__(
        self,
        cache_prefix: str,
        work_dir: Path,
        concurrency: int = 3,
        token: str | None = None,
        base_url: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_predictions: int | None = None,
        on_prediction: Callable[[int], None] | None = None,
    ) -> None:
        self.token = token if token is not None else os.environ.get("REPLICATE_API_TOKEN", "")
        if not self.token:
            raise ReplicateFailedError("REPLICATE_API_TOKEN is not set; the replicate backend needs an API token")
        self.base_url = base_url or os.environ.get("REPLICATE_BASE_URL") or None
        self.cache_prefix = storage.join(cache_prefix, "replicate")
        self.work_dir = work_dir
        self.concurrency = concurrency
        self.sleep = sleep
        self._tls = threading.local()
        self._client: Any = None
        self.created = 0
        self.cache_hits = 0
        self._lock = threading.Lock()
        # The budget (None: none) counts predictions created; `_creating` those being created right now,
        # so that concurrent workers cannot all take the last one.
        self.max_predictions = max_predictions
        self._creating = 0
        self.on_prediction = on_prediction
        self._clips_planned = False

    def _replicate(self) -> Any:
        if self._client is None:
            from replicate.client import Client

            def remember_retry_after(response: Any) -> None:
                # ReplicateError drops the headers; keep Retry-After for this thread's retry loop.
                self._tls.retry_after = response.headers.get("retry-after")

            self._client = Client(
                api_token=self.token, base_url=self.base_url, event_hooks={"response": [remember_retry_after]}
            )
        return self._client

    def preflight(self, requests: list[ImageRequest], clips: list[ClipRequest]) -> None:
        """Fail before spending anything when the images and clips not cached yet exceed the budget together
        (checking the images alone would pay for them, then fail on the clips)."""
        self._clips_planned = bool(clips)
        self._check_budget([self._cache_url(r) for r in {r.key: r for r in requests}.values()]
                           + [self._clip_cache_url(c) for c in {c.key: c for c in clips}.values()])

    def generate(
        self, requests: list[ImageRequest], on_progress: Callable[[int, int], None] | None = None
    ) -> dict[str, Path]:
        """Local image file per request key."""
        unique = list({r.key: r for r in requests}.values())
        self._check_budget([self._cache_url(r) for r in unique])
        return self._run(unique, self._image, on_progress, "images")

    def generate_clips(
        self, clips: list[ClipRequest], images: dict[str, Path],
        on_progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Path]:
        """Local clip file per clip key, each from its image (a local file in `images`, by image key)."""
        if not clips:
            return {}
        unique = list({c.key: c for c in clips}.values())
        self._check_budget([self._clip_cache_url(c) for c in unique])
        return self._run(unique, lambda c: self._clip(c, images[c.image_key]), on_progress, "clips")

    def _check_budget(self, cache_urls: list[str]) -> None:
        """Fail before spending anything when the budget (less what this render already spent) cannot cover
        the outputs not cached yet."""
        if self.max_predictions is None:
            return
        new = sum(not storage.exists(u) for u in cache_urls)
        if new > self.max_predictions - self.created:
            raise ReplicateBudgetError(self._over_budget(new + self.created))

    def _run(self, unique: list[Any], make: Callable[[Any], Path], on_progress: Callable[[int, int], None] | None,
             what: str) -> dict[str, Path]:
        results: dict[str, Path] = {}
        done = 0
        hits, created = self.cache_hits, self.created

        def one(req: Any) -> tuple[str, Path]:
            return req.key, make(req)

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="replicate") as pool:
            for key, path in pool.map(one, unique):
                results[key] = path
                done += 1
                if on_progress:
                    on_progress(done, len(unique))
        log.info("replicate: %d %s (%d from cache, %d predictions)", len(unique), what, self.cache_hits - hits,
                 self.created - created)
        return results

    def _image(self, req: ImageRequest) -> Path:
        return self._cached(req, self._cache_url(req), self.work_dir / f"img-{req.key[:16]}.img",
                            lambda local: local.write_bytes(
                                self._predict(req, req.model_input(), MAX_IMAGE_BYTES, "generated image")))

    def _clip(self, req: ClipRequest, image: Path) -> Path:
        def predict(local: Path) -> None:
            local.write_bytes(self._predict(req, req.model_input(self._upload(image)), MAX_CLIP_BYTES,
                                            "generated clip"))
            check_clip(local)  # before it is cached: a bad answer must not be served to every later render

        return self._cached(req, self._clip_cache_url(req), self.work_dir / f"clip-{req.key[:16]}.clip", predict)

    def _cached(self, req: ImageRequest | ClipRequest, cache_url: str, local: Path,
                predict: Callable[[Path], object]) -> Path:
        """The output at `cache_url` if there, else predicted into the local file `local` (by `predict(local)`)
        and stored there; as the local file `local`."""
        if storage.exists(cache_url):
            storage.get_file(cache_url, local)
            with self._lock:
                self.cache_hits += 1
            log.info("replicate: cache hit for %s (group %d)", req.key[:12], req.group)
            return local
        predict(local)
        storage.put_file(local, cache_url, "application/octet-stream")
        return local

    def _cache_url(self, req: ImageRequest) -> str:
        return storage.join(self.cache_prefix, f"{req.key}.img")

    def _clip_cache_url(self, req: ClipRequest) -> str:
        return storage.join(self.cache_prefix, f"{req.key}.clip")

    def _upload(self, image: Path) -> str:
        """The image a clip starts from, uploaded to Replicate's files API: its URL for the model's input."""
        kind = {"PNG": "image/png", "JPEG": "image/jpeg", "WebP": "image/webp", "GIF": "image/gif"}.get(
            image_format(_head(image)) or "", "application/octet-stream")
        name = f"image.{kind.rsplit('/', 1)[-1]}"
        uploaded = self._retrying(f"uploading {image.name}", lambda: self._replicate().files.create(
            image, filename=name, content_type=kind))
        url = (getattr(uploaded, "urls", None) or {}).get("get")
        if not url:
            raise ReplicateFailedError(f"Replicate's files API returned no URL for {image.name}")
        return str(url)

    def _over_budget(self, needed: int) -> str:
        return (f"this render needs {needed} new Replicate images{' and clips' if self._clips_planned else ''}, but "
                f"its namespace's monthly prediction budget allows {self.max_predictions} more (cached ones are free; "
                "ask for fewer images or clips, or wait for the next month)")

    def _create_within_budget(self, req: ImageRequest | ClipRequest, inp: dict[str, Any]) -> Any:
        """`_create`, counted against the budget: a slot is taken before the request and kept if it created one."""
        with self._lock:
            if self.max_predictions is not None and self.created + self._creating >= self.max_predictions:
                raise ReplicateBudgetError(self._over_budget(self.created + self._creating + 1))
            self._creating += 1
        created = False
        try:
            prediction = self._create(req, inp)
            created = True
            return prediction
        finally:
            with self._lock:
                self._creating -= 1
                self.created += created
                count = self.created
            if created and self.on_prediction:
                self.on_prediction(count)

    def _create(self, req: ImageRequest | ClipRequest, inp: dict[str, Any]) -> Any:
        client = self._replicate()
        model, _, version = req.model.partition(":")

        def create() -> Any:
            if version:
                return client.predictions.create(version=version, input=inp, wait=60)
            return client.models.predictions.create(model=model, input=inp, wait=60)

        return self._retrying(f"Replicate refused {req.model}", create)

    def _retrying(self, what: str, call: Callable[[], Any]) -> Any:
        """`call` (a POST to Replicate), retried with backoff on 429, 5xx and transport errors; other refusals
        fail the render with `what` and Replicate's detail."""
        import httpx
        from replicate.exceptions import ReplicateError

        for attempt in range(1, MAX_CREATE_ATTEMPTS + 1):
            self._tls.retry_after = None
            try:
                return call()
            except ReplicateError as exc:
                status = exc.status or 0
                if status == 401:
                    raise ReplicateFailedError("Replicate rejected the API token (401)") from None
                if (status == 429 or status >= 500) and attempt < MAX_CREATE_ATTEMPTS:
                    delay = self._delay(attempt)
                    log.warning("replicate: HTTP %d (%s), retrying in %.1f s", status, what, delay)
                    self.sleep(delay)
                    continue
                detail = exc.detail or exc.title or "no detail"
                raise ReplicateFailedError(f"{what}: HTTP {status}: {detail}") from None
            except httpx.TransportError as exc:
                if attempt >= MAX_CREATE_ATTEMPTS:
                    raise ReplicateFailedError(f"cannot reach Replicate: {exc}") from None
                self.sleep(self._delay(attempt))
        raise ReplicateFailedError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int) -> float:
        raw = getattr(self._tls, "retry_after", None)
        if raw:
            try:
                return min(MAX_BACKOFF_S, max(0.0, float(raw)))
            except ValueError:
                pass
        return float(min(MAX_BACKOFF_S, 0.5 * 2 ** (attempt - 1) * (1 + 0.25 * random.random())))

    def _predict(self, req: ImageRequest | ClipRequest, inp: dict[str, Any], max_bytes: int, what: str) -> bytes:
        prediction = self._create_within_budget(req, inp)
        deadline = time.monotonic() + PREDICTION_TIMEOUT_S
        poll = float(os.environ.get("REPLICATE_POLL_INTERVAL", "0.5"))
        try:
            while prediction.status not in ("succeeded", "failed", "canceled"):
                if time.monotonic() > deadline:
                    raise ReplicateFailedError(
                        f"prediction {prediction.id} did not finish in {PREDICTION_TIMEOUT_S:.0f} s (canceled)")
                self.sleep(poll)
                try:
                    prediction.reload()
                except Exception as exc:
                    raise ReplicateFailedError(f"polling prediction {prediction.id} failed: {exc}") from None
        except BaseException:
            # A prediction we stop waiting for keeps running, and billing, until it ends or is canceled.
            self._cancel(prediction)
            raise
        if prediction.status != "succeeded":
            error = prediction.error or prediction.status
            raise ReplicateFailedError(f"model {req.model} failed for section group {req.group}: {error}")
        return self._fetch_output(prediction.output, max_bytes, what)

    @staticmethod
    def _cancel(prediction: Any) -> None:
        """Cancel a prediction left unfinished (best effort: the render is failing anyway)."""
        try:
            prediction.cancel()
            log.warning("replicate: canceled prediction %s", prediction.id)
        except Exception as exc:
            log.warning("replicate: canceling prediction %s failed: %s", prediction.id, exc)

    def _fetch_output(self, output: Any, max_bytes: int, what: str) -> bytes:
        url = _first_url(output)
        if url is None:
            raise ReplicateFailedError(f"prediction returned no {what.split()[-1]}: {str(output)[:200]}")
        if url.startswith("data:"):
            try:
                header, _, payload = url.partition(",")
                data = base64.b64decode(payload) if ";base64" in header else payload.encode()
            except (binascii.Error, ValueError) as exc:
                raise ReplicateFailedError(f"bad data: URI in prediction output: {exc}") from None
            if len(data) > max_bytes:
                raise ReplicateFailedError(f"{what} is larger than {egress.size_text(max_bytes)}")
            return data
        return self._download(url, max_bytes, what)

    def _download(self, url: str, max_bytes: int, what: str) -> bytes:
        """The output at a URL, through the egress guard: the model (the tenant's choice) names the
        URL, so it gets the same address checks, size cap (`max_bytes`, while streaming) and generic
        error as an audio URL. Retried on what a retry may fix (no answer, 5xx, 429), all attempts within
        IMAGE_DOWNLOAD_DEADLINE_S. The Replicate API itself (create, poll) is the operator's configured
        endpoint and does not go through here."""
        deadline = time.monotonic() + IMAGE_DOWNLOAD_DEADLINE_S
        for attempt in range(1, IMAGE_DOWNLOAD_ATTEMPTS + 1):
            # To a temporary file, not a growing in-memory buffer (whose reallocations doubled the peak):
            # nothing is held while an oversized answer streams in, and a good image is read once.
            with tempfile.TemporaryFile(dir=self.work_dir) as buf:
                try:
                    egress.download(url, buf, max_bytes=max_bytes, deadline_s=deadline - time.monotonic(),
                                    what=what)  # fmt: skip
                except egress.EgressError as exc:
                    if not exc.retryable or attempt == IMAGE_DOWNLOAD_ATTEMPTS:
                        raise ReplicateFailedError(str(exc)) from None
                else:
                    buf.seek(0)
                    return buf.read()
            self.sleep(min(self._delay(attempt), max(0.0, deadline - time.monotonic())))
        raise ReplicateFailedError(egress.failure_message(url))  # pragma: no cover


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(16)


def _first_url(output: Any) -> str | None:
    if isinstance(output, str):
        return output
    if isinstance(output, list | tuple):
        for item in output:
            found = _first_url(item)
            if found:
                return found
    if isinstance(output, dict):
        for value in output.values():
            found = _first_url(value)
            if found:
                return found
    return None
