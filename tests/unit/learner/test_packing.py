"""Padding-free packing: the learner's log-probs and entropies of a packed row equal the padded
rows' (the attention keeps the sequences apart), and its setup check tells the two cases apart."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlvr.learner.batch import TrainBatch
from rlvr.learner.deepspeed_learner import Learner

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


def model(attn_implementation: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=23,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        attn_implementation=attn_implementation,
    )
    return LlamaForCausalLM(config).eval()


def learner(net, fused: bool) -> Learner:
    lr = Learner.__new__(Learner)  # the forward only: no DeepSpeed world
    lr.engine, lr.device, lr.fused, lr.temperature, lr.packs = (
        net,
        torch.device("cpu"),
        fused,
        0.7,
        True,
    )
    return lr


def skewed_batch() -> TrainBatch:
    lengths = torch.tensor([9, 3, 6, 2])
    width = int(lengths.max())
    g = torch.Generator().manual_seed(1)
    attn = (torch.arange(width)[None] < lengths[:, None]).long()
    ids = torch.randint(1, 23, (4, width), generator=g) * attn
    mask = attn.float()
    mask[:, :2] = 0  # 2-token prompts
    return TrainBatch(ids, attn, mask, mask, mask)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("fused", [True, False])
@torch.no_grad()
def test_packed_row_matches_padded_rows(attn, fused):
    lr, batch = learner(model(attn), fused), skewed_batch()
    padded_logp, padded_ent = lr._logp_entropy(lr.engine, batch, packed=False)
    packed_logp, packed_ent = lr._logp_entropy(lr.engine, batch, packed=True)
    mask = batch.loss_mask_BT
    assert (padded_logp * mask).abs().sum() > 1.0  # real numbers, not zeros on both sides
    torch.testing.assert_close(packed_logp * mask, padded_logp * mask, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed_ent * mask, padded_ent * mask, atol=1e-5, rtol=0)
    assert lr._packing_matches()


@torch.no_grad()
def test_packing_check_fails_when_positions_do_not_separate_sequences():
    net = model("sdpa")
    lr = learner(net, fused=False)
    forward = net.forward

    def no_packing(*args, use_cache=None, **kwargs):  # a model that always builds a KV cache
        return forward(*args, use_cache=True, **kwargs)

    net.forward = no_packing
    assert not lr._packing_matches()


def test_packed_micro_batches_give_the_full_batch_gradient():
    """The loss over token-budget micro-batches (packed, global counts) has the gradient of the
    loss over the whole padded batch: the update is the same whatever the split."""
    from rlvr.algorithms import microbatch_loss
    from rlvr.algorithms.loss import LossConfig
    from rlvr.learner.batch import MicroBatching

    net, batch = model("sdpa"), skewed_batch()
    batch.advantages_BT = batch.loss_mask_BT * torch.tensor([[1.0], [-0.5], [0.7], [2.0]])
    lr, settings = learner(net, fused=False), LossConfig()
    mask = batch.loss_mask_BT
    counts = {"num_tokens": int(mask.sum()), "num_seqs": int((mask.sum(1) > 0).sum())}

    def grads(micro_batches: list[list[int]], packed: bool) -> list[torch.Tensor]:
        net.zero_grad()
        for rows in micro_batches:
            mb = batch.select(rows)
            logp, _ = lr._logp_entropy(net, mb, packed=packed)
            loss, _ = microbatch_loss(
                settings, logp, logp.detach(), mb.advantages_BT, mb.loss_mask_BT, **counts
            )
            loss.backward()
        return [p.grad.clone() for p in net.parameters()]

    whole = grads([[0, 1, 2, 3]], packed=False)
    split = MicroBatching(8, max_tokens=12, padding_free=True).split([0, 1, 2, 3], [9, 3, 6, 2])
    assert split == [[0, 1], [2, 3]]  # 9 + 3, 6 + 2
    for got, want in zip(grads(split, packed=True), whole):
        torch.testing.assert_close(got, want, atol=1e-7, rtol=1e-5)
    assert sum(float(g.abs().sum()) for g in whole) > 1e-3
