"""Run directories, checkpoint discovery and the uniform sampler's resumable state."""

import pytest

from rlvr.config import ConfigError, load_config
from rlvr.train.checkpoint import MANIFEST, find_resume, list_checkpoints, read_state, write_state
from rlvr.train.run import run_directory
from rollout.samplers import UniformSampler


def make_ckpt(run, step, complete=True):
    path = run / "checkpoints" / (f"step_{step:06d}" + ("" if complete else ".tmp"))
    path.mkdir(parents=True)
    if complete:
        (path / MANIFEST).write_text('{"format": 1, "files": {}}')
    return path


def test_checkpoint_discovery_skips_incomplete(tmp_path):
    run = tmp_path / "r"
    make_ckpt(run, 20)
    newest = make_ckpt(run, 100)
    make_ckpt(run, 120, complete=False)  # interrupted while writing
    (run / "checkpoints" / "step_000140").mkdir()  # no manifest
    assert [p.name for p in list_checkpoints(run)] == ["step_000020", "step_000100"]
    assert find_resume(run, "auto") == newest
    assert find_resume(run, "") is None
    assert find_resume(tmp_path / "empty", "auto") is None
    with pytest.raises(ConfigError, match="not a checkpoint directory"):
        find_resume(run, str(run / "checkpoints"))


def test_run_directory_rules(tmp_path):
    base = f"trainer.output_dir={tmp_path}"
    fresh = run_directory(load_config(None, [base]), "recipes/x.yaml")
    assert fresh.parent == tmp_path and fresh.name.startswith("x-")
    with pytest.raises(ConfigError, match="trainer.resume=auto: no run of x with a checkpoint"):
        run_directory(load_config(None, [base, "trainer.resume=auto"]), "recipes/x.yaml")
    old, new = tmp_path / "x-20260101-000000", tmp_path / "x-20260102-000000"
    make_ckpt(old, 5)
    make_ckpt(new, 3)
    assert run_directory(load_config(None, [base, "trainer.resume=auto"]), "recipes/x.yaml") == new
    named = tmp_path / "mine"
    named.mkdir()
    (named / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match="already holds a run; add trainer.resume=auto"):
        run_directory(load_config(None, [base, "trainer.name=mine"]), None)
    assert (
        run_directory(load_config(None, [base, "trainer.name=mine", "trainer.resume=auto"]), None)
        == named
    )
    ckpt = make_ckpt(tmp_path / "other", 7)
    assert (
        run_directory(load_config(None, [base, f"trainer.resume={ckpt}"]), None)
        == (tmp_path / "other").resolve()
    )


def test_uniform_sampler_epochs_and_state_round_trip(tmp_path):
    s = UniformSampler(5, seed=1)
    first = s.next_batch(3) + s.next_batch(2)
    assert sorted(first) == [0, 1, 2, 3, 4]  # one epoch covers every prompt once
    assert s.metrics()["sampler/epoch"] == 1.0
    s.next_batch(4)
    write_state(tmp_path, {"sampler": s.state_dict()})  # as the checkpoint stores it
    expected = [s.next_batch(3) for _ in range(4)]
    restored = UniformSampler(5, seed=99)
    restored.load_state_dict(read_state(tmp_path)["sampler"])
    assert [restored.next_batch(3) for _ in range(4)] == expected
    with pytest.raises(ValueError, match="covers 5 prompts, the data has 6"):
        UniformSampler(6, seed=0).load_state_dict(s.state_dict())
