#!/usr/bin/env bash
# What `make test` needs before it runs, in three chains side by side, so that the downloads and package
# installs (network and disk) overlap the Go builds (CPU): the control plane then the node's binaries (the
# second reuses the first's Go build cache, so never both at once), the venv then Kueue's controller, and
# the Debian packages (one apt at a time). Each line is prefixed with its chain; exits non-zero when a chain
# fails, after the others have finished. Every step is a no-op when its cached result is current.
set -uo pipefail
cd "$(dirname "$0")/.."

chain() {
  local name=$1 target
  shift
  for target in "$@"; do
    make --no-print-directory "$target" 2>&1 | sed -u "s/^/[$name] /"
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "[$name] make $target failed"; return 1; }
  done
}

start=$(date +%s)
chain go cluster-bin node-bin &
go_pid=$!
chain python setup kueue-bin &
py_pid=$!
chain debian node-packages prometheus &
deb_pid=$!
status=0
for pid in $go_pid $py_pid $deb_pid; do
  wait "$pid" || status=1
done
echo "prepare_tools: $(($(date +%s) - start)) s, exit $status"
exit $status
