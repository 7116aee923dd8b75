#!/usr/bin/env bash
# Collect, on a machine with PyPI access, the wheels that run_gpu_checks.sh installs on a GPU
# machine that has torch and transformers but no DeepSpeed (the lent H100/H200 image: Python
# 3.12). Writes them to .whl/ at the repo root (git-ignored), about 5 MB.
#
#   tests/gpu/make_wheels.sh [PYTHON]     # PYTHON: an interpreter with torch (DeepSpeed's build needs it)
#
# DeepSpeed ships only a source archive; built with DS_BUILD_OPS=0 it becomes a pure-Python
# wheel (its CUDA ops are JIT-built at run time if ever needed). Its pydantic and hjson
# dependencies are fetched as binary wheels for CPython 3.12. vLLM is not collected: with its
# CUDA torch it is far larger than what one device call may carry.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${1:-$root/.venv/bin/python}"
out="$root/.whl"
mkdir -p "$out"
DS_BUILD_OPS=0 "$python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$out" deepspeed==0.19.8
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$out" pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 hjson==3.1.0
ls -l "$out"
