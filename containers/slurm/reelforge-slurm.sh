#!/usr/bin/env bash
# Entrypoint of ReelForge's local Slurm images (docker-compose.yaml).
#
#   reelforge-slurm keys               create the munge key, the head's SSH host key and Airflow's client key
#                                      in the mounted volumes (only what is missing), and the pinned known_hosts
#   reelforge-slurm head               munged + slurmctld + sshd: the login node Airflow reaches as `slurm_ssh`
#   reelforge-slurm compute            munged + slurmd: a compute node (runs the SR worker venv)
#   reelforge-slurm health head|compute   container healthcheck
#   reelforge-slurm render-config DIR  only write slurm.conf into DIR (no root, no daemons; used by the tests)
#   reelforge-slurm CMD...             run CMD (e.g. `reelforge-sr --help` on the compute image)
#
# sshd and slurmd need root (sshd switches to the logged-in user, slurmd starts each job as its owner),
# so compose runs these containers as root. munged runs as `munge`, slurmctld as `slurm`; jobs and SSH
# sessions run as the cluster user `reelforge`, which has no password and no sudo.
set -euo pipefail

: "${REELFORGE_SLURM_CLUSTER:=reelforge}"
: "${REELFORGE_SLURM_HEAD:=slurm-head}"          # the head's hostname (= compose service name)
: "${REELFORGE_SLURM_NODES:=slurm-n1}"           # compute hostnames (= compose service names), space separated
: "${REELFORGE_SLURM_CPUS_PER_NODE:=2}"
: "${REELFORGE_SLURM_MEMORY_MB:=4000}"
: "${REELFORGE_SHARED_DIR:=/shared}"             # shared storage, like ParallelCluster's /shared or /fsx
: "${REELFORGE_AWS_ENDPOINT_URL:=}"              # local AWS endpoint for jobs (moto); empty: boto3 defaults
: "${REELFORGE_MUNGE_KEY_DIR:=/etc/reelforge/munge}"   # munge.key
: "${REELFORGE_HEAD_SSH_DIR:=/etc/reelforge/ssh}"      # head host key + authorized_keys
: "${REELFORGE_CLIENT_SSH_DIR:=/etc/reelforge/client}" # Airflow's private key + known_hosts
: "${AIRFLOW_UID:=50000}"
: "${AIRFLOW_GID:=0}"

CLUSTER_USER=reelforge
PIDS=()

log() { printf '[reelforge-slurm] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
need_root() { [[ $EUID -eq 0 ]] || die "$1 needs root (compose runs this service with user: \"0:0\")"; }

nodes() {  # the compute node names, validated
  local n
  [[ -n "${REELFORGE_SLURM_NODES// /}" ]] || die "REELFORGE_SLURM_NODES is empty"
  for n in $REELFORGE_SLURM_NODES; do
    [[ "$n" =~ ^[a-z][a-z0-9-]{0,62}$ ]] || die "invalid node name '$n'"
    echo "$n"
  done
}

render_config() {  # render_config DIR: slurm.conf for the head and every node (identical everywhere)
  local dir="$1" n list
  list="$(nodes)"
  [[ "$REELFORGE_SLURM_HEAD" =~ ^[a-z][a-z0-9-]{0,62}$ ]] || die "invalid head name '$REELFORGE_SLURM_HEAD'"
  [[ "$REELFORGE_SLURM_CLUSTER" =~ ^[a-z][a-z0-9_]{0,39}$ ]] || die "invalid cluster name"
  [[ "$REELFORGE_SLURM_CPUS_PER_NODE" =~ ^[1-9][0-9]*$ ]] || die "REELFORGE_SLURM_CPUS_PER_NODE must be a number"
  [[ "$REELFORGE_SLURM_MEMORY_MB" =~ ^[1-9][0-9]*$ ]] || die "REELFORGE_SLURM_MEMORY_MB must be a number"
  mkdir -p "$dir"
  {
    cat <<CONF
# Written by reelforge-slurm at container start: ReelForge's local Slurm cluster (docker compose).
ClusterName=${REELFORGE_SLURM_CLUSTER}
SlurmctldHost=${REELFORGE_SLURM_HEAD}
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
# No cgroups in an unprivileged container: track processes by parent, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
# Nodes may declare more CPUs/memory than the container sees (a laptop is small).
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
MailProg=/bin/true
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
CONF
    for n in $list; do
      echo "NodeName=${n} CPUs=${REELFORGE_SLURM_CPUS_PER_NODE} RealMemory=${REELFORGE_SLURM_MEMORY_MB} State=UNKNOWN"
    done
    # As on the native local stack: both partitions span all nodes; without a GPU the SR worker
    # (--device auto) runs the gpu partition's steps on the CPU.
    echo "PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
    echo "PartitionName=gpu Nodes=ALL Default=NO MaxTime=INFINITE State=UP"
  } >"$dir/slurm.conf.new"
  mv "$dir/slurm.conf.new" "$dir/slurm.conf"
}

new_ed25519() {  # new_ed25519 PATH COMMENT: create PATH and PATH.pub unless PATH exists
  local path="$1" tmp
  [[ -s "$path" && -s "$path.pub" ]] && return 0
  tmp="$(mktemp -d "$(dirname "$path")/.keygen.XXXXXX")"
  ssh-keygen -q -t ed25519 -N '' -C "$2" -f "$tmp/key"
  mv "$tmp/key.pub" "$path.pub" && mv "$tmp/key" "$path"
  rmdir "$tmp"
}

cmd_keys() {  # idempotent: keeps existing keys, so a restart never changes the pinned host key
  local m="$REELFORGE_MUNGE_KEY_DIR" h="$REELFORGE_HEAD_SSH_DIR" c="$REELFORGE_CLIENT_SSH_DIR"
  mkdir -p "$m" "$h" "$c"
  chmod 0700 "$m" "$h"
  if [[ ! -s "$m/munge.key" ]]; then
    log "creating the munge key"
    if command -v mungekey >/dev/null; then mungekey --create --keyfile="$m/munge.key.new"
    else dd if=/dev/urandom of="$m/munge.key.new" bs=1024 count=1 status=none; fi
    mv "$m/munge.key.new" "$m/munge.key"
  fi
  chmod 0400 "$m/munge.key"
  [[ -s "$h/ssh_host_ed25519_key" ]] || log "creating the head node's SSH host key"
  new_ed25519 "$h/ssh_host_ed25519_key" "$REELFORGE_SLURM_HEAD"
  [[ -s "$c/id_ed25519" ]] || log "creating Airflow's SSH key for $CLUSTER_USER@$REELFORGE_SLURM_HEAD"
  new_ed25519 "$c/id_ed25519" "reelforge-airflow"
  install -m 0644 "$c/id_ed25519.pub" "$h/authorized_keys"
  # The pin is written from the key file itself, never learnt over the network (no trust on first use).
  printf '%s %s\n' "$REELFORGE_SLURM_HEAD" "$(cut -d' ' -f1,2 "$h/ssh_host_ed25519_key.pub")" >"$c/known_hosts.new"
  mv "$c/known_hosts.new" "$c/known_hosts"
  chown -R "$AIRFLOW_UID:$AIRFLOW_GID" "$c"
  chmod 0750 "$c" && chmod 0600 "$c/id_ed25519" && chmod 0644 "$c/id_ed25519.pub" "$c/known_hosts"
  log "host key: $(ssh-keygen -lf "$h/ssh_host_ed25519_key.pub")"
}

setup_common() {  # slurm.conf, munge key, munged, the cluster user's AWS settings, shared storage
  render_config /etc/slurm
  [[ -s "$REELFORGE_MUNGE_KEY_DIR/munge.key" ]] || die "no munge key in $REELFORGE_MUNGE_KEY_DIR (run the slurm-keys service first)"
  install -d -m 0700 -o munge -g munge /etc/munge /var/lib/munge /var/log/munge
  install -d -m 0755 -o munge -g munge /run/munge
  install -m 0400 -o munge -g munge "$REELFORGE_MUNGE_KEY_DIR/munge.key" /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged --foreground &
  PIDS+=($!)
  local i
  for ((i = 0; i < 50; i++)); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
  munge -n | unmunge >/dev/null || die "munged did not start"
  install -d -m 0755 -o slurm -g slurm /run/slurm
  local home
  home="$(getent passwd "$CLUSTER_USER" | cut -d: -f6)"
  if [[ -n "$REELFORGE_AWS_ENDPOINT_URL" ]]; then
    # Jobs reach S3 through the local endpoint; the keys are moto's documented dummy values, not credentials.
    install -d -m 0700 -o "$CLUSTER_USER" -g "$CLUSTER_USER" "$home/.aws"
    printf '[default]\nregion = us-east-1\nendpoint_url = %s\n' "$REELFORGE_AWS_ENDPOINT_URL" >"$home/.aws/config"
    printf '[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n' >"$home/.aws/credentials"
    chown "$CLUSTER_USER:$CLUSTER_USER" "$home/.aws/config" "$home/.aws/credentials"
    chmod 0600 "$home/.aws/credentials"
  fi
  install -d -m 0755 -o "$CLUSTER_USER" -g "$CLUSTER_USER" "$REELFORGE_SHARED_DIR/reelforge" "$REELFORGE_SHARED_DIR/models"
}

supervise() {  # the first daemon to exit stops the container; `restart: always` brings it back
  local rc=0
  trap 'kill -TERM "${PIDS[@]}" 2>/dev/null || true' TERM INT
  wait -n "${PIDS[@]}" || rc=$?
  log "a daemon exited (status $rc): stopping the others"
  kill -TERM "${PIDS[@]}" 2>/dev/null || true
  wait || true
  exit $((rc ? rc : 1))
}

cmd_head() {
  need_root "the head node (sshd)"
  setup_common
  local home
  home="$(getent passwd "$CLUSTER_USER" | cut -d: -f6)"
  [[ -s "$REELFORGE_HEAD_SSH_DIR/ssh_host_ed25519_key" ]] || die "no host key in $REELFORGE_HEAD_SSH_DIR"
  install -m 0600 -o root -g root "$REELFORGE_HEAD_SSH_DIR/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
  install -m 0644 -o root -g root "$REELFORGE_HEAD_SSH_DIR/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
  install -d -m 0700 -o "$CLUSTER_USER" -g "$CLUSTER_USER" "$home/.ssh"
  install -m 0600 -o "$CLUSTER_USER" -g "$CLUSTER_USER" "$REELFORGE_HEAD_SSH_DIR/authorized_keys" "$home/.ssh/authorized_keys"
  install -d -m 0755 /run/sshd
  install -d -m 0700 -o slurm -g slurm /var/spool/slurmctld
  chown -R slurm:slurm /var/spool/slurmctld
  /usr/sbin/sshd -t
  log "starting slurmctld and sshd on ${HOSTNAME%%.*}"
  runuser -u slurm -- /usr/sbin/slurmctld -D &
  PIDS+=($!)
  /usr/sbin/sshd -D -e &
  PIDS+=($!)
  supervise
}

cmd_compute() {
  need_root "slurmd"
  local me="${HOSTNAME%%.*}" list
  list="$(nodes)"
  [[ " ${list//$'\n'/ } " == *" $me "* ]] || die "hostname $me is not in REELFORGE_SLURM_NODES ($REELFORGE_SLURM_NODES)"
  setup_common
  install -d -m 0755 /var/spool/slurmd
  log "starting slurmd $me"
  /usr/sbin/slurmd -D -N "$me" &
  PIDS+=($!)
  supervise
}

cmd_health() {
  munge -n | unmunge >/dev/null
  case "${1:-}" in
    head)
      scontrol ping | grep -q 'is UP'
      # sshd answers with exactly the host key Airflow pins.
      ssh-keyscan -t ed25519 127.0.0.1 2>/dev/null | grep -qF "$(cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub)" ;;
    compute)
      local state
      state="$(sinfo -h -N -n "${HOSTNAME%%.*}" -o '%t')"
      state="${state%%$'\n'*}"
      # A registered, usable node; suffixes such as `*` (not responding) make it unhealthy.
      [[ "$state" =~ ^(idle|mix|alloc|comp)$ ]] ;;
    *) die "usage: reelforge-slurm health head|compute" ;;
  esac
}

main() {
  local cmd="${1:-help}"
  case "$cmd" in
    keys) cmd_keys ;;
    head) cmd_head ;;
    compute) cmd_compute ;;
    health) shift; cmd_health "$@" ;;
    render-config) [[ -n "${2:-}" ]] || die "usage: reelforge-slurm render-config DIR"; render_config "$2" ;;
    help|-h|--help) sed -n '2,15p' "$0" ;;
    *) exec "$@" ;;
  esac
}
main "$@"
