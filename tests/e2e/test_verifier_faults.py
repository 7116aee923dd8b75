"""A training run under the default verifier settings whose reward verifier crashes its worker on
one completion in four, after starting processes: the run finishes, the crashes are errors
(counted in the eval records), and nothing the verifier started is left afterwards."""

import uuid
from pathlib import Path

import pytest

from rlvr.config import load_config
from rlvr.train.controller import train
from rlvr.train.metrics import read_history
from tests.plugins.hostile_verifiers import strays

pytestmark = pytest.mark.e2e
PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def test_crashing_forking_verifier_is_absorbed_and_leaves_nothing(e2e_overrides, monkeypatch):
    marker = f"10000.{uuid.uuid4().int % 10**12:012d}"
    monkeypatch.setenv("RLVR_STRAY_MARKER", marker)
    monkeypatch.syspath_prepend(str(PLUGINS))
    cfg = load_config(
        None,
        e2e_overrides
        + [
            "verifier.plugins=['hostile_verifiers:arith_or_crash']",
            "rewards=[{name: arith_or_crash, weight: 1.0}]",
            "trainer.steps=2",
            "trainer.prompts_per_step=8",
            "trainer.checkpoint_every=0",
            "trainer.name=verifier-faults",
        ],
    )
    assert cfg.verifier.num_workers == 2  # the default: isolated
    train(cfg, None)
    history = read_history(Path(cfg.trainer.output_dir) / "verifier-faults")
    steps = [r for r in history if r["kind"] == "train"]
    final = [r for r in history if r["kind"] == "eval"][-1]
    assert [r["step"] for r in steps] == [1, 2]
    crashes = final["verifier/arith_or_crash/crashes"]
    calls = final["verifier/arith_or_crash/calls"]
    # one completion text in four crashes (texts repeat, so not exactly a quarter of calls)
    assert 0 < crashes < calls and final["verifier/arith_or_crash/errors"] >= crashes
    assert final["verifier/pool/restarts"] == crashes  # each crash: one replacement worker
    assert strays(marker) == 0  # 4 processes per crash were started, none is left
