"""The hostile-program suite (tests/unit/rewards/test_code_hostile.py) as an unprivileged user.

Run as root, the unit tier tests the root paths (namespaces without a user namespace, a uid of
its own per run). This runs the same suite as uid 65534 through `setpriv`, with the system
Python and this checkout's packages, so the unprivileged paths are tested too: a user namespace
where the kernel allows one, and a bare process group sharing the verifier's uid. Not root,
the unit tier already ran unprivileged and this adds nothing.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="not root: the unit tier ran unprivileged")
def test_hostile_suite_as_an_unprivileged_user():
    setpriv = shutil.which("setpriv")
    python = next(p for p in ("/usr/bin/python3", sys.executable) if os.access(p, os.X_OK))
    assert setpriv, "setpriv (util-linux) is needed to drop to an unprivileged user"
    home = Path(tempfile.mkdtemp(prefix="rlvr-unprivileged-"))  # pytest's own is root's 0700
    os.chown(home, NOBODY, NOBODY)
    try:
        run_as_nobody(setpriv, python, home)
    finally:
        shutil.rmtree(home)


def run_as_nobody(setpriv: str, python: str, home: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "PYTHONPATH": os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]]),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [
            setpriv,
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            python,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={home / 'pytest'}",
            "tests/unit/rewards/test_code_hostile.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout
