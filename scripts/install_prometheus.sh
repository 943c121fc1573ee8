#!/usr/bin/env bash
# prometheus and promtool for the monitoring tests: Debian's package, installed when missing (needs root/apt).
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install_prometheus: no apt-get here; install prometheus and promtool (Debian package \`prometheus\`)" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq prometheus >/dev/null
# The package's own service is not wanted: the tests start their own server on loopback.
$SUDO systemctl stop prometheus 2>/dev/null || true
