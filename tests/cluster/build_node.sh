#!/usr/bin/env bash
# Builds the node binaries for the node-marked tests (kubelet, kube-controller-manager,
# kube-scheduler, kube-proxy from node/go.mod; coredns from coredns/go.mod) into
# ${GODRUN_CACHE:-$HOME/.cache/godrun}/node-bin. A set and stamp apart from build.sh's
# control plane, so that one keeps its own fast path; both share the Go caches.
# A no-op when the stamp matches. Without Go it prints one line and exits 0 (the node tests
# then skip), unless GODRUN_REQUIRE_CLUSTER=1, where it fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${GODRUN_CACHE:-$HOME/.cache/godrun}"
bin="$cache/node-bin"
binaries=(kubelet kube-controller-manager kube-scheduler kube-proxy coredns)

# shellcheck source=lib.sh
source "$here/lib.sh"

want="$(cd "$here" && cat build_node.sh lib.sh node/go.mod node/go.sum coredns/go.mod coredns/go.sum coredns/main.go |
  sha256sum | cut -d' ' -f1)"
begin_build node-bin
jobs="${GODRUN_BUILD_JOBS:-2}"

cd "$here/node"
k8s_version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
ldflags="$(k8s_ldflags)"

# One JSON line per binary set; bench/cluster.py-style cold = the Go build cache was empty.
record() {
  printf '{"set": "%s", "seconds": %d, "cold": %s, "version": "%s", "finished": "%s"}\n' \
    "$1" "$2" "$3" "$4" "$(date -u +%FT%TZ)" >>"$bin/.builds.jsonl"
}
echo "node-bin: building kubernetes $k8s_version node binaries into $bin"
start=$(date +%s)
go build -p "$jobs" -ldflags "$ldflags" -o "$tmp/" k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kube-proxy
record kubernetes-node $(($(date +%s) - start)) "$cold" "$k8s_version"

cd "$here/coredns"
coredns_version="$(go list -m -f '{{.Version}}' github.com/coredns/coredns)"
start=$(date +%s)
go build -p "$jobs" -ldflags "-s -w" -o "$tmp/coredns" .
record coredns $(($(date +%s) - start)) "$cold" "$coredns_version"

for b in "${binaries[@]}"; do mv -f "$tmp/$b" "$bin/$b"; done
echo "$want" >"$bin/.stamp"
echo "node-bin: built: $(cd "$bin" && du -sh "${binaries[@]}" | tr '\n\t' '  ')"
