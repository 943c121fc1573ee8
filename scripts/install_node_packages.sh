#!/usr/bin/env bash
# What the node tests (pytest -m node, tests/k8s/kubenode.py) need from Debian: the container runtime
# (containerd, runc), the CNI plugins (/usr/lib/cni), buildah and mmdebstrap for the images, iptables and
# iproute2 for kube-proxy and the network namespace, gcc + libc6-dev for the static pause binary.
# Installed when missing (needs root/apt).
set -euo pipefail
packages=(containerd runc containernetworking-plugins buildah mmdebstrap iptables iproute2 gcc libc6-dev)
installed=" $(bash "$(dirname "$0")/apt_install.sh" "${packages[@]}") "
# containerd's own service, when this install just started it, is not wanted: the tests start their own.
if [[ "$installed" == *" containerd "* ]]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO systemctl disable --now containerd 2>/dev/null || true
fi
