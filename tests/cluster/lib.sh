# Shared by build.sh and build_node.sh (sourced, not run): a stamp-keyed, locked, cached Go build of one
# binary set into $bin. The caller sets here, cache, bin, binaries=(...) and want (its sources' hash).

binaries_current() {
  local b
  [[ -f "$bin/.stamp" && "$(cat "$bin/.stamp")" == "$want" ]] || return 1
  for b in "${binaries[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

# Exits 0 when the set is current (also after waiting for another build to finish), or when Go is missing
# and GODRUN_REQUIRE_CLUSTER is not 1 (its tests then skip); otherwise returns holding the lock, with the Go
# caches exported and $tmp a fresh build folder removed on exit.
begin_build() {
  local name="$1"
  if binaries_current; then
    echo "$name: current in $bin"
    exit 0
  fi
  if ! command -v go >/dev/null 2>&1; then
    echo "$name: Go not found; its tests will skip (install Go >= 1.26 to build $bin)" >&2
    [[ "${GODRUN_REQUIRE_CLUSTER:-0}" == 1 ]] && exit 1
    exit 0
  fi
  mkdir -p "$bin"
  exec 9>"$cache/$name.lock"
  flock 9
  if binaries_current; then # another build finished while this one waited for the lock
    echo "$name: current in $bin"
    exit 0
  fi
  export GOMODCACHE="$cache/go-mod" GOCACHE="$cache/go-build" CGO_ENABLED=0
  export GOFLAGS="-trimpath -buildvcs=false"
  cold=true
  [[ -d "$GOCACHE" && -n "$(ls -A "$GOCACHE" 2>/dev/null)" ]] && cold=false
  tmp="$(mktemp -d "$cache/$name.tmp.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
}

# -ldflags stamping the Kubernetes version of the module in the current folder into its binaries.
k8s_ldflags() {
  local version minor date pkg flags="-s -w"
  version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
  minor="$(echo "$version" | cut -d. -f2)"
  date="$(go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  echo "$flags"
}
