# --- shared by the AnimateAnyone sbatch scripts (inlined by Jinja's include at render time) --------
set -euo pipefail

: "${AA_VENV:=/opt/reelforge/animate-anyone-venv}"   # used when no container image is configured
: "${AA_IMAGE:=}"                                    # enroot/pyxis image (ECR URI or .sqsh on FSx)
: "${AA_CONTAINER_MOUNTS:=/fsx:/fsx}"
: "${AA_AUTO_RESUME:=auto}"                          # HyperPod --auto-resume: auto / on / off

# Every srun step runs in the image when one is configured (pyxis), else with the venv's Python.
if [[ -n "$AA_IMAGE" ]]; then
  PY=python
  CONTAINER=(--container-image="$AA_IMAGE" --container-mounts="$AA_CONTAINER_MOUNTS" --no-container-mount-home)
else
  PY="$AA_VENV/bin/python"
  CONTAINER=()
fi
CPUS=(--cpus-per-task="${SLURM_CPUS_PER_TASK:-1}")

# HyperPod's Slurm understands `srun --auto-resume=1`: a faulty node is replaced and the step is
# started again (the launcher then resumes from the newest complete checkpoint).
AUTO_RESUME=()
case "$AA_AUTO_RESUME" in
  on) AUTO_RESUME=(--auto-resume=1) ;;
  auto)
    if [[ -d /opt/sagemaker_cluster ]]; then
      SRUN_HELP="$(srun --help 2>&1 || true)"
      if [[ "$SRUN_HELP" == *--auto-resume* ]]; then AUTO_RESUME=(--auto-resume=1); fi
    fi ;;
  off) ;;
  *) echo "[reelforge] AA_AUTO_RESUME must be auto, on or off" >&2; exit 2 ;;
esac
# --- end of shared part ------------------------------------------------------------------------------
