"""Finished MusicVideos: the label clients select on, and when ttlSecondsAfterFinished deletes them (pure).

Objects must not grow without bound: a tenant with 10 000 finished videos should not make every
"how many renders are in progress?" list all 10 000 (they select `!vibecraft.io/finished`), and a
finished video may be given a lifetime, per object (spec.ttlSecondsAfterFinished) or operator-wide
(Settings.ttl_seconds_after_finished), like a Job's ttlSecondsAfterFinished.
"""

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from vibecraft_common.resource import FINISHED, LABEL_FINISHED
from vibecraft_common.status import TERMINAL_PHASES, spec_pending

from vibecraft_operator.timeutil import parse_time


def is_finished(mv: Mapping[str, Any]) -> bool:
    """Succeeded, Failed or Cancelled, and not being deleted (a deletion is work in progress: its render
    is being stopped and its files removed)."""
    meta, status = mv.get("metadata") or {}, mv.get("status") or {}
    # A finished video whose spec was changed (a preview set to false) is work again before the operator acts.
    return status.get("phase") in TERMINAL_PHASES and not meta.get("deletionTimestamp") and not spec_pending(mv)


def label_patch(mv: Mapping[str, Any]) -> dict[str, Any] | None:
    """The metadata merge-patch that makes LABEL_FINISHED say `is_finished`; None when it already does."""
    want = FINISHED if is_finished(mv) else None
    have = ((mv.get("metadata") or {}).get("labels") or {}).get(LABEL_FINISHED)
    return None if have == want else {"labels": {LABEL_FINISHED: want}}


def expires_at(mv: Mapping[str, Any], default_ttl: int | None) -> datetime | None:
    """When a finished MusicVideo is to be deleted: status.finishedAt + its TTL (spec, else the default);
    None when it is not finished or has no TTL."""
    if not is_finished(mv):
        return None
    ttl = (mv.get("spec") or {}).get("ttlSecondsAfterFinished")
    ttl = default_ttl if not isinstance(ttl, int) or isinstance(ttl, bool) else ttl
    finished = parse_time((mv.get("status") or {}).get("finishedAt"))
    if ttl is None or finished is None:
        return None
    return finished + timedelta(seconds=ttl)
