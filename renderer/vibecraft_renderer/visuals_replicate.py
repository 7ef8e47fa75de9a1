"""Images per section from Replicate, cached by content hash next to the outputs.

Uses the official `replicate` client (REPLICATE_API_TOKEN, base URL from REPLICATE_BASE_URL).
The client retries GETs on 429 but not the POST that creates a prediction, so creation is retried
here with backoff honouring Retry-After. Finished images are stored under
`<cache prefix>/replicate/<sha256>.img` keyed by (model, prompt, seed, aspect ratio), so a retried
Job, or a repeated chorus, never pays twice.
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

from . import egress, storage
from .analysis import Section
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
MAX_IMAGES: Final = 24  # bounds memory of the compositor (~4 MB each at its working size)
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

    def generate(
        self, requests: list[ImageRequest], on_progress: Callable[[int, int], None] | None = None
    ) -> dict[str, Path]:
        """Local image file per request key."""
        unique = list({r.key: r for r in requests}.values())
        results: dict[str, Path] = {}
        done = 0
        if self.max_predictions is not None:  # fail before spending anything when the budget cannot cover it
            new = sum(not storage.exists(self._cache_url(r)) for r in unique)
            if new > self.max_predictions:
                raise ReplicateBudgetError(self._over_budget(new))

        def one(req: ImageRequest) -> tuple[str, Path]:
            return req.key, self._image(req)

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="replicate") as pool:
            for key, path in pool.map(one, unique):
                results[key] = path
                done += 1
                if on_progress:
                    on_progress(done, len(unique))
        log.info("replicate: %d images (%d from cache, %d predictions)", len(unique), self.cache_hits, self.created)
        return results

    def _image(self, req: ImageRequest) -> Path:
        local = self.work_dir / f"img-{req.key[:16]}.img"
        cache_url = self._cache_url(req)
        if storage.exists(cache_url):
            storage.get_file(cache_url, local)
            with self._lock:
                self.cache_hits += 1
            log.info("replicate: cache hit for %s (group %d)", req.key[:12], req.group)
            return local
        data = self._predict(req)
        local.write_bytes(data)
        storage.put_file(local, cache_url, "application/octet-stream")
        return local

    def _cache_url(self, req: ImageRequest) -> str:
        return storage.join(self.cache_prefix, f"{req.key}.img")

    def _over_budget(self, needed: int) -> str:
        return (f"this render needs {needed} new Replicate images, but its namespace's monthly prediction budget "
                f"allows {self.max_predictions} more (cached images are free; ask for fewer images or wait for "
                "the next month)")

    def _create_within_budget(self, req: ImageRequest) -> Any:
        """`_create`, counted against the budget: a slot is taken before the request and kept if it created one."""
        with self._lock:
            if self.max_predictions is not None and self.created + self._creating >= self.max_predictions:
                raise ReplicateBudgetError(self._over_budget(self.created + self._creating + 1))
            self._creating += 1
        created = False
        try:
            prediction = self._create(req)
            created = True
            return prediction
        finally:
            with self._lock:
                self._creating -= 1
                self.created += created
                count = self.created
            if created and self.on_prediction:
                self.on_prediction(count)

    def _create(self, req: ImageRequest) -> Any:
        import httpx
        from replicate.exceptions import ReplicateError

        client = self._replicate()
        model, _, version = req.model.partition(":")
        for attempt in range(1, MAX_CREATE_ATTEMPTS + 1):
            self._tls.retry_after = None
            try:
                if version:
                    return client.predictions.create(version=version, input=req.model_input(), wait=60)
                return client.models.predictions.create(model=model, input=req.model_input(), wait=60)
            except ReplicateError as exc:
                status = exc.status or 0
                if status == 401:
                    raise ReplicateFailedError("Replicate rejected the API token (401)") from None
                if (status == 429 or status >= 500) and attempt < MAX_CREATE_ATTEMPTS:
                    delay = self._delay(attempt)
                    log.warning("replicate: HTTP %d creating prediction, retrying in %.1f s", status, delay)
                    self.sleep(delay)
                    continue
                detail = exc.detail or exc.title or "no detail"
                raise ReplicateFailedError(f"Replicate refused {req.model}: HTTP {status}: {detail}") from None
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

    def _predict(self, req: ImageRequest) -> bytes:
        prediction = self._create_within_budget(req)
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
        return self._fetch_output(prediction.output)

    @staticmethod
    def _cancel(prediction: Any) -> None:
        """Cancel a prediction left unfinished (best effort: the render is failing anyway)."""
        try:
            prediction.cancel()
            log.warning("replicate: canceled prediction %s", prediction.id)
        except Exception as exc:
            log.warning("replicate: canceling prediction %s failed: %s", prediction.id, exc)

    def _fetch_output(self, output: Any) -> bytes:
        url = _first_url(output)
        if url is None:
            raise ReplicateFailedError(f"prediction returned no image: {str(output)[:200]}")
        if url.startswith("data:"):
            try:
                header, _, payload = url.partition(",")
                return base64.b64decode(payload) if ";base64" in header else payload.encode()
            except (binascii.Error, ValueError) as exc:
                raise ReplicateFailedError(f"bad data: URI in prediction output: {exc}") from None
        return self._download(url)

    def _download(self, url: str) -> bytes:
        """The image at an output URL, through the egress guard: the model (the tenant's choice) names the
        URL, so it gets the same address checks, size cap (MAX_IMAGE_BYTES, while streaming) and generic
        error as an audio URL. Retried on what a retry may fix (no answer, 5xx, 429), all attempts within
        IMAGE_DOWNLOAD_DEADLINE_S. The Replicate API itself (create, poll) is the operator's configured
        endpoint and does not go through here."""
        deadline = time.monotonic() + IMAGE_DOWNLOAD_DEADLINE_S
        for attempt in range(1, IMAGE_DOWNLOAD_ATTEMPTS + 1):
            # To a temporary file, not a growing in-memory buffer (whose reallocations doubled the peak):
            # nothing is held while an oversized answer streams in, and a good image is read once.
            with tempfile.TemporaryFile(dir=self.work_dir) as buf:
                try:
                    egress.download(url, buf, max_bytes=MAX_IMAGE_BYTES, deadline_s=deadline - time.monotonic(),
                                    what="generated image")  # fmt: skip
                except egress.EgressError as exc:
                    if not exc.retryable or attempt == IMAGE_DOWNLOAD_ATTEMPTS:
                        raise ReplicateFailedError(str(exc)) from None
                else:
                    buf.seek(0)
                    return buf.read()
            self.sleep(min(self._delay(attempt), max(0.0, deadline - time.monotonic())))
        raise ReplicateFailedError(egress.failure_message(url))  # pragma: no cover


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
