#!/usr/bin/env bash
# `make test`: the real-node tests (pytest -m node: mostly waiting on pods and the API) run beside all the others
# (mostly CPU), so that the two share the wall clock; each writes its own report, the node's is printed after.
# The 30 slowest of the others are listed (the warm-CI budget is 15 minutes).
# Exit status: non-zero when either failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export GODRUN_REQUIRE_TOOLS=1
log=$(mktemp -t godrun-node-tests.XXXXXX)
start=$(date +%s)
.venv/bin/python -m pytest -q -m node "$@" >"$log" 2>&1 &
node_pid=$!
.venv/bin/python -m pytest -q -m "not node" --durations=30 "$@"
rest=$?
wait "$node_pid"
node=$?
echo "== real-node tests (pytest -m node), run beside the others:"
cat "$log"
rm -f "$log"
echo "== make test: $(( $(date +%s) - start )) s; not node: exit $rest; node: exit $node"
[ "$rest" -eq 0 ] && [ "$node" -eq 0 ]
