"""Pure functions between the API's models and MusicVideo objects (no I/O; unit-tested without a cluster)."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from vibecraft_common.limits import DEFAULT_PARALLELISM, PARALLELISM_AUTO
from vibecraft_common.resource import ANNOTATION_DELETE_OUTPUTS, API_VERSION, GROUP, KIND, LABEL_FINISHED
from vibecraft_common.status import PENDING, spec_pending

from vibecraft_api.models.videos import (
    PHASES,
    TERMINAL,
    AnalysisPublic,
    AudioPublic,
    FailurePublic,
    LyricsPublic,
    OutputPublic,
    Phase,
    ProgressPublic,
    StylePublic,
    VideoCreate,
    VideoLinks,
    VideoOptionsPublic,
    VideoPublic,
)
from vibecraft_api.storage import s3_url, split_s3_url

LABEL_TENANT: Final = f"{GROUP}/tenant"
LABEL_IDEMPOTENCY: Final = f"{GROUP}/idempotency-key"  # sha256(tenant, key)[:63]: the raw key is never stored
LABEL_CREATED_BY: Final = "app.kubernetes.io/created-by"
CREATED_BY: Final = "vibecraft-api"
ANNOTATION_REQUEST_HASH: Final = f"{GROUP}/request-hash"  # a reused Idempotency-Key must carry the same request
ANNOTATION_AUDIO_KEY: Final = f"{GROUP}/audio-key"

ID_PREFIX: Final = "mv-"
_ALPHABET: Final = "0123456789abcdefghijklmnopqrstuvwxyz"
_TIME_CHARS: Final = 9  # 36**9 ms reach the year 5138
_RANDOM_CHARS: Final = 11

M = TypeVar("M", bound=BaseModel)


def _base36(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def new_video_id(now_ms: int | None = None) -> str:
    """`mv-` + creation time + randomness: unguessable, and Kubernetes lists them oldest first."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_CHARS))
    return ID_PREFIX + _base36(now_ms, _TIME_CHARS) + rand


def idempotency_label(tenant: str, key: str) -> str:
    return hashlib.sha256(f"{tenant}\0{key}".encode()).hexdigest()[:63]


def request_hash(req: VideoCreate) -> str:
    """The request's identity for idempotency keys. audio.normalize at its default is left out: requests
    made before the field existed hash as they did."""
    body = req.model_dump(mode="json", exclude_none=True)
    if body.get("audio", {}).get("normalize") is True:
        del body["audio"]["normalize"]
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def output_prefix(tenant: str, video_id: str) -> str:
    return f"videos/{tenant}/{video_id}/"


def build_musicvideo(*, name: str, tenant: str, req: VideoCreate, bucket: str, audio_url: str,
                     idempotency: str | None = None) -> dict[str, Any]:
    """The MusicVideo for a validated request; CRD defaults are left to the API server."""
    spec: dict[str, Any] = {
        "audio": {"url": audio_url, **req.audio.model_dump(include={"bpm", "beatOffsetSeconds", "normalize"},
                                                           exclude_none=True, exclude_defaults=True)},
        "style": req.style.model_dump(exclude_none=True),
        "video": req.video.model_dump(exclude_none=True),
        "output": {"url": s3_url(bucket, output_prefix(tenant, name))},
    }
    if req.retries is not None:
        spec["retries"] = req.retries
    if req.deadlineSeconds is not None:
        spec["deadlineSeconds"] = req.deadlineSeconds
    if req.ttlSecondsAfterFinished is not None:
        spec["ttlSecondsAfterFinished"] = req.ttlSecondsAfterFinished
    if req.parallelism is not None:
        spec["parallelism"] = req.parallelism
    if req.lyrics is not None:
        spec["lyrics"] = req.lyrics.model_dump(exclude_none=True)
    if req.preview:
        spec["preview"] = True
    if req.title is not None:
        spec["title"] = req.title
    if req.artist is not None:
        spec["artist"] = req.artist
    labels = {LABEL_TENANT: tenant, LABEL_CREATED_BY: CREATED_BY}
    # A video the API made goes with its files, however it is deleted (API, TTL or kubectl).
    annotations = {ANNOTATION_REQUEST_HASH: request_hash(req), ANNOTATION_DELETE_OUTPUTS: "true"}
    if idempotency:
        labels[LABEL_IDEMPOTENCY] = idempotency
    if req.audio.key:
        annotations[ANNOTATION_AUDIO_KEY] = req.audio.key
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": name, "labels": labels, "annotations": annotations}, "spec": spec}


# Renders that may count against the concurrent-render limit: the operator labels finished ones.
ACTIVE_SELECTOR: Final = f"!{LABEL_FINISHED}"


def phase_of(obj: dict[str, Any]) -> Phase:
    """status.phase; Pending until the operator has written one, and while it has not taken up a changed spec."""
    if spec_pending(obj):
        return PENDING
    phase = (obj.get("status") or {}).get("phase")
    return next((p for p in PHASES if p == phase), PENDING)


def is_active(obj: dict[str, Any]) -> bool:
    """Counts against the concurrent-render limit: not finished, or being deleted (its render may still run
    and its files are still being removed until the object is gone)."""
    return phase_of(obj) not in TERMINAL or bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def _lenient(cls: type[M], data: Any) -> M | None:
    """Status is written by other components: a malformed part is dropped, never a 500."""
    if not isinstance(data, dict) or not data:
        return None
    try:
        return cls.model_validate(data)
    except ValidationError:
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def starts_in(status: Mapping[str, Any], now: datetime | None = None) -> int | None:
    """status.estimatedStartSeconds counted from now instead of from status.queueUpdatedAt (never below 0)."""
    seconds = _number(status.get("estimatedStartSeconds"))
    if seconds is None:
        return None
    try:
        updated = datetime.fromisoformat(str(status.get("queueUpdatedAt") or "").replace("Z", "+00:00"))
    except ValueError:
        return round(seconds)
    elapsed = ((now or datetime.now(UTC)) - updated).total_seconds()
    return max(0, round(seconds - max(0.0, elapsed)))


def _parallelism(value: object) -> int | Literal["auto"]:
    if value == PARALLELISM_AUTO:
        return PARALLELISM_AUTO
    return _int(value) or DEFAULT_PARALLELISM


def _lyrics(value: object) -> LyricsPublic | None:
    if not isinstance(value, dict):
        return None
    url = value.get("url")
    return LyricsPublic(url=url if isinstance(url, str) and url.startswith(("http://", "https://")) else None,
                        inline=isinstance(value.get("text"), str), format=str(value.get("format") or "auto"))


def to_public(obj: dict[str, Any], bucket: str) -> VideoPublic:
    """The client's view of a MusicVideo: no S3 locations (of the song or the outputs), no Kubernetes details."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    name = str(meta.get("name", ""))
    audio = spec.get("audio") or {}
    audio_url = str(audio.get("url", ""))
    parsed = split_s3_url(audio_url)
    key = parsed[1] if parsed and parsed[0] == bucket else None
    # An uploaded song is shown by its key; only a URL the client gave (http/https) is shown as such.
    public_url = audio_url if audio_url.startswith(("http://", "https://")) else None
    base = f"/v1/videos/{name}"
    output = _lenient(OutputPublic, {k: v for k, v in (status.get("output") or {}).items()
                                     if k in ("durationSeconds", "sizeBytes")})
    return VideoPublic(
        id=name,
        phase=phase_of(obj),
        createdAt=meta.get("creationTimestamp"),
        audio=AudioPublic(key=key, url=public_url, bpm=_number(audio.get("bpm")),
                          beatOffsetSeconds=_number(audio.get("beatOffsetSeconds")),
                          normalize=audio.get("normalize") is not False),
        style=_lenient(StylePublic, spec.get("style")) or StylePublic(),
        video=_lenient(VideoOptionsPublic, spec.get("video")) or VideoOptionsPublic(),
        retries=_int(spec.get("retries")),
        deadlineSeconds=_int(spec.get("deadlineSeconds")),
        ttlSecondsAfterFinished=_int(spec.get("ttlSecondsAfterFinished")),
        parallelism=_parallelism(spec.get("parallelism")),
        preview=spec.get("preview") is True,
        lyrics=_lyrics(spec.get("lyrics")),
        title=spec.get("title") if isinstance(spec.get("title"), str) else None,
        artist=spec.get("artist") if isinstance(spec.get("artist"), str) else None,
        progress=_lenient(ProgressPublic, status.get("progress")),
        queuePosition=_int(status.get("queuePosition")),
        estimatedStartSeconds=starts_in(status),
        attempts=_int(status.get("attempts")) or 0,
        replicatePredictions=_int(status.get("replicatePredictions")) or 0,
        failure=_lenient(FailurePublic, status.get("lastFailure")),
        output=output,
        analysis=_lenient(AnalysisPublic, status.get("analysis")),
        deleting=bool(meta.get("deletionTimestamp")),
        links=VideoLinks(self=base, events=f"{base}/events", download=f"{base}/download"),
    )
