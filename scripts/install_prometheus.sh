#!/usr/bin/env bash
# prometheus and promtool for the monitoring tests: Debian's package, installed when missing (needs root/apt).
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
bash "$(dirname "$0")/apt_install.sh" prometheus >/dev/null
# The package's own service is not wanted: the tests start their own server on loopback.
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO systemctl stop prometheus 2>/dev/null || true
