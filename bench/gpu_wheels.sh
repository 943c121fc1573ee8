#!/usr/bin/env bash
# Download (here) the wheels bench/gpu.sh needs on the GPU machine, whose image lacks pydantic & pywavelets.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
for pkg in pydantic==2.13.4 pydantic-core==2.46.4 annotated-types typing-inspection pywavelets; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$pkg"
done
ls -la .whl
