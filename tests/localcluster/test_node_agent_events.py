"""The node agent reacts to pod watch events; events queued before a pod finished must not run it again."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
from vibecraft_localcluster import node_agent
from vibecraft_localcluster.node_agent import NodeAgent


def pod(uid: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": f"p-{uid}", "namespace": "ns", "uid": uid},
            "spec": {"containers": [{"name": "main", "image": "python:3.11"}]}, "status": status}


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[NodeAgent, list[str]]:
    """An agent without an API server; starting or removing a pod is recorded instead of done."""
    a = NodeAgent.__new__(NodeAgent)
    a.state_dir, a.runners, a.finished, a.runners_lock = tmp_path, {}, OrderedDict(), threading.Lock()
    calls: list[str] = []
    monkeypatch.setattr(node_agent.PodRunner, "start", lambda self: calls.append(f"start {self.uid}"))
    monkeypatch.setattr(node_agent.PodRunner, "_finish_deletion", lambda self: calls.append(f"delete {self.uid}"))
    return a, calls


def test_a_new_pod_is_started(agent: tuple[NodeAgent, list[str]]) -> None:
    a, calls = agent
    a.handle(pod("u1", phase="Pending"))
    assert calls == ["start u1"] and "u1" in a.runners


def test_a_stale_event_after_the_pod_finished_does_not_start_it_again(agent: tuple[NodeAgent, list[str]]) -> None:
    a, calls = agent
    a.handle(pod("u1", phase="Pending"))
    a.forget("u1")  # the runner ended: pod Succeeded
    a.handle(pod("u1", phase="Pending"))  # an event from before that, still in the watch stream
    assert calls == ["start u1"] and not a.runners


def test_a_finished_pod_being_deleted_is_removed(agent: tuple[NodeAgent, list[str]]) -> None:
    a, calls = agent
    a.handle(pod("u1", phase="Pending"))
    a.forget("u1")
    gone = pod("u1", phase="Succeeded")
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    a.handle(gone)
    for t in threading.enumerate():
        if t is not threading.current_thread() and t.daemon:
            t.join(timeout=2)
    assert calls == ["start u1", "delete u1"]


def test_the_finished_set_is_bounded(agent: tuple[NodeAgent, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = agent
    monkeypatch.setattr(node_agent, "FINISHED_REMEMBERED", 3)
    for i in range(5):
        a.forget(f"u{i}")
    assert list(a.finished) == ["u2", "u3", "u4"]


def test_a_crashed_runner_leaves_its_pod_failed(agent: tuple[NodeAgent, list[str]],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Later events are ignored, so the runner itself must not leave the pod looking Running."""
    a, calls = agent

    def crash(self: node_agent.PodRunner) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(node_agent.PodRunner, "_run", crash)
    monkeypatch.setattr(node_agent.PodRunner, "_terminate_all", lambda self: calls.append(f"kill {self.uid}"))
    monkeypatch.setattr(NodeAgent, "_orphan", lambda self, p, delete: calls.append(f"failed {p['metadata']['uid']}"))
    node_agent.PodRunner(a, pod("u1", phase="Running")).run()
    assert calls == ["kill u1", "failed u1"] and "u1" in a.finished
