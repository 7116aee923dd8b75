#!/usr/bin/env bash
# Create, or reuse, the virtualenv that the vllm_api test tier runs in.
#
# vLLM 0.33 pins torch 2.14 (CUDA build) while the project's CPU venv pins torch 2.13 (CPU build),
# so they cannot share one environment. This venv holds vllm and deepspeed only; the tests put the
# project's source tree on PYTHONPATH instead of installing it, so edits need no reinstall.
#
# Usage: tests/vllm_api/make_venv.sh [VENV_DIR]      (default: .venv-vllm at the repo root)
# Re-running is cheap: a stamp file records what was installed, and a venv whose stamp matches
# is reused as is. Delete the directory to rebuild from scratch.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${1:-$root/.venv-vllm}"
python="${PYTHON:-python3.11}"
# DS_BUILD_OPS=0: deepspeed's CUDA ops cannot build without nvcc and are not needed here.
spec="vllm==0.33.0 deepspeed==0.19.8 pytest"
stamp="$venv/.rlvr-stamp"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$spec" ]]; then
    echo "vllm venv ready: $venv"
    exit 0
fi

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# Two steps: vllm first pins torch; deepspeed then installs against that torch.
"$venv/bin/python" -m pip install --quiet "vllm==0.33.0" pytest
DS_BUILD_OPS=0 "$venv/bin/python" -m pip install --quiet "deepspeed==0.19.8"
"$venv/bin/python" -c "import vllm, deepspeed, torch; print('vllm', vllm.__version__, 'deepspeed', deepspeed.__version__, 'torch', torch.__version__)"
echo "$spec" > "$stamp"
echo "vllm venv ready: $venv"
