"""`pip install ".[gpu]"` must resolve beside vllm 0.33 (torch==2.14.0, transformers<5.21).

Reads package metadata only (`--dry-run --report`), so it needs the package index but no GPU
and installs nothing. About a minute.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.resolve
def test_gpu_extra_resolves_without_conflict(tmp_path):
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            f"{ROOT}[gpu]",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    picked = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert picked["vllm"] == "0.33.0"
    assert picked["torch"] == "2.14.0"
    major, minor, *_ = (int(x) for x in picked["transformers"].split("."))
    assert (5, 16) <= (major, minor) < (5, 21)
    assert "deepspeed" in picked and "ray" in picked and "math-verify" in picked
