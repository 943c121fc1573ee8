#!/usr/bin/env bash
# Create (or update) the project's virtualenv and link it as ./.venv.
# It lives in a cache outside the checkout (GODRUN_CACHE, default ~/.cache/godrun) so CI's fresh
# clones reuse one install of torch; dependencies are reinstalled only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${GODRUN_CACHE:-$HOME/.cache/godrun}
venv="$cache/venv"
stamp="$venv/.pyproject-sha256"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv (first time downloads torch: several minutes)"
  mkdir -p "$cache"
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing dependencies into $venv"
  "$venv/bin/pip" install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
"$venv/bin/pip" install -q --no-deps -e . >/dev/null
ln -sfn "$venv" .venv
echo "setup: ready (.venv -> $venv)"
