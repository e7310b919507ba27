#!/bin/bash
# HyperPod OnCreate lifecycle script (LifeCycleConfig.OnCreate) for the ReelForge AnimateAnyone cluster.
# Upload this directory together with the standard HyperPod Slurm base config (lifecycle_script.py &
# co. from the aws-samples HyperPod lifecycle scripts) and the rendered provisioning_parameters.json to
# s3://$LIFECYCLE_BUCKET/$LIFECYCLE_PREFIX. Order: the base config (Slurm, FSx mount, enroot/pyxis,
# accounting), then ReelForge's node setup. Every value comes from provisioning_parameters.json and
# the node's resource config: nothing account-, region- or file-system-specific is written here.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PARAMS="${PROVISIONING_PARAMETERS_PATH:-$HERE/provisioning_parameters.json}"
RESOURCE_CONFIG="${SAGEMAKER_RESOURCE_CONFIG_PATH:-/opt/ml/config/resource_config.json}"
LOG_DIR="${REELFORGE_LOG_DIR:-/var/log/provision}"
mkdir -p "$LOG_DIR"
exec > >(tee -a "$LOG_DIR/reelforge-on-create.log") 2>&1

[[ -f "$PARAMS" ]] || { echo "provisioning parameters not found: $PARAMS" >&2; exit 1; }
[[ -f "$RESOURCE_CONFIG" ]] || { echo "resource config not found: $RESOURCE_CONFIG" >&2; exit 1; }

if [[ -f "$HERE/lifecycle_script.py" ]]; then
  echo "[reelforge] running the HyperPod base lifecycle configuration"
  python3 -u "$HERE/lifecycle_script.py" -rc "$RESOURCE_CONFIG" -pp "$PARAMS"
else
  echo "[reelforge] no base lifecycle_script.py beside this script: assuming Slurm is configured already"
fi

python3 "$HERE/node_role.py" "$RESOURCE_CONFIG" "$PARAMS" >"$LOG_DIR/reelforge-node.env"
# shellcheck disable=SC1091
source "$LOG_DIR/reelforge-node.env"
echo "[reelforge] this node: group $NODE_GROUP, role $NODE_ROLE"
bash "$HERE/setup_reelforge.sh" "$NODE_ROLE" "$PARAMS"
echo "[reelforge] on_create done"
