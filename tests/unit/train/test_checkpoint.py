"""Checkpoint files: trainer state without pickles, the manifest check, durable writes and the
one-line failures of a write that cannot finish (injected OSErrors)."""

import errno
import hashlib
import json
import os
import random
import shutil

import numpy as np
import pytest
import torch

from rlvr.config import load_config
from rlvr.errors import ActorFailure, CheckpointWriteError, ConfigError, PipelineError
from rlvr.train import checkpoint as ckpt
from rlvr.train.checkpoint import (
    MANIFEST,
    STATE_FILE,
    TENSORS_FILE,
    list_checkpoints,
    load_checkpoint,
    read_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    verify,
    write_state,
)
from rollout.samplers import SamplerConfig, make_sampler


class FakeCluster:
    """Writes what the learner ranks write (a policy file, per-rank DeepSpeed files); `fail` is
    raised from the learner-state save, after some of its bytes are on disk."""

    def __init__(self, fail: BaseException | None = None, during=None):
        self.fail, self.during, self.loaded = fail, during, None

    def save_policy(self, path):
        (ckpt.Path(path)).mkdir()
        (ckpt.Path(path) / "model.safetensors").write_bytes(b"w" * 1000)

    def save_learner_state(self, path):
        ds = ckpt.Path(path) / "deepspeed"
        ds.mkdir()
        (ds / "mp_rank_00_model_states.pt").write_bytes(b"d" * 500)
        if self.during is not None:
            self.during()
        if self.fail is not None:
            raise self.fail
        (ds / "zero_pp_rank_1_optim_states.pt").write_bytes(b"o" * 300)

    def load_learner_state(self, path):
        self.loaded = path


class FakeTokenizer:
    def save_pretrained(self, path):
        (ckpt.Path(path) / "tokenizer.json").write_text("{}")


CFG = load_config(None, [])


def mopps(seed=3):
    return make_sampler(SamplerConfig(name="mopps"), 40, seed, prompts=None)


def save(run, step, cluster=None, keep=2, sampler=None):
    return save_checkpoint(
        run, step, cluster or FakeCluster(), FakeTokenizer(), CFG, sampler or mopps(),
        {"tracker": {"wandb_run_id": "abc123"}}, keep,
    )  # fmt: skip


def test_trainer_state_round_trips_without_pickles(tmp_path, monkeypatch):
    sampler = mopps()
    sampler.observe(sampler.next_batch(8), [1, 2, 0, 4, 3, 0, 1, 2], [4] * 8)
    random.seed(5), np.random.seed(6), torch.manual_seed(7)
    state = {"step": 9, "sampler": sampler.state_dict(), "rng": rng_state(), "extra": {"a": [1]}}
    write_state(tmp_path, state)
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    expected_batch = sampler.next_batch(8)

    def no_pickles(*a, **k):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", no_pickles)
    back = read_state(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE, TENSORS_FILE]
    json.loads((tmp_path / STATE_FILE).read_text())  # plain JSON
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    set_rng_state(back["rng"])
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == expected
    restored = mopps(seed=99)
    restored.load_state_dict(back["sampler"])
    np.testing.assert_array_equal(restored.alpha_P, sampler.alpha_P)
    assert restored.next_batch(8) == expected_batch
    assert back["step"] == 9 and back["extra"] == {"a": [1]}


def test_save_writes_a_manifest_of_every_file_and_loads(tmp_path):
    path = save(tmp_path, 4)
    manifest = json.loads((path / MANIFEST).read_text())["files"]
    assert sorted(manifest) == [
        "config.yaml",
        "deepspeed/mp_rank_00_model_states.pt",
        "deepspeed/zero_pp_rank_1_optim_states.pt",
        "policy/model.safetensors",
        "policy/tokenizer.json",
        STATE_FILE,
        TENSORS_FILE,
    ]
    assert manifest["policy/model.safetensors"] == {
        "bytes": 1000,
        "sha256": hashlib.sha256(b"w" * 1000).hexdigest(),
    }
    cluster, sampler = FakeCluster(), mopps(seed=1)
    state = load_checkpoint(path, cluster, sampler)
    assert state["step"] == 4 and state["extra"]["tracker"] == {"wandb_run_id": "abc123"}
    assert cluster.loaded == str(path)
    assert list_checkpoints(tmp_path) == [path]


@pytest.mark.parametrize(
    "tamper, message",
    [
        (
            lambda p: (p / "policy/model.safetensors").write_bytes(b"w" * 999 + b"x"),
            "policy/model.safetensors does not match its sha256 in the manifest; refusing it",
        ),
        (
            lambda p: (p / "deepspeed/mp_rank_00_model_states.pt").write_bytes(b"d" * 499),
            "deepspeed/mp_rank_00_model_states.pt has 499 bytes, the manifest records 500; "
            "refusing it",
        ),
        (
            lambda p: (p / "deepspeed/evil.pt").write_bytes(b"pickle"),
            "deepspeed/evil.pt is not in the manifest; refusing it",
        ),
        (lambda p: (p / TENSORS_FILE).unlink(), f"{TENSORS_FILE} is missing; refusing it"),
    ],
)
def test_a_checkpoint_that_does_not_match_its_manifest_is_refused(tmp_path, tamper, message):
    path = save(tmp_path, 2)
    tamper(path)
    cluster = FakeCluster()
    with pytest.raises(ConfigError) as err:
        load_checkpoint(path, cluster, mopps())
    assert str(err.value) == f"checkpoint {path}: {message}"
    assert cluster.loaded is None  # refused before any state is loaded


def test_an_old_pickled_checkpoint_is_refused(tmp_path):
    old = tmp_path / "checkpoints" / "step_000002"
    old.mkdir(parents=True)
    (old / "trainer_state.pt").write_bytes(b"pickle")
    with pytest.raises(ConfigError) as err:
        verify(old)
    assert str(err.value) == (
        f"checkpoint {old} has no {MANIFEST}: incomplete, or written by an older version "
        "(its trainer_state.pt is a pickle and is not loaded)"
    )


class RunsCode:
    """What a hostile checkpoint file would hold: unpickling it runs a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_deepspeed_files_load_weights_only(tmp_path):
    """DeepSpeed's checkpoint engine loads through `weights_only_load`: what its files hold (the
    loss scaler, ZeRO's stage enum and fragment addresses, tensors) comes back; a file whose
    unpickling would run code is refused with one line and runs nothing."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    from rlvr.learner.deepspeed_learner import weights_only_load

    state = {
        "loss_scaler": LossScaler(scale=1.0),
        "zero_stage": ZeroStageEnum.gradients,
        "address": fragment_address(numel=6, start=2),
        "optimizer_state_dict": {"state": {0: {"exp_avg": torch.arange(3.0)}}, "lr": 1e-3},
    }
    torch.save(state, tmp_path / "optim_states.pt")
    back = weights_only_load(str(tmp_path / "optim_states.pt"))
    assert back["loss_scaler"].cur_scale == 1.0 and back["zero_stage"] == ZeroStageEnum.gradients
    assert (back["address"].numel, back["address"].start) == (6, 2)
    assert torch.equal(back["optimizer_state_dict"]["state"][0]["exp_avg"], torch.arange(3.0))
    marker = tmp_path / "ran"
    torch.save({"module": RunsCode(marker)}, tmp_path / "model_states.pt")
    with pytest.raises(PipelineError) as err:
        weights_only_load(str(tmp_path / "model_states.pt"))
    assert not marker.exists()
    assert str(err.value) == (
        f"{tmp_path / 'model_states.pt'}: refused to load (Trying to load unsupported GLOBAL "
        "posix.system whose module posix is blocked.)"
    )


def enospc(path):
    # as a learner rank's failure arrives: PipelineError from the Ray task error, caused by it
    err = OSError(errno.ENOSPC, "No space left on device", path)
    try:
        raise err
    except OSError as exc:
        try:
            raise PipelineError("learner save_checkpoint: OSError: ...") from exc
        except PipelineError as wrapped:
            return wrapped


def test_disk_full_keeps_the_previous_checkpoint_and_says_so(tmp_path):
    prev = save(tmp_path, 2, keep=1)
    full = enospc("/x/deepspeed/zero_pp_rank_1_optim_states.pt")
    with pytest.raises(CheckpointWriteError) as err:
        save(tmp_path, 4, FakeCluster(fail=full), keep=1)
    final = tmp_path / "checkpoints" / "step_000004"
    assert str(err.value) == (
        f"checkpoint {final} not written: no space left on device: "
        f"/x/deepspeed/zero_pp_rank_1_optim_states.pt; the previous checkpoint {prev} is kept"
    )
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000002"]
    verify(prev)  # intact
    assert list_checkpoints(tmp_path) == [prev]


def test_permission_denied_and_the_first_checkpoint(tmp_path):
    denied = PermissionError(errno.EACCES, "Permission denied", "/r/checkpoints/step_000002.tmp")
    with pytest.raises(CheckpointWriteError) as err:
        save(tmp_path, 2, FakeCluster(fail=denied))
    assert str(err.value) == (
        f"checkpoint {tmp_path}/checkpoints/step_000002 not written: permission denied: "
        "/r/checkpoints/step_000002.tmp; no checkpoint is kept"
    )
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_a_full_disk_reported_as_a_zip_writer_error(tmp_path, monkeypatch):
    """torch.save on a full disk raises RuntimeError('... unexpected pos ...'), no OSError: the
    free space tells."""
    prev = save(tmp_path, 2)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda p: usage._replace(free=4096))
    zip_error = RuntimeError(
        "[enforce fail at inline_container.cc:626] . unexpected pos 6464 vs 6358"
    )
    with pytest.raises(CheckpointWriteError) as err:
        save(tmp_path, 4, FakeCluster(fail=zip_error))
    assert str(err.value) == (
        f"checkpoint {tmp_path}/checkpoints/step_000004 not written: no space left on device "
        f"(4096 bytes free under {tmp_path}/checkpoints); the previous checkpoint {prev} is kept"
    )


@pytest.mark.parametrize("error", [ActorFailure("learner save_checkpoint: learner rank 1 died"),
                                   KeyboardInterrupt()])  # fmt: skip
def test_other_failures_pass_through_and_leave_no_partial_directory(tmp_path, error):
    with pytest.raises(type(error)):
        save(tmp_path, 2, FakeCluster(fail=error))
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_keep_checkpoints_prunes_only_after_the_new_one_is_complete(tmp_path):
    first = save(tmp_path, 2, keep=1)
    seen = []
    save(tmp_path, 4, FakeCluster(during=lambda: seen.append(list_checkpoints(tmp_path))), keep=1)
    assert seen == [[first]]  # while step 4 was written, step 2 was still there
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000004"]


def test_a_stale_partial_directory_is_removed_and_the_same_step_rewritten(tmp_path):
    stale = tmp_path / "checkpoints" / "step_000006.tmp"
    stale.mkdir(parents=True)
    (stale / "junk").write_bytes(b"x")
    save(tmp_path, 4)
    again = save(tmp_path, 4)
    verify(again)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000004"]


def test_files_and_directories_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    synced, order = set(), []
    real_fsync, real_replace = ckpt.os.fsync, ckpt.os.replace

    def fsync(fd):
        synced.add(ckpt.os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src, dst):
        order.append(("rename", str(src), set(synced)))
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "fsync", fsync)
    monkeypatch.setattr(ckpt.os, "replace", replace)
    path = save(tmp_path, 2)
    tmp = str(path) + ".tmp"
    (before,) = [fsynced for _, src, fsynced in order if src == tmp]
    files = {f"{tmp}/{n}" for n in json.loads((path / MANIFEST).read_text())["files"]}
    assert files | {f"{tmp}/{MANIFEST}", tmp, f"{tmp}/policy", f"{tmp}/deepspeed"} <= before
    assert str(path.parent) in synced  # the rename itself made durable


REAL_DISK_FULL = """
import subprocess, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_checkpoint import FakeCluster, save
from rlvr.errors import CheckpointWriteError
root = Path({root!r})
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(root)], check=True)
first = save(root, 2)
class Big(FakeCluster):
    def save_learner_state(self, path):
        super().save_learner_state(path)
        (Path(path) / "deepspeed" / "optim.pt").write_bytes(b"o" * 400_000)
try:
    save(root, 4, Big())
except CheckpointWriteError as exc:
    print(exc)
print(sorted(p.name for p in (root / "checkpoints").iterdir()))
"""


def test_a_real_full_tmpfs(tmp_path):
    """The same on a real 256 KiB tmpfs, in a user+mount namespace (`unshare -rm`)."""
    import subprocess
    import sys

    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no user namespaces here (unshare: {probe.stderr.decode().strip()})")
    root = tmp_path / "small"
    root.mkdir()
    code = REAL_DISK_FULL.format(tests=str(ckpt.Path(__file__).parent), root=str(root))
    out = subprocess.run(
        ["unshare", "-rm", sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    final = root / "checkpoints" / "step_000004"
    assert out.stdout.splitlines() == [
        f"checkpoint {final} not written: no space left on device; the previous checkpoint "
        f"{root}/checkpoints/step_000002 is kept",  # a write() error names no file
        "['step_000002']",
    ]


def test_the_batch_in_flight_round_trips_exactly(tmp_path, monkeypatch):
    """trainer.async_mode=one_step_off stores the next step's batch in the checkpoint: every
    tensor (dtype, NaN places) and string comes back as it was."""
    from rlvr.train.rollouts import Rollouts
    from rlvr.train.scoring import GroupStats, Scores
    from rollout.types import Completions

    comps = Completions(
        prompt_index_N=torch.tensor([0, 0, 1, 1]),
        token_ids_NL=torch.tensor([[5, 6, 2], [7, 2, 0], [9, 9, 9], [4, 2, 0]]),
        logprobs_NL=torch.tensor([[-0.5, -1.25, -0.125], [-2.0, -0.75, 0.0]] * 2),
        length_N=torch.tensor([3, 2, 3, 2]),
        finish_reason=["stop", "stop", "length", "stop"],
        pad_id=0,
    )
    nan = float("nan")
    scores = Scores(
        reward_N=torch.tensor([1.0, 0.0, nan, 1.1], dtype=torch.float64),
        correct_N=torch.tensor([True, False, False, True]),
        error_N=torch.tensor([False, False, True, False]),
        texts=["12", "1 3", "ü∑", "7"],
        names=("math", "format_boxed"),
        score_CN=torch.tensor([[1.0, 0.0, nan, 1.0], [nan, nan, nan, 1.0]], dtype=torch.float64),
        weight_CN=torch.tensor([[1.0] * 4, [0.0, 0.0, 0.0, 0.1]], dtype=torch.float64),
        error_CN=torch.tensor([[False, False, True, False]] * 2),
        reasons=["", "wrong", "timeout after 5 s", ""],
    )
    stats = GroupStats.of(scores, comps.prompt_index_N, 2)
    batch = Rollouts(
        [17, 3], [[1, 4, 5], [1, 8]], comps, scores, stats, torch.tensor([0, 2]),
        torch.tensor([True, False]),
        {"time/generate": 0.25, "async/staleness": 1, "gate/informative_frac": nan},
    )  # fmt: skip
    write_state(tmp_path, {"step": 4, "extra": {"pending": batch.state()}})
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    back = Rollouts.from_state(read_state(tmp_path)["extra"]["pending"])

    def same(a, b):
        if isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and torch.equal(
                a.isnan() if a.is_floating_point() else a, b.isnan() if b.is_floating_point() else b
            )
            assert torch.equal(a.nan_to_num(7.5), b.nan_to_num(7.5))
        elif isinstance(a, float) and a != a:
            assert b != b
        else:
            assert a == b and type(a) is type(b)

    assert (back.idx, back.prompts) == (batch.idx, batch.prompts)
    for part in ("comps", "scores", "stats"):
        for name, value in vars(getattr(batch, part)).items():
            same(value, getattr(getattr(back, part), name))
    same(back.extra_P, batch.extra_P), same(back.admit_P, batch.admit_P)
    assert back.metrics.keys() == batch.metrics.keys()
    for key, value in batch.metrics.items():
        same(value, back.metrics[key])
    assert back.scores.part_CN().nan_to_num(9).tolist() == scores.part_CN().nan_to_num(9).tolist()
