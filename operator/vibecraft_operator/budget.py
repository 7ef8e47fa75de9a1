"""Replicate spend per tenant namespace and month (pure): what a new attempt may spend, what a finished one cost.

Predictions are billed by Replicate, and which model and how many images a render asks for is the
tenant's choice; the operator therefore gives every namespace a monthly prediction budget (settings
`replicate_monthly_budget`, `replicate_namespace_budgets`). The renderer reports the predictions it
created in `status.progress.predictions`; when an attempt ends (its progress is cleared), the operator
adds that count to `status.replicatePredictions` and to the namespace's month in its usage book (a
ConfigMap the operator alone writes, so deleting MusicVideos does not give the budget back). A new
attempt may create at most what is left, minus what attempts already running in the namespace may
still spend (their reservations); a namespace with nothing left gets ReplicateBudgetExceeded instead
of a Job.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vibecraft_operator import mergepatch

PREDICTIONS = "predictions"  # status.progress.predictions, the renderer's count
CHARGED = "replicatePredictions"  # status.replicatePredictions, the operator's total


def month_of(now: datetime) -> str:
    """The budget period a moment belongs to: the calendar month in UTC, `YYYY-MM`."""
    return f"{now.year:04d}-{now.month:02d}"


def next_month(month: str) -> str:
    """The period after `month` (when a used-up budget renews)."""
    year, number = (int(part) for part in month.split("-"))
    return f"{year + number // 12:04d}-{number % 12 + 1:02d}"


@dataclass(frozen=True)
class Usage:
    """Predictions charged to one namespace in one month."""

    month: str
    predictions: int = 0

    def in_month(self, month: str) -> "Usage":
        """This usage as of `month`: a new month starts from zero."""
        return self if self.month == month else Usage(month)

    def to_json(self) -> str:
        return json.dumps({"month": self.month, PREDICTIONS: self.predictions}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, month: str) -> "Usage":
        """A usage book entry; an unreadable one counts as fully unknown and is read as zero for `month`."""
        try:
            data = json.loads(text)
            return cls(str(data["month"]), max(0, int(data[PREDICTIONS])))
        except (ValueError, KeyError, TypeError):
            return cls(month)


@dataclass(frozen=True)
class Allowance:
    """What a namespace may still spend this month, for one new attempt."""

    budget: int
    used: int
    reserved: int  # what the namespace's running attempts may still spend
    month: str

    @property
    def remaining(self) -> int:
        return max(0, self.budget - self.used - self.reserved)

    def exhausted_message(self, namespace: str) -> str:
        busy = f"; {self.reserved} more are reserved by renders running now" if self.reserved else ""
        return (f"namespace {namespace} has used {self.used} of its {self.budget} Replicate predictions for "
                f"{self.month}{busy}: the budget renews on {next_month(self.month)}-01 (UTC)")


def budget_of(namespace: str, default: int | None, per_namespace: Mapping[str, int]) -> int | None:
    """The namespace's monthly budget: its own entry, else the default; None = no budget."""
    return per_namespace.get(namespace, default)


def uses_replicate(spec: Mapping[str, Any]) -> bool:
    return (spec.get("style") or {}).get("backend") == "replicate"


def charge(status: Mapping[str, Any], patch: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """`patch` plus the cost of the attempt it ends, and that cost.

    An attempt ends where the operator clears the renderer's progress (a retry, success, failure,
    cancellation, suspension, a new spec): the predictions it last reported are then added to
    status.replicatePredictions in the same write. A patch that leaves the count in place costs nothing.
    """
    spent = int((status.get("progress") or {}).get(PREDICTIONS) or 0)
    if spent <= 0:
        return dict(patch), 0
    after = mergepatch.apply_patch(status, patch)
    if int((after.get("progress") or {}).get(PREDICTIONS) or 0) == spent:
        return dict(patch), 0
    total = int(status.get(CHARGED) or 0) + spent
    return mergepatch.compose(status, patch, {CHARGED: total}), spent
