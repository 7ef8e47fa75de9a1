"""Replicate predictions per namespace and month (issue 17): what each attempt may create, what it is
charged, the usage book that outlives MusicVideos, renders that wait for or are refused a budget."""

import asyncio
import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from vibecraft_common.limits import DEFAULT_MAX_CLIPS, IMAGES_MAX
from vibecraft_common.resource import ENV_REPLICATE_MAX_PREDICTIONS
from vibecraft_operator import metrics
from vibecraft_operator.budget import Usage, charge, month_of, next_month
from vibecraft_operator.errors import ApiUnavailable
from vibecraft_operator.runtime import Runtime

from tests.conftest import Cluster, S3Server
from tests.harness import wait_for
from tests.operator.conftest import make_operator
from tests.operator.operator_factories import musicvideo, settings
from tests.operator.test_operator_e2e import create_mv, finished_status, manifest
from tests.operator.test_operator_metrics import metric
from tests.operator.test_operator_runtime import LOG, FakeKube, snapshot

NS = "default"
BOOK = ("vibecraft-system", "vibecraft-replicate-usage")


class BudgetKube(FakeKube):
    """FakeKube with the usage book's ConfigMap (and a switch to make it unreachable)."""

    def __init__(self) -> None:
        super().__init__()
        self.configmaps: dict[tuple[str, str], dict[str, str]] = {}
        self.down = False

    def get_configmap_data(self, namespace: str, name: str) -> dict[str, str] | None:
        if self.down:
            raise ApiUnavailable("read_namespaced_config_map: HTTP 503")
        data = self.configmaps.get((namespace, name))
        return None if data is None else dict(data)

    def put_configmap_entry(self, namespace: str, name: str, key: str, value: str) -> None:
        if self.down:
            raise ApiUnavailable("patch_namespaced_config_map: HTTP 503")
        self.configmaps.setdefault((namespace, name), {})[key] = value


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    from vibecraft_operator import runtime as runtime_mod

    posted: list[tuple[str, str, str]] = []
    monkeypatch.setattr(runtime_mod.kopf, "event",
                        lambda obj, *, type, reason, message: posted.append((type, reason, message)))
    return posted


def runtime(kube: BudgetKube, **overrides: Any) -> Runtime:
    values: dict[str, Any] = {"replicate_namespace_budgets": {NS: 10}, "replicate_max_predictions_per_render": 6,
                              "fetch_outputs": False, **overrides}
    return Runtime(settings=settings(**values), kube=kube)  # type: ignore[arg-type]


def add(kube: BudgetKube, name: str, backend: str = "replicate") -> None:
    style = {"backend": backend, "prompt": "neon"} if backend == "replicate" else {"backend": backend}
    kube.mvs[(NS, name)] = musicvideo(name, uid=f"uid-{name}", style=style)


def reconcile(rt: Runtime, kube: BudgetKube, name: str) -> dict[str, Any]:
    asyncio.run(rt.reconcile(NS, name, snapshot(kube), LOG))
    return kube.mvs[(NS, name)]["status"]


def allowed(kube: BudgetKube, name: str, attempt: int = 1) -> int | None:
    """The predictions the attempt's Job may create (its env), None if it has no Job."""
    job = kube.jobs.get((NS, f"{name}-a{attempt}"))
    if job is None:
        return None
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    return int(env[ENV_REPLICATE_MAX_PREDICTIONS])


def renderer_reports(kube: BudgetKube, name: str, predictions: int, *, finish: bool = True) -> None:
    """The renderer patched status.progress.predictions; its Job then completed."""
    kube.mvs[(NS, name)]["status"].setdefault("progress", {})["predictions"] = predictions
    if finish:
        job = kube.jobs[(NS, kube.mvs[(NS, name)]["status"]["jobName"])]
        job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}


def book(kube: BudgetKube) -> dict[str, Any]:
    return {ns: json.loads(text) for ns, text in kube.configmaps.get(BOOK, {}).items()}


def test_attempts_share_the_namespace_budget_wait_for_reservations_and_fail_when_it_is_used_up(events) -> None:
    kube = BudgetKube()
    rt = runtime(kube)
    month = month_of(datetime.now(UTC))
    charged_before = metrics.REPLICATE_PREDICTIONS.labels(NS)._value.get()
    for name in ("a", "b", "c"):
        add(kube, name)
        reconcile(rt, kube, name)
    # a may create 6 (the per-render cap), b what is left (4), c nothing: it waits for a and b, Pending.
    assert (allowed(kube, "a"), allowed(kube, "b"), allowed(kube, "c")) == (6, 4, None)
    status = kube.mvs[(NS, "c")]["status"]
    waiting = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert status["phase"] == "Pending" and waiting["reason"] == "AwaitingReplicateBudget"
    assert "used 0 of its 10 Replicate predictions" in waiting["message"] and "10 more are reserved" in waiting["message"]

    renderer_reports(kube, "a", 5)  # a spent 5 of its 6 and succeeded: charged, its reservation freed
    status = reconcile(rt, kube, "a")
    assert status["phase"] == "Succeeded" and status["replicatePredictions"] == 5 and "predictions" not in status["progress"]
    assert book(kube) == {NS: {"month": month, "predictions": 5}}
    reconcile(rt, kube, "c")
    assert allowed(kube, "c") == 1  # 10 - 5 used - 4 reserved by b

    renderer_reports(kube, "b", 3, finish=False)  # b is deleted while it renders: what it spent is charged
    asyncio.run(rt.cancel(NS, "b", LOG))
    assert kube.mvs[(NS, "b")]["status"]["replicatePredictions"] == 3
    rt.forget("uid-b")
    renderer_reports(kube, "c", 1)
    reconcile(rt, kube, "c")
    assert book(kube)[NS]["predictions"] == 9

    add(kube, "d")  # 1 left, nothing reserved: d may create 1
    reconcile(rt, kube, "d")
    assert allowed(kube, "d") == 1
    renderer_reports(kube, "d", 1)
    reconcile(rt, kube, "d")
    add(kube, "e")  # used up, nothing running: refused for good, with when it renews
    status = reconcile(rt, kube, "e")
    assert (status["phase"], status["lastFailure"]["reason"], status["lastFailure"]["kind"]) == (
        "Failed", "ReplicateBudgetExceeded", "permanent")
    assert f"used 10 of its 10 Replicate predictions for {month}" in status["lastFailure"]["message"]
    assert f"renews on {next_month(month)}-01" in status["lastFailure"]["message"] and (NS, "e-a1") not in kube.jobs
    assert metrics.REPLICATE_PREDICTIONS.labels(NS)._value.get() - charged_before == 10

    add(kube, "p", backend="procedural")  # other backends never touch the budget
    reconcile(rt, kube, "p")
    job = kube.jobs[(NS, "p-a1")]
    assert ENV_REPLICATE_MAX_PREDICTIONS not in {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}

    # The book outlives the MusicVideos and the operator: a new process refuses f too.
    kube.mvs = {k: v for k, v in kube.mvs.items() if k[1] == "p"}
    add(kube, "f")
    assert reconcile(runtime(kube), kube, "f")["phase"] == "Failed"


def test_without_a_budget_only_the_per_render_cap_applies_and_spend_is_still_counted(events) -> None:
    kube = BudgetKube()
    rt = runtime(kube, replicate_namespace_budgets={})
    add(kube, "a")
    reconcile(rt, kube, "a")
    assert allowed(kube, "a") == 6
    renderer_reports(kube, "a", 6)
    assert reconcile(rt, kube, "a")["replicatePredictions"] == 6
    assert book(kube)[NS]["predictions"] == 6


def test_an_unreadable_book_holds_replicate_renders_and_a_failed_write_is_not_lost(events) -> None:
    kube = BudgetKube()
    kube.down = True
    rt = runtime(kube)
    add(kube, "a")
    with pytest.raises(ApiUnavailable):  # kopf retries the handler; no Job without a readable book
        reconcile(rt, kube, "a")
    assert not kube.jobs
    kube.down = False
    reconcile(rt, kube, "a")
    assert allowed(kube, "a") == 6
    kube.down = True  # the charge cannot be written now ...
    renderer_reports(kube, "a", 2)
    assert reconcile(rt, kube, "a")["replicatePredictions"] == 2
    assert book(kube) == {}
    kube.down = False  # ... and is written with the next one
    add(kube, "b")
    reconcile(rt, kube, "b")
    assert allowed(kube, "b") == 6
    renderer_reports(kube, "b", 1)
    reconcile(rt, kube, "b")
    assert book(kube)[NS]["predictions"] == 3


def test_an_attempt_is_charged_once_when_its_progress_is_cleared() -> None:
    running = {"phase": "Running", "replicatePredictions": 4, "progress": {"percent": 50, "predictions": 3}}
    assert charge(running, {"conditions": []}) == ({"conditions": []}, 0)  # still rendering
    assert charge(running, {"progress": {"percent": 60}}) == ({"progress": {"percent": 60}}, 0)
    patch, spent = charge(running, {"phase": "Running", "progress": {"percent": None, "predictions": None}})
    assert spent == 3 and patch["replicatePredictions"] == 7
    assert charge({"phase": "Running", "progress": {"percent": 9}}, {"progress": {"predictions": None}})[1] == 0


def test_months_and_the_book_format() -> None:
    assert month_of(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == "2026-12"
    assert (next_month("2026-11"), next_month("2026-12")) == ("2026-12", "2027-01")
    assert Usage("2026-10", 7).in_month("2026-11") == Usage("2026-11", 0)
    assert Usage.from_json(Usage("2026-11", 7).to_json(), "2026-11") == Usage("2026-11", 7)
    assert Usage.from_json("not json", "2026-11") == Usage("2026-11", 0)
    assert copy.copy(Usage("2026-11", 1)).predictions == 1


@pytest.mark.cluster
def test_a_namespace_budget_through_the_real_operator_and_renderer_pods(
        cluster: Cluster, s3: S3Server, crd: None, renderer_namespace: str, tmp_path: Path, apis: Any) -> None:
    """Budget 5 for the namespace: 3 predictions, then a render wanting 4 (refused by its renderer: 2 left),
    then 2; a fourth render is refused by the operator without a Job. Counted in status, the usage book
    (a ConfigMap) and /metrics."""
    custom, batch, _ = apis
    ns = renderer_namespace
    op = make_operator(cluster, s3, ns, tmp_path / "operator.log", VIBECRAFT_REPLICATE_NAMESPACE_BUDGETS=json.dumps({ns: 5}),
                       VIBECRAFT_USAGE_NAMESPACE=ns, VIBECRAFT_USAGE_CONFIGMAP="usage")
    op.start()
    try:
        def render(name: str, steps: str) -> dict[str, Any]:
            create_mv(custom, ns, manifest(name, style={"backend": "replicate", "prompt": steps}))
            return finished_status(custom, ns, name)

        first = render("first", "sleep:2,predict:3,ok")
        assert (first["phase"], first["replicatePredictions"]) == ("Succeeded", 3), first
        second = render("second", "sleep:2,predict:4,ok")
        assert (second["phase"], second["lastFailure"]["reason"], second["lastFailure"]["kind"]) == (
            "Failed", "ReplicateBudgetExceeded", "permanent"), second
        assert "allows 2 more" in second["lastFailure"]["message"] and "replicatePredictions" not in second
        third = render("third", "sleep:2,predict:2,ok")
        assert (third["phase"], third["replicatePredictions"]) == ("Succeeded", 2), third
        fourth = render("fourth", "ok")
        assert fourth["phase"] == "Failed" and "used 5 of its 5 Replicate predictions" in fourth["lastFailure"]["message"]
        assert fourth.get("attempts", 0) == 0 and not batch.list_namespaced_job(
            ns, label_selector="vibecraft.io/musicvideo=fourth").items
        data = json.loads(cluster.kubectl("get", "configmap", "usage", "-n", ns, "-o", "json").stdout)["data"]
        assert json.loads(data[ns])["predictions"] == 5
        wait_for(lambda: metric(op, "vibecraft_replicate_predictions_total", namespace=ns) == 5.0, timeout=10,
                 what="the predictions counter")
        assert metric(op, "vibecraft_replicate_budget_remaining", namespace=ns) == 0.0
    finally:
        cluster.kubectl("delete", "musicvideos.vibecraft.io", "--all", "-n", ns, "--timeout=60s", check=False)
        op.stop()


def test_an_attempt_reserves_what_its_style_can_spend_not_the_whole_cap(events) -> None:
    """Stills reserve IMAGES_MAX (24) of a 40-prediction cap, clips 24 + maxClips (default 4): a stills render
    does not hold the budget the clips' allowance would add."""
    kube = BudgetKube()
    rt = runtime(kube, replicate_namespace_budgets={NS: 100}, replicate_max_predictions_per_render=40)
    add(kube, "stills")
    kube.mvs[(NS, "clips")] = musicvideo("clips", uid="uid-clips",
                                         style={"backend": "replicate", "prompt": "neon", "motion": "clips"})
    kube.mvs[(NS, "two")] = musicvideo("two", uid="uid-two", style={"backend": "replicate", "prompt": "neon",
                                                                   "motion": "clips", "maxClips": 2})
    for name in ("stills", "clips", "two"):
        reconcile(rt, kube, name)
    assert (allowed(kube, "stills"), allowed(kube, "clips"), allowed(kube, "two")) == (
        IMAGES_MAX, IMAGES_MAX + DEFAULT_MAX_CLIPS, IMAGES_MAX + 2)
