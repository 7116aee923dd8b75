#!/usr/bin/env bash
# The main job: set up .venv, then RL on the default CPU recipe (builds and caches the
# warm-started tiny model on first use). Extra arguments are recipe overrides (key=value).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/rlvr train recipes/arith-tiny.yaml "$@"
