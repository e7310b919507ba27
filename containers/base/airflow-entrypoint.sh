#!/usr/bin/env bash
# Local stand-in for the official Airflow image's /entrypoint (reelforge/airflow-base): `docker run IMAGE version`
# runs `airflow version`; `bash ...` or `python ...` run as given.
set -euo pipefail
if (($# == 0)); then exec airflow --help; fi
case "$1" in
  bash|python|python3|/*) exec "$@" ;;
  *) exec airflow "$@" ;;
esac
