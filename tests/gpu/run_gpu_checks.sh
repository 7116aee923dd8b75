#!/usr/bin/env bash
# Every GPU check of the project in one go, for a machine with CUDA; prints the figures.
#
#   tests/gpu/run_gpu_checks.sh            (from the repo root or anywhere)
#
# 1. Installs the wheels carried in .whl/ (tests/gpu/make_wheels.sh collects DeepSpeed and
#    its dependencies on a machine with PyPI access) into a private directory, no network.
# 2. Runs the `gpu` tests: the DeepSpeed learner (ZeRO-3) and bucketed weight sync into the
#    HF engine under torchrun (no Ray), and the vLLM smoke test. A check whose packages are
#    missing is skipped as "NOT RUN: ...", which the summary lists; it never counts as passed.
# 3. Prints: the card, sync GB/s (NCCL with 2+ GPUs; gloo over CUDA tensors on one GPU, since
#    NCCL refuses two ranks on one device), HF and vLLM generation tokens/s.
# Exit status: pytest's (non-zero if any check failed).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root" || exit 1
python="${PYTHON:-python3}"
site="${RLVR_GPU_SITE:-/tmp/rlvr-gpu-site}"
log="${RLVR_GPU_LOG:-/tmp/rlvr-gpu-checks.log}"

shopt -s nullglob
wheels=(.whl/*.whl)
if [[ ${#wheels[@]} -gt 0 ]]; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "${wheels[@]}" || exit 1
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

nvidia-smi -L || echo "nvidia-smi: not available"
"$python" -m pytest tests/gpu -m gpu -rs -s -p no:cacheprovider 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

"$python" - "$log" <<'PY'
import json
import sys

lines = open(sys.argv[1]).read().splitlines()
figures = [json.loads(line.split("FIGURES ", 1)[1]) for line in lines if "FIGURES " in line]
print("\n==== rlvr GPU figures ====")
for f in figures:
    if f.get("role") == "learner":
        print(f"card: {f['card']}")
        print(f"weight sync ({f['backend']}, ZeRO-{f['zero_stage']}, {f['learners']} learner rank(s)): "
              f"{f['bytes'] / 1e9:.3f} GB in {min(f['sync_s'][1:] or f['sync_s']):.3f} s = {f['sync_GBps']:.2f} GB/s")
    elif f.get("role") == "engine":
        print(f"HF engine generation: {f['hf_tokens_per_s']:.0f} tokens/s; fingerprints {f['fingerprints_match']}")
    elif "vllm_tokens_per_s" in f:
        print(f"vLLM ({f['card']}): {f['vllm_tokens_per_s']:.0f} tokens/s; IPC sync {f['sync_bytes'] / 1e6:.1f} MB "
              f"in {f['sync_s']:.3f} s; greedy equal {f['greedy_equal']}/{f['prompts']}; "
              f"max logprob diff {f['max_logprob_diff']:.2e}")
not_run = [line for line in lines if "NOT RUN" in line and line.startswith("SKIPPED")]
for line in not_run:
    print(line)
if not figures and not not_run:
    print("no figures: see the log above")
PY
exit "$status"
