#!/usr/bin/env bash
# Create (or refresh) the project virtualenv .venv with the tested CPU stack.
# Skips the install when .venv already matches pyproject.toml and constraints-cpu.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
stamp=.venv/.rlvr-setup
want=$(cat pyproject.toml constraints-cpu.txt | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setting up .venv (CPU torch 2.13, ray, deepspeed, transformers; a few minutes the first time)"
[ -x .venv/bin/python ] || "$python" -m venv .venv
# The constraints pin torch to the CPU build; without them pip may fetch a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile -c constraints-cpu.txt -e ".[dev]"
echo "$want" > "$stamp"
