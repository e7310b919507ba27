#!/usr/bin/env bash
# Runs inside reelforge/debian:bookworm (scripts/local-docker bases) and becomes reelforge/torch-cpu:<version>,
# the local stand-in for the CUDA PyTorch bases (pytorch/pytorch, NGC, AWS DLCs) of the model images.
# Everything lands in Debian's Python 3.11 (system site; PIP_BREAK_SYSTEM_PACKAGES=1 in the image), so `python`
# and `pip` behave as in those bases and `python3 -m venv --system-site-packages` venvs see torch.
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
apt-get update
# git: the images clone upstream code in production; ffmpeg 5.1 (reelforge-sr needs >= 5.1); libgl1/libglib2.0-0: OpenCV.
apt-get install -y --no-install-recommends python3 python3-pip python3-venv python-is-python3 ca-certificates \
  git ffmpeg libgl1 libglib2.0-0 procps curl
rm -rf /var/lib/apt/lists/*
# The wheel is the only file in /ctx named torch-*.whl; pins as containers/sr/requirements.txt.
pip install /ctx/torch-*.whl numpy==2.4.6 pillow==12.0.0 boto3==1.43.117
# PIP_CONSTRAINT (set in the image) holds torch at this build in every later `pip install`: a requirement that
# wants another torch fails the build instead of pulling PyPI's multi-GB CUDA torch.
mkdir -p /etc/reelforge
python -c 'import torch; print("torch==" + torch.__version__)' >/etc/reelforge/pip-constraints.txt
# Like mwader/static-ffmpeg, the base offers /ffmpeg and /ffprobe (containers/sr copies them from FFMPEG_IMAGE).
ln -sf /usr/bin/ffmpeg /ffmpeg && ln -sf /usr/bin/ffprobe /ffprobe
python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
find /usr/local/lib/python3.11 -name __pycache__ -prune -exec rm -rf {} + || true
