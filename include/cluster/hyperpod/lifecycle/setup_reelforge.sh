#!/bin/bash
# ReelForge's part of a HyperPod node: the cluster user Airflow logs in as, shared directories,
# and a readiness check of what the AnimateAnyone jobs need (FSx, Slurm, pyxis).
#   setup_reelforge.sh ROLE PROVISIONING_PARAMETERS     (ROLE: controller | login | worker)
set -euo pipefail

ROLE="${1:?usage: setup_reelforge.sh controller|login|worker PROVISIONING_PARAMETERS}"
PARAMS="${2:?usage: setup_reelforge.sh ROLE PROVISIONING_PARAMETERS}"
param() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["reelforge"][sys.argv[2]])' "$PARAMS" "$1"; }

USER_NAME="$(param cluster_user)"
USER_UID="$(param cluster_user_uid)"
WORK_ROOT="$(param work_root)"
IMAGE_DIR="$(param image_dir)"
PUBKEY="$(param airflow_public_key)"

# The same user (same uid) on every node: jobs write to FSx as this user.
if ! id "$USER_NAME" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash --uid "$USER_UID" "$USER_NAME"
fi

# Only the login (or, without one, the controller) node accepts Airflow's SSH key; sshd is reached
# through SSM (aws ssm start-session ... AWS-StartSSHSession), so no inbound port is opened.
if [[ "$ROLE" == login || "$ROLE" == controller ]]; then
  home="$(getent passwd "$USER_NAME" | cut -d: -f6)"
  install -d -m 700 -o "$USER_NAME" -g "$USER_NAME" "$home/.ssh"
  keys="$home/.ssh/authorized_keys"
  touch "$keys"
  grep -qxF "$PUBKEY" "$keys" || printf '%s\n' "$PUBKEY" >>"$keys"
  chown "$USER_NAME:$USER_NAME" "$keys"
  chmod 600 "$keys"
fi

# Shared directories on FSx (mounted by the base configuration).
if mountpoint -q /fsx; then
  if [[ "$ROLE" == controller ]]; then
    install -d -m 755 -o "$USER_NAME" -g "$USER_NAME" "$WORK_ROOT" "$IMAGE_DIR"
  fi
else
  echo "[reelforge] WARNING: /fsx is not mounted; jobs need the shared file system" >&2
fi

# What the sbatch scripts rely on.
command -v srun >/dev/null || { echo "[reelforge] srun not found: Slurm is not set up" >&2; exit 1; }
SRUN_HELP="$(srun --help 2>&1 || true)"
if [[ "$ROLE" == worker && "$SRUN_HELP" != *--container-image* ]]; then
  echo "[reelforge] WARNING: pyxis (srun --container-image) not available; jobs fall back to a venv" >&2
fi
echo "[reelforge] node setup done ($ROLE)"
