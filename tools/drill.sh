#!/usr/bin/env bash
# `make drill`: the disaster-recovery drill on the embedded lab.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python tools/drill.py "$@"
