"""Tests that need real containers: the session's cluster (tests/conftest.py), whose node is the real
kubelet v1.37 with containerd + runc + CNI, running the images built from the project's Dockerfiles
(localcluster/realnode.py, build-node.sh, build-images.sh). Skipped with VIBECRAFT_TEST_NODE=agent."""

from __future__ import annotations

import pytest

from tests.conftest import Cluster


@pytest.fixture(scope="session")
def real_cluster(cluster: Cluster) -> Cluster:
    if not cluster.real:
        pytest.skip("needs real containers: the session's cluster runs pods through the node agent "
                    "(VIBECRAFT_TEST_NODE=agent)")
    return cluster
