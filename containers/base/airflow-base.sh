#!/usr/bin/env bash
# Runs inside reelforge/debian:bookworm (scripts/local-docker bases --all) and becomes reelforge/airflow-base:
# a stand-in for apache/airflow:<version>-python3.11 with the same user (airflow, 50000:0), home, AIRFLOW_HOME
# and a venv in ~/.local whose bin/ is first on PATH, so `pip install` as airflow works as in the official image.
# Airflow itself comes from the project's requirements.txt (pinned apache-airflow) in containers/airflow.
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
apt-get update
apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc libc6-dev ca-certificates \
  curl procps tini
rm -rf /var/lib/apt/lists/*
useradd --uid 50000 --gid 0 --create-home --home-dir /home/airflow --shell /bin/bash airflow
install -m 0755 /ctx/airflow-entrypoint.sh /entrypoint
install -d -o airflow -g 0 -m 0775 /opt/airflow /opt/airflow/dags /opt/airflow/plugins /opt/airflow/logs
runuser -u airflow -- python3 -m venv /home/airflow/.local
runuser -u airflow -- /home/airflow/.local/bin/pip install -q --no-cache-dir --upgrade pip
