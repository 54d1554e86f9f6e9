#!/usr/bin/env bash
# ./scripts/disaster-recovery.sh [-i INVENTORY] [--provision] [BACKUP]
source "$(dirname "$0")/_playbook.sh"
usage() { echo "usage: $0 [-i INVENTORY] [--provision] [latest|YYYY-MM-DD|ID]
Complete system restoration (ansible/disaster_recovery.yml): provision if asked,
restore code, configuration, database, uploads, verify, test, switch traffic.
Writes var/reports/dr-plan.md. Exit codes: 0 recovered, 1 usage, 2 a step failed
(traffic was not switched), 3 unreachable host, 4 other."; }
provision=false; rest=()
for arg in "$@"; do [ "$arg" = --provision ] && provision=true || rest+=("$arg"); done
parse_common "${rest[@]}"
[ ${#ARGS[@]} -le 1 ] || { usage >&2; exit 1; }
run_playbook disaster_recovery.yml -e "provision=$provision" -e "backup=${ARGS[0]:-latest}"
