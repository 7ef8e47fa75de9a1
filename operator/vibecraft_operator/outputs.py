"""Reading a finished render's outputs back from S3: the video's size and analysis.json (tolerant)."""

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from vibecraft_common.limits import TEMPO_SOURCES

from vibecraft_operator.errors import OutputsUnavailable
from vibecraft_operator.reconcile import Outputs, default_outputs, output_prefix
from vibecraft_operator.settings import Settings

MAX_ANALYSIS_BYTES = 4 * 1024 * 1024
MAX_SECTIONS = 64


def split_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/key` → (bucket, key)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise OutputsUnavailable(f"{url!r} is not an s3:// URL")
    return parsed.netloc, parsed.path.lstrip("/")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list) and value and isinstance(value[0], int | float):
        return float(value[0])  # librosa returns tempo as a 1-element array
    return None


def _first(doc: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in doc and doc[key] is not None:
            return doc[key]
    return None


def _section(item: Any, index: int) -> dict[str, Any] | None:
    if not isinstance(item, Mapping):
        return None
    start = _number(_first(item, "start", "startSeconds", "start_time", "start_s"))
    end = _number(_first(item, "end", "endSeconds", "end_time", "end_s"))
    if start is None or end is None:
        return None
    label = _first(item, "label", "name", "kind")
    label = label if label is not None else index
    return {"start": round(start, 3), "end": round(end, 3), "label": str(label)}


def summarize_analysis(doc: Mapping[str, Any]) -> tuple[dict[str, Any], float | None]:
    """status.analysis (tempo, tempoSource, confidence, beat count, sections) and the duration from analysis.json."""
    audio = doc.get("audio")
    merged: dict[str, Any] = {**(audio if isinstance(audio, Mapping) else {}), **doc}
    analysis: dict[str, Any] = {}
    tempo = _number(_first(merged, "tempo", "bpm", "tempoBpm"))
    if tempo is not None:
        analysis["tempo"] = round(tempo, 2)
    # Exactly the renderer's keys (Analysis.to_json); a value the CRD would refuse is left out, so
    # that it cannot make the API server reject the whole succeeded patch.
    source = doc.get("tempoSource")
    if source in TEMPO_SOURCES:
        analysis["tempoSource"] = source
    confidence = doc.get("confidence")
    if isinstance(confidence, int | float) and not isinstance(confidence, bool) and 0.0 <= confidence <= 1.0:
        analysis["confidence"] = round(float(confidence), 3)
    beats = _first(merged, "beats", "beat_times", "beatTimes", "beat_count", "beatCount")
    if isinstance(beats, list):
        analysis["beats"] = len(beats)
    elif isinstance(beats, int) and not isinstance(beats, bool):
        analysis["beats"] = beats
    sections = _first(merged, "sections", "segments")
    if isinstance(sections, list):
        parsed = [s for i, item in enumerate(sections) if (s := _section(item, i)) is not None]
        analysis["sections"] = parsed[:MAX_SECTIONS]
    duration = _number(_first(merged, "duration", "durationSeconds", "duration_seconds", "duration_s"))
    return analysis, duration


def fetch_outputs(spec: Mapping[str, Any], settings: Settings) -> Outputs:
    """The outputs of a successful render; whatever S3 refuses becomes a warning, never an error."""
    import boto3  # imported here: boto3 is slow to import and only needed on success
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    base = default_outputs(spec)
    output: dict[str, Any] = dict(base.output)
    if not settings.fetch_outputs:
        return base
    timeout = settings.outputs_timeout_seconds
    try:
        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint or None,
            region_name=settings.s3_region,
            config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2}),
        )
        bucket, key = split_s3_url(f"{output_prefix(spec)}/video.mp4")
        head = client.head_object(Bucket=bucket, Key=key)
        output["sizeBytes"] = int(head.get("ContentLength") or 0)
        bucket, key = split_s3_url(str(output["analysisUrl"]))
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read(MAX_ANALYSIS_BYTES)
        doc = json.loads(body)
        if not isinstance(doc, Mapping):
            raise OutputsUnavailable("analysis.json is not a JSON object")
        analysis, duration = summarize_analysis(doc)
        if duration is not None:
            output["durationSeconds"] = round(duration, 3)
        return Outputs(output, analysis or None)
    except (BotoCoreError, ClientError, OutputsUnavailable, ValueError) as exc:
        return Outputs(output, None, f"could not read the render's outputs from S3: {exc}")
