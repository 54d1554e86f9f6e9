#!/usr/bin/env bash
# ./scripts/verify-backup.sh latest|YYYY-MM-DD|ID [-i INVENTORY]
source "$(dirname "$0")/_playbook.sh"
usage() { echo "usage: $0 latest|YYYY-MM-DD|ID [-i INVENTORY] [-e sample=N | -e restore_test=true]
Verify that backup of every kind (ansible/verify.yml): databases restored into a
throwaway PostgreSQL, files by checksum, configuration by syntax.
Exit codes: 0 verified, 1 usage, 2 a verification failed, 3 unreachable host, 4 other."; }
parse_common "$@"
[ ${#ARGS[@]} -le 1 ] || { usage >&2; exit 1; }
run_playbook verify.yml -e "backup=${ARGS[0]:-latest}"
