"""The usage book: Replicate predictions charged per namespace and month, kept in a ConfigMap (I/O side of budget.py).

The ConfigMap (settings.usage_configmap in settings.usage_namespace, one key per namespace holding
`{"month": "YYYY-MM", "predictions": N}`) is written only by the operator, in a namespace tenants
cannot write: deleting MusicVideos does not give a budget back. It is read once, then kept in memory
(one leader writes it). Reservations of attempts running now live in memory only: after an operator
restart, renders already running are not reserved (their predictions are still charged when they end).
"""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from vibecraft_operator import metrics
from vibecraft_operator.budget import Allowance, Usage, budget_of, month_of
from vibecraft_operator.kube import Kube
from vibecraft_operator.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class UsageBook:
    """Predictions charged per namespace this month, and what running attempts may still spend."""

    kube: Kube
    settings: Settings
    _usage: dict[str, Usage] | None = None
    _reserved: dict[str, tuple[str, int]] = field(default_factory=dict)  # uid: (namespace, predictions)
    _pending: list[tuple[str, str, int]] = field(default_factory=list)  # (namespace, month, predictions)
    _dirty: set[str] = field(default_factory=set)  # namespaces whose entry is not written yet

    def budget(self, namespace: str) -> int | None:
        """The namespace's monthly budget (None: none)."""
        s = self.settings
        return budget_of(namespace, s.replicate_monthly_budget, s.replicate_namespace_budgets)

    def load(self) -> None:
        """Read the ConfigMap once (blocking; ApiUnavailable or ApiException if the API refuses). Budgets are
        decided only after it was read: a book that cannot be read stops Replicate renders, not the budget."""
        if self._usage is None:
            data = self.kube.get_configmap_data(self.settings.usage_namespace, self.settings.usage_configmap) or {}
            month = month_of(datetime.now(UTC))
            self._usage = {ns: Usage.from_json(text, month) for ns, text in data.items()}

    def used(self, namespace: str, month: str) -> int:
        return (self._usage or {}).get(namespace, Usage(month)).in_month(month).predictions

    def allowance(self, namespace: str, uid: str, now: datetime) -> Allowance | None:
        """What a new attempt of MusicVideo `uid` may create (after load()); None without a budget."""
        budget = self.budget(namespace)
        if budget is None:
            return None
        month = month_of(now)
        used = self.used(namespace, month)
        reserved = sum(cap for other, (ns, cap) in self._reserved.items() if ns == namespace and other != uid)
        metrics.REPLICATE_BUDGET_REMAINING.labels(namespace).set(max(0, budget - used))
        return Allowance(budget, used, reserved, month)

    def reserve(self, uid: str, namespace: str, predictions: int) -> None:
        """An attempt of `uid` may create up to `predictions`: others in its namespace cannot have them."""
        self._reserved[uid] = (namespace, predictions)

    def release(self, uid: str) -> None:
        """The attempt of `uid` ended (its cost is charged) or the MusicVideo is gone."""
        self._reserved.pop(uid, None)

    def charge(self, namespace: str, predictions: int, now: datetime) -> None:
        """Add an ended attempt's predictions to its namespace's month, then write the book (blocking)."""
        metrics.REPLICATE_PREDICTIONS.labels(namespace).inc(predictions)
        self._pending.append((namespace, month_of(now), predictions))
        self.flush()

    def flush(self) -> None:
        """Read the book if not yet read, add pending charges, write what changed (blocking). What cannot
        be read or written now stays pending (in memory) for the next call: a charge is never dropped."""
        try:
            self.load()
        except Exception as exc:
            log.warning("Replicate usage book unreadable (%s): %d charges kept for later", exc, len(self._pending))
            return
        assert self._usage is not None
        for namespace, month, predictions in self._pending:
            self._usage[namespace] = Usage(month, self.used(namespace, month) + predictions)
            self._dirty.add(namespace)
            budget = self.budget(namespace)
            if budget is not None:
                remaining = max(0, budget - self._usage[namespace].predictions)
                metrics.REPLICATE_BUDGET_REMAINING.labels(namespace).set(remaining)
        self._pending.clear()
        for namespace in sorted(self._dirty):
            try:
                self.kube.put_configmap_entry(self.settings.usage_namespace, self.settings.usage_configmap,
                                              namespace, self._usage[namespace].to_json())
            except Exception as exc:
                log.warning("could not write the Replicate usage book (%s): will write %s again later", exc, namespace)
                return
            self._dirty.discard(namespace)
