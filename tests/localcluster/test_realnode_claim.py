"""One real node per machine: a second cluster asking for one while another's runs is told which and how
to stop it, instead of both fighting over the pod bridge and kube-proxy's iptables rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from vibecraft_localcluster import realnode
from vibecraft_localcluster.config import ClusterConfig
from vibecraft_localcluster.realnode import NodeError, RealNode


def _node(state: Path) -> RealNode:
    return RealNode(ClusterConfig(state_dir=state, node="kubelet"))


def test_a_running_real_node_is_not_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realnode, "CLAIM", tmp_path / "claim")
    demo, tests = tmp_path / "demo", tmp_path / "tests"
    _node(demo).claim()
    (demo / "run").mkdir(parents=True)
    (demo / "run" / "kubelet.pid").write_text(str(os.getpid()))  # a live process stands for its kubelet
    with pytest.raises(NodeError, match=f"state in {demo}.*VIBECRAFT_CLUSTER_DIR={demo} .*vibecraft-cluster down"):
        _node(tests).claim()
    _node(demo).claim()  # its own cluster may claim again (a second `up`)

    (demo / "run" / "kubelet.pid").write_text("999999999")  # gone (crashed, or the machine rebooted)
    _node(tests).claim()
    assert (tmp_path / "claim").read_text().strip() == str(tests)
    _node(demo).release()  # not the claimant: nothing happens
    assert (tmp_path / "claim").exists()
    _node(tests).release()
    assert not (tmp_path / "claim").exists()
