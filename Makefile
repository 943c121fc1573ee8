PY := .venv/bin/python
CLUSTER_BIN := $(or $(GODRUN_CACHE),$(HOME)/.cache/godrun)/cluster-bin

.PHONY: setup test test-unit test-node lint bench cluster-bin node-bin kueue-bin node-packages prometheus demo crd docs sync-chart

setup:
	bash scripts/setup_env.sh

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

cluster-bin:
	bash tests/cluster/build.sh

# kubelet, kube-controller-manager, kube-scheduler, kube-proxy, coredns into ~/.cache/godrun/node-bin
node-bin:
	bash tests/cluster/build_node.sh

# Kueue's controller manager from its Go module, and its CRDs, into ~/.cache/godrun/kueue-bin (tests/k8s/kueue.py)
kueue-bin:
	bash tests/cluster/build_kueue.sh

# containerd, runc, CNI plugins, buildah, mmdebstrap, iptables (Debian; the node tests start their own containerd)
node-packages:
	bash scripts/install_node_packages.sh

prometheus:
	bash scripts/install_prometheus.sh

# Every tool is installed or built first (side by side: scripts/prepare_tools.sh), so a missing one fails its
# tests instead of skipping (tests/tools.py).
# The real-node tests (marker `node`, as root) run beside the rest (scripts/test_all.sh).
test:
	bash scripts/prepare_tools.sh
	bash scripts/test_all.sh

# Only the tests on the real node (tests/k8s/kubenode.py): pods, Jobs, Services, DNS, the chart.
test-node: setup cluster-bin node-bin kueue-bin node-packages
	GODRUN_REQUIRE_TOOLS=1 $(PY) -m pytest -q -m node

test-unit: setup
	$(PY) -m pytest -q -m "not k8s"

# the scripts that judge a corpus and checkpoints given on their command line are run by hand
BENCH_WITH_INPUTS := bench/dip_errors.py bench/error_bands.py bench/dip_evidence.py
bench: setup
	for f in $(filter-out $(BENCH_WITH_INPUTS),$(wildcard bench/*.py)); do echo "== $$f"; $(PY) $$f || exit 1; done

demo: setup
	.venv/bin/godrun demo

crd: setup
	.venv/bin/godrun crd -o manifests/crd/godruns.godrun.io.yaml
	$(PY) scripts/sync_chart.py

# copy the CRD, dashboard and alert rules into helm/godrun/files and manifests/monitoring/prometheusrule.yaml
sync-chart: setup
	$(PY) scripts/sync_chart.py

docs: setup
	$(PY) -m godrun.docs > docs/reference.md
	$(PY) -m godrun.docs --controller-readme
