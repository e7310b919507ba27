#!/usr/bin/env bash
# ReelForge GPU check, one command, on a machine with an NVIDIA GPU (run from the repository root after
# `make stack`, or at least `make venv`, with the weights in REELFORGE_MODEL_DIR or ../shared/data/models):
#
#   1. the CUDA/fp16 path of the SR engine (channels_last): model-only and worker end-to-end frames/s at
#      160x90, 320x180 and 640x360, beside the frame-by-frame fp32 baseline on the same GPU;
#   2. the same end to end with NVENC (h264_nvenc) where this ffmpeg has it;
#   3. the Slurm scaling figure: 3 local nodes x 4 CPUs each (a 16-core host), 1 -> 2 -> 3 nodes.
#
# It prints figures and ratios; it asserts nothing. Override with the variables below.
set -euo pipefail

: "${PYTHON:=.venv/bin/python}"
: "${DEVICE:=cuda}"
: "${PRECISION:=fp16}"
: "${REPEATS:=3}"
: "${SCALING_CPUS:=4}"
: "${SCALING_SECONDS:=24}"

cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PYTHON" - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device: install a CUDA build of torch for this GPU")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PY

COMMON=(--device "$DEVICE" --precision "$PRECISION" --repeats "$REPEATS" --large)
echo "== 1. CUDA $PRECISION, channels_last, libx264 =="
"$PYTHON" bench/sr_throughput.py "${COMMON[@]}"

echo "== 2. NVENC =="
if ffmpeg -hide_banner -encoders 2>/dev/null | grep -q h264_nvenc; then
  "$PYTHON" bench/sr_throughput.py "${COMMON[@]}" --codec h264_nvenc
else
  echo "this ffmpeg has no h264_nvenc (Debian's is built without it): skipped"
fi

echo "== 3. Slurm scaling, 3 nodes x $SCALING_CPUS CPUs =="
# the local cluster with 4 CPUs per node (slurm.conf is rewritten and Slurm restarted), then back as it was
REELFORGE_SLURM_NODES=3 REELFORGE_SLURM_CPUS_PER_NODE="$SCALING_CPUS" bash scripts/local-stack up
trap 'bash scripts/local-stack up >/dev/null' EXIT
# shellcheck disable=SC1091
source .local-stack/env.sh
"$PYTHON" bench/scaling.py --seconds "$SCALING_SECONDS" --cpus-per-task "$SCALING_CPUS"
