#!/usr/bin/env bash
# ./scripts/restore.sh database|files|config|code latest|YYYY-MM-DD|ID [-i INVENTORY]
source "$(dirname "$0")/_playbook.sh"
usage() { echo "usage: $0 database|files|config|code latest|YYYY-MM-DD|ID [-i INVENTORY]
The guide's restore (ansible/restore.yml): stop services, safety backup, restore,
verify, restart. Exit codes: 0 restored, 1 usage, 2 a step failed (what was
there is left as it was), 3 unreachable host, 4 other."; }
parse_common "$@"
[ ${#ARGS[@]} -eq 2 ] && [[ ${ARGS[0]} =~ ^(database|files|config|code)$ ]] || { usage >&2; exit 1; }
run_playbook restore.yml -e "kind=${ARGS[0]}" -e "backup=${ARGS[1]}"
