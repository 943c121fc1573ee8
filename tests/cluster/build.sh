#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, kubectl, etcd, helm) from the pinned Go
# modules in this folder into ${GODRUN_CACHE:-$HOME/.cache/godrun}/cluster-bin.
# A no-op when the stamp (hash of go.mod, go.sum, this script and cmd/) matches.
# Without Go it prints one line and exits 0 (the k8s tests then skip), unless
# GODRUN_REQUIRE_CLUSTER=1, where it fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${GODRUN_CACHE:-$HOME/.cache/godrun}"
bin="$cache/cluster-bin"
binaries=(kube-apiserver kubectl etcd helm)

stamp_of_sources() {
  (cd "$here" && cat go.mod go.sum build.sh cmd/*/main.go) | sha256sum | cut -d' ' -f1
}

binaries_current() {
  local want="$1" b
  [[ -f "$bin/.stamp" && "$(cat "$bin/.stamp")" == "$want" ]] || return 1
  for b in "${binaries[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

want="$(stamp_of_sources)"
if binaries_current "$want"; then
  echo "cluster-bin: current in $bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "cluster-bin: Go not found; k8s tests will skip (install Go >= 1.26 to build $bin)" >&2
  [[ "${GODRUN_REQUIRE_CLUSTER:-0}" == 1 ]] && exit 1
  exit 0
fi

mkdir -p "$bin"
exec 9>"$cache/cluster-bin.lock"
flock 9
# Another build may have finished while this one waited for the lock.
if binaries_current "$want"; then
  echo "cluster-bin: current in $bin"
  exit 0
fi

export GOMODCACHE="$cache/go-mod" GOCACHE="$cache/go-build" CGO_ENABLED=0
export GOFLAGS="-trimpath -buildvcs=false"
cd "$here"
k8s_version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
helm_version="$(go list -m -f '{{.Version}}' helm.sh/helm/v3)"
k8s_minor="$(echo "$k8s_version" | cut -d. -f2)"
build_date="$(go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
ldflags+=" -X helm.sh/helm/v3/internal/version.version=$helm_version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done

cold=true
[[ -d "$GOCACHE" && -n "$(ls -A "$GOCACHE" 2>/dev/null)" ]] && cold=false
tmp="$(mktemp -d "$cache/cluster-bin.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
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
