#!/usr/bin/env bash
# `make drill`: the quarterly disaster-recovery drill, playbook-driven, on the
# embedded lab (SCALE=1 by default: about 1 GB of database, 1.5 GB of uploads;
# STORAGE=s3 keeps the backups in the lab's S3/KMS, moto's server on loopback).
# The report goes to var/reports/drill-<time>.md and .html, the plan to
# var/reports/dr-plan.md.
set -euo pipefail
cd "$(dirname "$0")/../ansible"
args=()
[ -n "${SCALE:-}" ] && args+=(-e "drill_scale=$SCALE")
[ -n "${STORAGE:-}" ] && args+=(-e "drill_storage=$STORAGE")
[ -n "${DRILL_WRITE_SECONDS:-}" ] && args+=(-e "drill_write_seconds=$DRILL_WRITE_SECONDS")
exec ../.venv/bin/ansible-playbook dr_drill.yml "${args[@]}" "$@"
