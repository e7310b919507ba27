{% include "slurm/animate_anyone/_common.sh" %}
: "${AA_STAGE:?AA_STAGE must be stage1 or stage2}"
: "${AA_OUTPUT_DIR:?AA_OUTPUT_DIR must be set}"
: "${AA_EXP_NAME:?AA_EXP_NAME must be set}"
: "${AA_RUN_KEY:?AA_RUN_KEY must be set}"
: "${AA_MANIFEST:?AA_MANIFEST must be set}"
: "${AA_MLFLOW_TRACKING_URI:?AA_MLFLOW_TRACKING_URI must be set (SageMaker MLflow ARN or http(s) URL)}"
: "${AA_MLFLOW_EXPERIMENT:=reelforge-animate-anyone}"
: "${AA_PAYLOAD:=animate-anyone}"
: "${AA_LAUNCHER:=accelerate}"
export AA_STAGE AA_PAYLOAD AA_LAUNCHER

RUN_DIR="$AA_OUTPUT_DIR/$AA_EXP_NAME"
mkdir -p "$RUN_DIR"
NNODES="${SLURM_JOB_NUM_NODES:-1}"

# Rendezvous: the first node of the allocation, a port derived from the job id (jobs sharing a
# node never collide; every node of this job computes the same one).
# (sed -n 1p, not head: head would close the pipe early and pipefail would end the script)
HEAD_NODE="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)"
HEAD_ADDR="$(scontrol show node "$HEAD_NODE" | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p' | sed -n 1p)"
export AA_MASTER_ADDR="${HEAD_ADDR:-$HEAD_NODE}"
export AA_MASTER_PORT="${AA_MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}"

# MLflow: the tracking server from configuration (SageMaker managed MLflow in production), never a
# local ./mlruns. The run is found by its run key, so a retry continues the same run.
export MLFLOW_TRACKING_URI="$AA_MLFLOW_TRACKING_URI"
export MLFLOW_EXPERIMENT_NAME="$AA_MLFLOW_EXPERIMENT"
RUN_ID="$(srun --nodes=1 --ntasks=1 "${CPUS[@]}" "${CONTAINER[@]}" "$PY" -m reelforge_aa mlflow-run | tail -n 1)"
if [[ ! "$RUN_ID" =~ ^[0-9a-zA-Z-]{8,64}$ ]]; then
  echo "[reelforge] could not get the MLflow run id (got '$RUN_ID')" >&2
  exit 1
fi
export MLFLOW_RUN_ID="$RUN_ID"

echo "[reelforge] $AA_STAGE $AA_EXP_NAME: job ${SLURM_JOB_ID} on $NNODES node(s) ($SLURM_JOB_NODELIST)," \
     "rendezvous $AA_MASTER_ADDR:$AA_MASTER_PORT, MLflow run $MLFLOW_RUN_ID, run dir $RUN_DIR"

# One launcher per node; it works out the resume point, renders the config and execs
# `accelerate launch` / `torchrun` with this node's rank.
srun --nodes="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 "${CPUS[@]}" "${AUTO_RESUME[@]}" \
  "${CONTAINER[@]}" "$PY" -m reelforge_aa launch
echo "[reelforge] $AA_STAGE $AA_EXP_NAME finished"
