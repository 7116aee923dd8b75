#!/usr/bin/env bash
# Create (or refresh) the project virtualenv .venv with the tested CPU stack.
# Skips the install when .venv already matches pyproject.toml and constraints-cpu.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
stamp=.venv/.rlvr-setup
want="$(cat pyproject.toml constraints-cpu.txt | sha256sum | cut -d' ' -f1) compiled"
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setting up .venv (CPU torch 2.13, ray, deepspeed, transformers; a few minutes the first time)"
[ -x .venv/bin/python ] || "$python" -m venv .venv
# The constraints pin torch to the CPU build; without them pip may fetch a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile -c constraints-cpu.txt -e ".[dev]"
# Bytecode for every installed module, compiled in parallel (about 1 min on 2 cores). Where
# PYTHONDONTWRITEBYTECODE is set (as on this project's CI machines) nothing else ever caches it,
# and each process (every Ray actor, every CLI call) compiled torch & co. again: `import torch`
# took 6.8 s instead of 3.8 s, and the e2e split-invariance test 268 s instead of 124 s.
.venv/bin/python -m compileall -q -j 0 .venv/lib > /dev/null || true  # a few vendored files are not Python 3
echo "$want" > "$stamp"
