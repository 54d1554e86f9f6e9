#!/usr/bin/env bash
# ./scripts/backup.sh database|files|config|code|all [-i INVENTORY]
source "$(dirname "$0")/_playbook.sh"
usage() { echo "usage: $0 database|files|config|code|all [-i INVENTORY] [-e VAR=VALUE]
Back up into the primary and secondary repositories (ansible/backup.yml).
Exit codes: 0 done, 1 usage, 2 a step failed, 3 unreachable host, 4 other."; }
parse_common "$@"
[ ${#ARGS[@]} -eq 1 ] && [[ ${ARGS[0]} =~ ^(database|files|config|code|all)$ ]] || { usage >&2; exit 1; }
run_playbook backup.yml -e "kind=${ARGS[0]}"
