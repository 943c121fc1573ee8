"""Fixtures for `k8s`-marked tests: a real control plane per session with a fresh namespace per test, and a
real one-node cluster per session for the `node`-marked tests.

    k8s_cluster    (session)  godrun.testcluster.Cluster: .kubeconfig (admin), .server, .kubectl(...), .helm(...),
                              .api_client(), .create_namespace(), .service_account_kubeconfig(ns, name);
                              etcd + kube-apiserver, no node
    k8s_namespace  (function) a new namespace with its `default` ServiceAccount
    kube_node      (session)  tests.k8s.kubenode.KubeNode: a real one-node cluster (containerd, kubelet,
                              controller-manager, scheduler, kube-proxy, CoreDNS) in its own network namespace;
                              tests using it carry the `node` marker (`pytest -m node` runs them alone)
    readme_cluster (session)  k8s.readme_cluster.ReadmeCluster: `kube_node` after the README's cluster block ran
                              (release `godrun` in namespace godrun, run act-of-god Shipped, the volume's path)

Every test under tests/k8s carries the `k8s` marker (applied here). Without the binaries (`make cluster-bin`,
needs Go) every k8s test skips with one reason line (fails under `make test`, see tests/tools.py).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tools import unavailable

from godrun.testcluster import Cluster, bin_dir, missing_binaries
from k8s.kubenode import KubeNode, missing_node_parts
from k8s.readme_cluster import ReadmeCluster, run_readme_block

HERE = Path(__file__).resolve().parent
_names = itertools.count()


# The first test that needs `readme_cluster` also pays for its set-up: on a cold image cache that builds the
# trainer's image first (613 s on a fresh machine's 2 busy cores, before the README's run), past the 900 s
# that bounds every other test.
README_CLUSTER_TIMEOUT = 2400


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.k8s)
            if "readme_cluster" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.timeout(README_CLUSTER_TIMEOUT))


@pytest.fixture(scope="session")
def k8s_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = missing_binaries()
    if missing:
        unavailable(f"k8s: {', '.join(missing)} not built in {bin_dir()} (run `make cluster-bin`; needs Go)")
    keep = os.environ.get("GODRUN_KEEP_CLUSTER") == "1"
    cluster = Cluster(root=tmp_path_factory.mktemp("k8s-cluster"), keep_root=keep)
    with cluster:
        yield cluster


@pytest.fixture(scope="session")
def kube_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeNode]:
    missing = missing_binaries() + missing_node_parts()
    if missing:
        unavailable(f"node: missing {', '.join(missing)}")
    keep = os.environ.get("GODRUN_KEEP_CLUSTER") == "1"
    with KubeNode(root=tmp_path_factory.mktemp("kube-node"), keep_root=keep) as node:
        yield node


@pytest.fixture(scope="session")
def readme_cluster(kube_node: KubeNode) -> ReadmeCluster:
    """The README's cluster block, run once per session on `kube_node` (tests/k8s/readme_cluster.py)."""
    return run_readme_block(kube_node)


@pytest.fixture
def k8s_namespace(k8s_cluster: Cluster, request: pytest.FixtureRequest) -> str:
    stem = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower())[:40].strip("-")
    return k8s_cluster.create_namespace(f"{stem}-{next(_names)}")
