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

stamp_of_sources() {
  (cd "$here" && cat build_node.sh node/go.mod node/go.sum coredns/go.mod coredns/go.sum coredns/main.go) |
    sha256sum | cut -d' ' -f1
}

binaries_current() {
  local want="$1" b
  [[ -f "$bin/.stamp" && "$(cat "$bin/.stamp")" == "$want" ]] || return 1
  for b in "${binaries[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

want="$(stamp_of_sources)"
if binaries_current "$want"; then
  echo "node-bin: current in $bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "node-bin: Go not found; node tests will skip (install Go >= 1.26 to build $bin)" >&2
  [[ "${GODRUN_REQUIRE_CLUSTER:-0}" == 1 ]] && exit 1
  exit 0
fi

mkdir -p "$bin"
exec 9>"$cache/node-bin.lock"
flock 9
if binaries_current "$want"; then
  echo "node-bin: current in $bin"
  exit 0
fi

export GOMODCACHE="$cache/go-mod" GOCACHE="$cache/go-build" CGO_ENABLED=0
export GOFLAGS="-trimpath -buildvcs=false"
jobs="${GODRUN_BUILD_JOBS:-2}"
tmp="$(mktemp -d "$cache/node-bin.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

cd "$here/node"
k8s_version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
k8s_minor="$(echo "$k8s_version" | cut -d. -f2)"
build_date="$(go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

# One JSON line per binary set; bench/cluster.py-style cold = the Go build cache was empty.
record() {
  printf '{"set": "%s", "seconds": %d, "cold": %s, "version": "%s", "finished": "%s"}\n' \
    "$1" "$2" "$3" "$4" "$(date -u +%FT%TZ)" >>"$bin/.builds.jsonl"
}
cold=true
[[ -d "$GOCACHE" && -n "$(ls -A "$GOCACHE" 2>/dev/null)" ]] && cold=false

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
