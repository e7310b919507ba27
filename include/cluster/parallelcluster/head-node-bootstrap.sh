#!/bin/bash
# ParallelCluster OnNodeConfigured action: install the ReelForge SR worker environment on every node.
#   $1 reelforge version (wheel version), $2 s3:// prefix holding reelforge_sr-<version>-*.whl
set -euo pipefail

: "${1:?usage: head-node-bootstrap.sh VERSION S3_WHEEL_PREFIX}"
: "${2:?usage: head-node-bootstrap.sh VERSION S3_WHEEL_PREFIX}"
VERSION="$1"
WHEELS="$2"
: "${VENV:=/opt/reelforge/worker-venv}"
: "${TORCH_INDEX:=https://download.pytorch.org/whl/cu124}"

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends ffmpeg python3-venv python3-pip awscli

python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# CUDA build of PyTorch on GPU nodes, the CPU build elsewhere.
if command -v nvidia-smi >/dev/null 2>&1; then
  "$VENV/bin/pip" install -q --index-url "$TORCH_INDEX" "torch==2.6.*"
else
  "$VENV/bin/pip" install -q --index-url https://download.pytorch.org/whl/cpu "torch==2.6.*"
fi
TMP="$(mktemp -d)"
aws s3 cp --recursive --exclude '*' --include "reelforge_sr-${VERSION}-*.whl" "$WHEELS" "$TMP/"
"$VENV/bin/pip" install -q "$TMP"/reelforge_sr-"${VERSION}"-*.whl
rm -rf "$TMP"
chmod -R a+rX "$VENV"
"$VENV/bin/reelforge-sr" --help >/dev/null
echo "reelforge-sr ${VERSION} installed in ${VENV}"
