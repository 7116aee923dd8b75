#!/usr/bin/env bash
# Set up .venv and run every test tier CI runs: unit, e2e (Ray + DeepSpeed), packaging
# (resolves the [gpu] extra against PyPI), vllm_api (the real vllm in .venv-vllm) and gpu
# (skipped without CUDA). Pass pytest arguments to narrow it, e.g. scripts/test.sh tests/unit
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export DEEPSPEED_TIMEOUT=${DEEPSPEED_TIMEOUT:-5}
if [ "$#" -eq 0 ]; then
  set -- tests/unit tests/e2e tests/packaging tests/vllm_api tests/gpu
fi
exec .venv/bin/python -m pytest "$@"
