"""LoRA pieces without Ray or DeepSpeed: config errors, the merge, names, the plan's counts."""

import json

import pytest
import torch

from rlvr.cli import main
from rlvr.config import load_config
from rlvr.errors import ConfigError
from rlvr.learner.lora import (
    LoraConfig,
    apply_lora,
    check_targets,
    count_params,
    hf_name,
    merge_weight,
    merged_params,
    merged_shapes,
)
from rlvr.plan.memory import GiB, LearnerSetup, learner_memory, sync_bytes
from rlvr.plan.model_shape import ModelShape, shipped_config_path
from rlvr.tasks.tiny_model import TinyModelConfig, build_model, build_tokenizer

# The built-in model: hidden 128, 2 blocks, q = k = v = 128, FFN 512. A block's linear layers
# (in + out): q, k, v, o 4 x 256 = 1,024; gate, up 2 x 640, down 640 -> 1,920; 2,944 a block.
TINY_LORA_PER_RANK = 2 * 2944  # 5,888 adapter parameters per unit of rank


def tiny_model(seed: int = 0):
    return build_model(TinyModelConfig(), build_tokenizer(), seed)


def test_merge_weight_by_hand():
    # W + 0.5 * B @ A with B @ A = [[2, 0], [-4, 0]]
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[2.0], [-4.0]])
    assert torch.equal(merge_weight(w, a, b, 0.5), torch.tensor([[2.0, 2.0], [1.0, 4.0]]))
    # computed in fp32 and rounded once: 256 + 1.00390625 = 257.0039 rounds to 258 in bf16
    # (spacing 2 there); in bf16 throughout, the delta would round to 1.0 first, and 257 to 256
    w16 = torch.tensor([[256.0]], dtype=torch.bfloat16)
    one = torch.ones(1, 1, dtype=torch.bfloat16)
    got = merge_weight(w16, one, one, 1.00390625)
    assert got.dtype == torch.bfloat16 and got.item() == 258.0
    assert (w16 + (one @ one) * 1.00390625).item() == 256.0


def test_peft_names_map_to_the_base_models_own():
    assert hf_name("base_model.model.model.layers.0.mlp.up_proj.base_layer.weight") == (
        "model.layers.0.mlp.up_proj.weight"
    )
    assert hf_name("base_model.model.model.norm.weight") == "model.norm.weight"


def test_only_adapters_train_and_the_merged_model_computes_what_peft_does():
    base = tiny_model()
    names = [n for n, _ in base.named_parameters()]
    model = apply_lora(base, LoraConfig(enabled=True, rank=8, alpha=16.0), seed=3)
    # rank 8: 8 x 5,888 = 47,104 trainable of 574,336 (the base's 527,232 + the adapters)
    assert count_params(model) == (47_104, 574_336)
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())
    assert [n for n, _, _ in merged_shapes(model)] == names
    # B starts at 0: merged weights are the base's, bit for bit
    start = dict(merged_params(model))
    assert all(torch.equal(start[n], p) for n, p in tiny_model().named_parameters())
    g = torch.Generator().manual_seed(0)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data = torch.randn(p.shape, generator=g) * 0.1
    plain = tiny_model(seed=1)  # other weights, all overwritten
    plain.load_state_dict(dict(merged_params(model)), strict=False)
    ids = torch.randint(4, 18, (3, 12), generator=g)
    with torch.no_grad():
        torch.testing.assert_close(
            plain(input_ids=ids).logits, model(input_ids=ids).logits, atol=2e-5, rtol=0
        )


def test_config_errors_are_one_line(tmp_path, capsys):
    assert main(["config", "recipes/arith-tiny.yaml", "learner.lora.rank=0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "rlvr: error: learner.lora.rank=0 is out of range: must be >= 1"
    )
    with pytest.raises(ConfigError, match=r"target_modules=\[\]"):
        load_config(None, ["learner.lora.enabled=true", "learner.lora.target_modules=[]"])
    tiny_model().config.save_pretrained(tmp_path)
    lora = LoraConfig(enabled=True, target_modules=["q_proj", "qkv_proj"])
    with pytest.raises(ConfigError) as err:
        check_targets(lora, str(tmp_path), False, fused=False)
    assert str(err.value) == (
        f"learner.lora.target_modules: 'qkv_proj' is not a linear layer of {tmp_path}; its "
        "linear layers: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"
    )
    head = LoraConfig(enabled=True, target_modules=["lm_head"])
    check_targets(head, str(tmp_path), False, fused=False)  # allowed with full logits
    with pytest.raises(ConfigError, match="output layer 'lm_head' with learner.fused_logprobs"):
        check_targets(head, str(tmp_path), False, fused=True)


def test_lora_parameter_counts_by_hand():
    tiny = ModelShape(128, 2, 4, 4, 32, 512, 18, True)
    assert tiny.lora_params(8, "all-linear") == 8 * TINY_LORA_PER_RANK
    assert tiny.lora_params(4, ["q_proj", "v_proj"]) == 2 * 4 * (256 + 256)
    # Qwen2.5-Math-7B (h 3584, kv 512, FFN 18944, 28 blocks): q, o 7,168 each; k, v 4,096 each;
    # gate, up, down 22,528 each -> 90,112 a block; rank 16: x 16 x 28 = 40,370,176 (40.4M)
    qwen = ModelShape.from_hf_config(
        json.loads(shipped_config_path("Qwen/Qwen2.5-Math-7B").read_text())
    )
    assert qwen.lora_params(16, "all-linear") == 40_370_176


def test_learner_memory_with_lora_by_hand():
    qwen = ModelShape.from_hf_config(
        json.loads(shipped_config_path("Qwen/Qwen2.5-Math-7B").read_text())
    )
    lora = 40_370_176
    setup = LearnerSetup(2, 2, 4, 4, 4096, True, reference=True, logits="fused", lora_params=lora)
    parts = learner_memory(qwen, setup).parts
    assert parts["weights (frozen base)"] == 7_615_616_512 * 2  # bf16, not split by ZeRO-2
    assert parts["weights (adapter)"] == lora * 2
    assert parts["gradients"] == lora * 2 // 4  # split over 4 ranks
    assert parts["optimizer"] == lora * 16 // 4  # fp32 master, 2 moments, fp32 grads
    assert parts["reference model"] == 0  # the base with the adapter switched off
    # the largest adapted layer: 3584 x 18944 in fp32 twice plus bf16 once
    assert parts["lora merge buffer"] == 3584 * 18944 * 10
    full = learner_memory(qwen, LearnerSetup(2, 2, 4, 4, 4096, True, logits="fused")).parts
    assert "lora merge buffer" not in full and full["optimizer"] == 7_615_616_512 * 16 // 4
    # the weight sync: 14.2 GiB merged, 77 MiB for the adapter alone
    sent = sync_bytes(qwen, 2, lora)
    assert sent == {"merged": 7_615_616_512 * 2, "adapter only": lora * 2}
    assert sent["merged"] / GiB == pytest.approx(14.185, abs=1e-3)


def test_adapter_init_is_seeded():
    """A's random init comes from the seed (a rerun or a resumed run starts from the same
    adapter; the e2e kill-and-resume test caught an unseeded one)."""

    def a_matrices(seed: int) -> list[torch.Tensor]:
        model = apply_lora(tiny_model(), LoraConfig(enabled=True, rank=4), seed=seed)
        return [p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n]

    torch.manual_seed(123)  # the global stream does not matter ...
    first = a_matrices(5)
    torch.manual_seed(456)
    assert all(torch.equal(x, y) for x, y in zip(first, a_matrices(5)))
    assert not torch.equal(first[0], a_matrices(6)[0])  # ... the seed does
