"""rlvr.algorithms must import without the cluster stack (ray, vllm, deepspeed)."""

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]

BLOCKER = """
import importlib.abc, sys

BLOCKED = {"ray", "vllm", "deepspeed", "transformers"}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked for this test: {name}")
        return None

sys.meta_path.insert(0, Blocker())
try:
    import ray  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the blocker does not work")

import rlvr.algorithms as algos

assert algos.__file__.startswith(sys.argv[1]), algos.__file__
assert not BLOCKED & {m.split(".")[0] for m in sys.modules}
print("ok", len(algos.__all__))
"""


def test_imports_without_ray_vllm_deepspeed():
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, str(REPO)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")
