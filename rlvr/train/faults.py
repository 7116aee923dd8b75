"""Named points where the fault-injection tests (tests/e2e/test_faults.py) stop a run.

With RLVR_FAULT="<point>:<step>:<marker file>" in the environment (several separated by ";"),
the run writes its pid into the marker file when it reaches that point at that step, then waits
there until the file is removed: the test kills whatever it wants meanwhile (the process group,
one actor) and removes the marker to let a surviving run go on. Each point fires once per
process. Without the variable a point costs one dictionary lookup.

Points: "update" (before a step's learner update), "eval" (before an evaluation's generation),
"checkpoint" (a checkpoint's files written, its manifest not yet).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV = "RLVR_FAULT"
_fired: set[tuple[str, int]] = set()


def point(name: str, step: int) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for one in spec.split(";"):
        where, at, marker = one.split(":", 2)
        if where != name or int(at) != step or (name, step) in _fired:
            continue
        _fired.add((name, step))
        path = Path(marker)
        path.write_text(str(os.getpid()))
        while path.exists():
            time.sleep(0.05)
