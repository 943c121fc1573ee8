#!/usr/bin/env bash
# What the node tests (pytest -m node, tests/k8s/kubenode.py) need from Debian: the container runtime
# (containerd, runc), the CNI plugins (/usr/lib/cni), buildah and mmdebstrap for the images, iptables and
# iproute2 for kube-proxy and the network namespace, gcc + libc6-dev for the static pause binary.
# Installed when missing (needs root/apt). containerd's own service is not wanted: the tests start their own.
set -euo pipefail
packages=(containerd runc containernetworking-plugins buildah mmdebstrap iptables iproute2 gcc libc6-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install_node_packages: no apt-get here; install ${missing[*]}" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
$SUDO systemctl disable --now containerd 2>/dev/null || true
