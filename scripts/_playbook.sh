#!/usr/bin/env bash
# Shared by the guide's commands: parse -i INVENTORY and --help, run a playbook.
# Exit codes: 0 done, 1 usage error, 2 a step failed (the summary names it),
# 3 a host was unreachable, 4 anything else ansible-playbook reports.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
INVENTORY="$REPO/ansible/inventories/lab/hosts.yml"
EXTRA=()

run_playbook() {  # run_playbook PLAYBOOK [ansible-playbook args...]
  local playbook=$1; shift
  [ -x "$REPO/.venv/bin/ansible-playbook" ] || { echo "run tools/bootstrap.sh (or make setup) first" >&2; exit 1; }
  (cd "$REPO/ansible" && "$REPO/.venv/bin/ansible-playbook" -i "$INVENTORY" "$playbook" "$@" "${EXTRA[@]}")
  case $? in
    0) return 0 ;;
    2) echo "$(basename "$0"): a step failed; the summary above names it and its error" >&2; exit 2 ;;
    3|4) echo "$(basename "$0"): a host was unreachable; check the inventory $INVENTORY" >&2; exit 3 ;;
    *) echo "$(basename "$0"): ansible-playbook failed before or outside the steps" >&2; exit 4 ;;
  esac
}

parse_common() {  # sets ARGS (positional) from "$@", handles -i and --help via usage()
  ARGS=()
  while (($#)); do
    case $1 in
      -h|--help) usage; exit 0 ;;
      -i|--inventory) [ $# -ge 2 ] || { usage >&2; exit 1; }; INVENTORY=$(realpath "$2"); shift 2 ;;
      -e) EXTRA+=(-e "$2"); shift 2 ;;
      -*) echo "unknown option $1" >&2; usage >&2; exit 1 ;;
      *) ARGS+=("$1"); shift ;;
    esac
  done
}
