"""Operator log lines say when and about which MusicVideo; kopf's misleading daemon line is gone."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from vibecraft_operator import main
from vibecraft_operator.handlers import stopped_message
from vibecraft_operator.queue import Admission
from vibecraft_operator.reconcile import Observation, decide_folded
from vibecraft_operator.runtime import Runtime

from tests.operator.operator_factories import T0, applied, musicvideo, settings, step

QUEUED = "waiting for older renders to start first"


@pytest.fixture
def logs() -> Iterator[None]:
    """Undo configure_logging's changes to the root logger and kopf's object logger."""
    root, objects = logging.getLogger(), logging.getLogger("kopf.objects")
    saved = root.handlers[:], root.level, objects.filters[:]
    yield
    root.handlers[:], objects.filters[:] = saved[0], saved[2]
    root.setLevel(saved[1])


class StubKube:
    def patch_musicvideo_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        pass


def reconcile_log(log_format: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """What the operator prints, in `log_format`, for a reconcile step that queues a render."""
    out = io.StringIO()
    handler = main.configure_logging(log_format)
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    monkeypatch.setattr(kopf, "event", lambda *args, **kwargs: None)  # no Kubernetes Events here
    mv = musicvideo("summer-song", "music")
    mv = applied(mv, step(mv))
    plan = decide_folded(Observation(mv, None, [], T0, Admission(False, "Queued", QUEUED)), settings())
    logger = kopf.LocalObjectLogger(body=kopf.Body(mv), settings=kopf.OperatorSettings())  # as kopf gives the reconciler
    runtime = Runtime(settings=settings(), kube=StubKube())  # type: ignore[arg-type]
    asyncio.run(runtime.apply(mv, plan, logger))
    return out.getvalue()


@pytest.mark.parametrize("log_format", ["plain", "full"])
def test_a_reconcile_log_line_names_the_object_and_the_time(logs: None, monkeypatch: pytest.MonkeyPatch,
                                                             log_format: str) -> None:
    lines = reconcile_log(log_format, monkeypatch).splitlines()
    line = next(line for line in lines if line.endswith(f"Queued: {QUEUED}"))
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z .*INFO +\[music/summer-song\] Queued: ", line), line


def test_a_json_log_record_carries_the_object_and_the_time(logs: None, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [json.loads(line) for line in reconcile_log("json", monkeypatch).splitlines()]
    record = next(r for r in records if r["message"] == f"Queued: {QUEUED}")
    assert record["object"]["namespace"] == "music" and record["object"]["name"] == "summer-song"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", record["timestamp"]), record


def test_kopfs_daemon_succeeded_line_is_replaced(logs: None) -> None:
    out = io.StringIO()
    handler = main.configure_logging("plain")
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    mv = musicvideo(status={"phase": "Failed", "lastFailure": {"reason": "InvalidSpec"}})
    logger = kopf.LocalObjectLogger(body=kopf.Body(mv), settings=kopf.OperatorSettings())
    logger.info("Daemon 'musicvideo_reconciler' succeeded.")  # what kopf says when the reconciler returns
    logger.info(stopped_message(kopf.DaemonStoppingReason.FILTERS_MISMATCH, mv))
    text = out.getvalue()
    assert "succeeded" not in text
    assert "[default/demo] Reconciler stopped: nothing left to do (finished or suspended) (phase Failed, InvalidSpec)" \
        in text
    assert stopped_message(None, musicvideo()) == "Reconciler stopped: stopped (phase no phase yet)"
