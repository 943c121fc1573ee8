#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, kubectl, etcd, helm) from the pinned Go
# modules in this folder into ${GODRUN_CACHE:-$HOME/.cache/godrun}/cluster-bin.
# A no-op when the stamp (hash of go.mod, go.sum, this script, lib.sh and cmd/) matches.
# Without Go it prints one line and exits 0 (the k8s tests then skip), unless
# GODRUN_REQUIRE_CLUSTER=1, where it fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${GODRUN_CACHE:-$HOME/.cache/godrun}"
bin="$cache/cluster-bin"
binaries=(kube-apiserver kubectl etcd helm)
# shellcheck source=lib.sh
source "$here/lib.sh"

want="$(cd "$here" && cat go.mod go.sum build.sh lib.sh cmd/*/main.go | sha256sum | cut -d' ' -f1)"
begin_build cluster-bin

cd "$here"
k8s_version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
helm_version="$(go list -m -f '{{.Version}}' helm.sh/helm/v3)"
k8s_minor="$(echo "$k8s_version" | cut -d. -f2)"
ldflags="$(k8s_ldflags)"
ldflags+=" -X helm.sh/helm/v3/internal/version.version=$helm_version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done

start=$(date +%s)
echo "cluster-bin: building kubernetes $k8s_version, helm $helm_version into $bin (cold: tens of minutes)"
go build -p "${GODRUN_BUILD_JOBS:-2}" -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl helm.sh/helm/v3/cmd/helm ./cmd/etcd
seconds=$(($(date +%s) - start))

for b in "${binaries[@]}"; do mv -f "$tmp/$b" "$bin/$b"; done
# One line per build; bench/cluster.py reports the latest cold (empty Go build cache) and warm one.
printf '{"seconds": %d, "cold": %s, "kubernetes": "%s", "helm": "%s", "finished": "%s"}\n' \
  "$seconds" "$cold" "$k8s_version" "$helm_version" "$(date -u +%FT%TZ)" >>"$bin/.builds.jsonl"
echo "$want" >"$bin/.stamp"
echo "cluster-bin: built in ${seconds}s: $(cd "$bin" && du -sh "${binaries[@]}" | tr '\n\t' '  ')"
