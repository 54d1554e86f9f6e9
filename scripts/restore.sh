#!/usr/bin/env bash
# ./scripts/restore.sh database|files|config|code latest|YYYY-MM-DD|ID [-i INVENTORY]
# ./scripts/restore.sh database YYYY-MM-DDTHH:MM:SS+00:00   (point in time, from WAL)
source "$(dirname "$0")/_playbook.sh"
usage() { echo "usage: $0 database|files|config|code latest|YYYY-MM-DD|ID [-i INVENTORY]
       $0 database YYYY-MM-DDTHH:MM:SS+00:00 [-i INVENTORY]   (point in time)
The guide's restore (ansible/restore.yml): stop services, safety backup, restore,
verify, restart. A time with a zone recovers the database to that moment from
the newest base backup before it and the archived WAL. Exit codes: 0 restored, 1 usage, 2 a step failed (what was
there is left as it was), 3 unreachable host, 4 other."; }
parse_common "$@"
[ ${#ARGS[@]} -eq 2 ] && [[ ${ARGS[0]} =~ ^(database|files|config|code)$ ]] || { usage >&2; exit 1; }
if [[ ${ARGS[1]} =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T.*([+-][0-9]{2}:?[0-9]{2}|Z)$ ]]; then
  [ "${ARGS[0]}" = database ] || { echo "a point in time is for the database only" >&2; exit 1; }
  run_playbook restore.yml -e kind=database -e "target_time=${ARGS[1]}"
else
  run_playbook restore.yml -e "kind=${ARGS[0]}" -e "backup=${ARGS[1]}"
fi
