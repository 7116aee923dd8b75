"""LoRA learners through the real Cluster (Ray + DeepSpeed + gloo): what trains, what the
engines get, what checkpoints hold, and the exported model."""

import json

import pytest
import torch

from rlvr.cluster.ray_cluster import Cluster, init_ray
from rlvr.config import load_config
from rlvr.tasks.warm_start import resolve_model_path
from rlvr.train.export import export
from rollout.types import SamplingSettings, score_tokens
from rollout.weight_sync import fingerprint
from tests.e2e.test_learner import synthetic_batch

pytestmark = pytest.mark.e2e
RANK, ALPHA = 4, 12.0  # scaling 3
LORA = [
    "learner.lora.enabled=true",
    f"learner.lora.rank={RANK}",
    f"learner.lora.alpha={ALPHA}",
    "learner.epochs=2",  # B starts at 0, so A first moves in the second step
    "learner.lr=1e-2",
    "learner.grad_clip=0",
    "rollout.num_workers=1",
]
SAMPLING = SamplingSettings(n=16, temperature=1.0, top_p=1.0, max_new_tokens=4, seed=7)
PROBE = [[1, 5, 6, 14, 7, 17, 9], [1, 12, 4, 16, 8, 8], [1, 9, 9, 15, 11, 4, 17, 13]]


@pytest.fixture(scope="module")
def ray_session(e2e_overrides):
    import ray

    cfg = load_config(None, e2e_overrides + ["learner.num_workers=2", "rollout.num_workers=1"])
    init_ray(cfg, log=lambda *_: None)
    yield
    ray.shutdown()


def lora_cluster(overrides, ranks: int, stage: int, sync: str = "merged"):
    cfg = load_config(
        None,
        overrides
        + LORA
        + [
            f"learner.num_workers={ranks}",
            f"learner.zero_stage={stage}",
            f"learner.lora.sync={sync}",
        ],
    )
    cluster = Cluster(cfg, resolve_model_path(cfg), log=lambda *_: None)
    cluster.probe_tokens = PROBE
    return cfg, cluster


def check_update(cluster) -> tuple[dict, dict]:
    """One update: the base stays bit-identical, every A and B moves, and the merged weights
    the engines get are base + (alpha / r) * B @ A, computed here in float64."""
    before = cluster.lora_weights()
    cluster.update(synthetic_batch(), seed=0)
    after = cluster.lora_weights()
    merged = cluster.full_weights()
    for name, tensor in before["base"].items():
        assert torch.equal(after["base"][name], tensor), f"frozen {name} changed"
    assert len(after["adapter"]) == 2 * 7 * 2  # A and B of 7 linear layers in each of 2 blocks
    for name, tensor in before["adapter"].items():
        assert not torch.equal(after["adapter"][name], tensor), f"adapter {name} did not move"
    assert set(merged) == set(after["base"])
    adapted = 0
    for name, base in after["base"].items():
        a_key = "base_model.model." + name.replace(".weight", ".lora_A.default.weight")
        if a_key not in after["adapter"]:
            assert torch.equal(merged[name], base), f"{name} is not adapted but changed"
            continue
        a = after["adapter"][a_key].double()
        b = after["adapter"][a_key.replace("lora_A", "lora_B")].double()
        expected = base.double() + (ALPHA / RANK) * (b @ a)
        torch.testing.assert_close(merged[name].double(), expected, atol=2e-7, rtol=0)
        assert (merged[name] - base).abs().max() > 1e-4, f"{name}: merge made no difference"
        adapted += 1
    assert adapted == 14
    return after, merged


def test_lora_zero2_update_sync_checkpoint_export_resume(e2e_overrides, ray_session, tmp_path):
    import ray
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, cluster = lora_cluster(e2e_overrides, ranks=1, stage=2)
    try:
        after, merged = check_update(cluster)
        sync = cluster.sync_weights()
        # merged sync: the whole model goes out in float32, fingerprint- and probe-checked
        assert sync["bytes"] == 4 * sum(t.numel() for t in merged.values())
        assert sync["checked_workers"] == 1
        merged_gen = cluster.generate(PROBE, SAMPLING)
        ckpt = tmp_path / "step_000001"
        cluster.save_policy(str(ckpt / "policy"))
        AutoTokenizer.from_pretrained(resolve_model_path(cfg)).save_pretrained(ckpt / "policy")
        cluster.save_learner_state(str(ckpt))
        cfg.write_yaml(ckpt / "config.yaml")
        learner = cluster.learners[0]
        learner_fp = ray.get(learner.fingerprint.remote())
        learner_logp = ray.get(learner.score.remote(PROBE))
        cluster.update(synthetic_batch(seed=1), seed=1)
        continued = cluster.lora_weights()["adapter"]
    finally:
        cluster.shutdown()

    # the checkpoint holds the adapter in peft's format and the adapter's optimizer state only
    adapter_numel = sum(t.numel() for t in after["adapter"].values())
    policy = ckpt / "policy"
    assert json.loads((policy / "adapter_config.json").read_text())["r"] == RANK
    assert not (policy / "config.json").exists()
    adapter_bytes = (policy / "adapter_model.safetensors").stat().st_size
    assert 4 * adapter_numel < adapter_bytes < 4 * adapter_numel + 16_384
    learner_state = sum(p.stat().st_size for p in (ckpt / "deepspeed").rglob("*") if p.is_file())
    base_bytes = 4 * sum(t.numel() for t in after["base"].values())
    # weights + two Adam moments of the adapter (fp32), pickling overhead; the base alone is
    # 4 x 0.53M bytes
    assert learner_state < 3 * 4 * adapter_numel + 200_000 < base_bytes

    # rlvr export: a plain HF model whose weights are the synced ones, bit for bit
    out = tmp_path / "merged"
    assert export(tmp_path / "step_000001", out) == ckpt
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert fingerprint(model.named_parameters()) == learner_fp
    exported = score_tokens(model, PROBE, torch.device("cpu"))
    for mine, theirs in zip(exported, learner_logp):
        torch.testing.assert_close(torch.tensor(mine), torch.tensor(theirs), atol=1e-5, rtol=0)

    # resume: a new cluster restores adapter and optimizer state and takes the same next step;
    # its engine gets the adapter alone (A and B) and generates what the merged engine did
    cfg, resumed = lora_cluster(e2e_overrides, ranks=1, stage=2, sync="adapter")
    try:
        resumed.load_learner_state(str(ckpt))
        restored = resumed.lora_weights()["adapter"]
        for name, tensor in after["adapter"].items():
            assert torch.equal(restored[name], tensor), name
        adapter_sync = resumed.sync_weights()
        assert adapter_sync["bytes"] == 4 * adapter_numel  # 0.19 MB instead of 2.1 MB
        assert adapter_sync["checked_workers"] == 1
        assert adapter_sync["sync/probe_gap_max"] < 1e-4
        adapter_gen = resumed.generate(PROBE, SAMPLING)
        assert torch.equal(adapter_gen.token_ids_NL, merged_gen.token_ids_NL)
        assert torch.equal(adapter_gen.length_N, merged_gen.length_N)
        # W x + s B (A x) against (W + s B A) x: the same maths rounded differently, measured
        # up to 3.1e-5 on a log-prob near -3 (fp32); the tokens above must be equal
        torch.testing.assert_close(
            adapter_gen.logprobs_NL, merged_gen.logprobs_NL, atol=1e-4, rtol=0
        )
        resumed.update(synthetic_batch(seed=1), seed=1)
        again = resumed.lora_weights()["adapter"]
    finally:
        resumed.shutdown()
    for name, tensor in continued.items():
        torch.testing.assert_close(again[name], tensor, atol=1e-7, rtol=0, msg=name)


def test_lora_zero3_two_ranks_gather_on_every_rank(e2e_overrides, ray_session):
    """Under ZeRO-3 every rank holds a shard of W, A and B; the merge gathers them on both
    ranks (a rank that skipped a gather would hang the other until DEEPSPEED_TIMEOUT)."""
    _, cluster = lora_cluster(e2e_overrides, ranks=2, stage=3)
    try:
        check_update(cluster)
        sync = cluster.sync_weights()
        assert sync["checked_workers"] == 1 and sync["sync/probe_gap_max"] < 1e-4
    finally:
        cluster.shutdown()
