"""Learner batches: token alignment, rank shards, and the global counts of each optimizer step."""

import pytest
import torch

from rlvr.learner.batch import (
    MicroBatching,
    TrainBatch,
    build_train_batch,
    first_fit_decreasing,
    pack_rows,
    plan_update,
    shard_rows,
)
from rollout.types import Completions


def comps_by_hand():
    # prompt 0 = [1, 5], prompt 1 = [1, 6, 7]; three completions (pad 0, eos 2)
    return Completions(
        prompt_index_N=torch.tensor([0, 0, 1]),
        token_ids_NL=torch.tensor([[8, 2, 0], [9, 9, 9], [2, 0, 0]]),
        logprobs_NL=torch.tensor([[-0.1, -0.2, 0.0], [-1.0, -2.0, -3.0], [-0.5, 0.0, 0.0]]),
        length_N=torch.tensor([2, 3, 1]),
        finish_reason=["stop", "length", "stop"],
    )


def test_build_train_batch_aligns_tokens():
    keep = torch.tensor([True, False, True])
    batch = build_train_batch(
        [[1, 5], [1, 6, 7]], comps_by_hand(), keep, torch.tensor([0.5, 9.0, -1.0]), pad_id=0
    )
    assert batch.input_ids_BT.tolist() == [[1, 5, 8, 2], [1, 6, 7, 2]]
    assert batch.attention_mask_BT.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]
    assert batch.loss_mask_BT.tolist() == [[0, 0, 1, 1], [0, 0, 0, 1]]
    assert batch.advantages_BT.tolist() == [[0, 0, 0.5, 0.5], [0, 0, 0, -1.0]]
    torch.testing.assert_close(
        batch.rollout_logp_BT, torch.tensor([[0, 0, -0.1, -0.2], [0, 0, 0, -0.5]])
    )
    part = batch.select([1])
    assert part.input_ids_BT.tolist() == [[1, 6, 7, 2]]


def test_build_train_batch_pads_short_rows_and_keeps_nothing_when_asked():
    batch = build_train_batch(
        [[1, 5], [1, 6, 7]], comps_by_hand(), torch.ones(3, dtype=torch.bool),
        torch.tensor([0.5, 9.0, -1.0]), pad_id=4,
    )  # fmt: skip
    assert batch.input_ids_BT.tolist() == [[1, 5, 8, 2, 4], [1, 5, 9, 9, 9], [1, 6, 7, 2, 4]]
    assert batch.attention_mask_BT.tolist() == [[1, 1, 1, 1, 0], [1] * 5, [1, 1, 1, 1, 0]]
    assert batch.loss_mask_BT.tolist() == [[0, 0, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 0, 1, 0]]
    assert batch.advantages_BT.tolist() == [[0, 0, 0.5, 0.5, 0], [0, 0, 9, 9, 9], [0, 0, 0, -1, 0]]
    torch.testing.assert_close(
        batch.rollout_logp_BT,
        torch.tensor([[0, 0, -0.1, -0.2, 0], [0, 0, -1, -2, -3], [0, 0, 0, -0.5, 0]]),
    )
    empty = build_train_batch(
        [[1, 5], [1, 6, 7]], comps_by_hand(), torch.zeros(3, dtype=torch.bool),
        torch.zeros(3), pad_id=0,
    )  # fmt: skip
    assert [tuple(t.shape) for t in empty._fields()] == [(0, 1)] * 5


def test_shards_balance_tokens_and_plans_use_global_counts():
    lengths = [9, 1, 1, 1, 5, 4]  # completion tokens; every prompt is 1 token
    n, width = len(lengths), max(lengths) + 1
    ids = torch.ones(n, width, dtype=torch.long)
    attn = (torch.arange(width)[None] < torch.tensor(lengths)[:, None] + 1).long()
    mask = attn.float()
    mask[:, 0] = 0

    batch = TrainBatch(ids, attn, mask, mask.clone(), torch.zeros(n, width))
    # sequence lengths (prompt + completion) 10, 2, 2, 2, 6, 5; longest first, each to the least
    # loaded rank: 0->r0 [10,0,0], 4->r1 [10,6,0], 5->r2 [10,6,5], 1->r2 [10,6,7], 2->r1 [10,8,7],
    # 3->r2 [10,8,9]
    assert shard_rows(batch, 3) == [[0], [2, 4], [1, 3, 5]]
    assert shard_rows(batch, 2) == [[0, 1, 3], [2, 4, 5]]
    shards = shard_rows(batch, 3)
    plans = plan_update(batch, shards, epochs=2, mini_batches=1, micro=MicroBatching(2), seed=0)
    # full batch: one step per epoch; rank 2 needs 2 micro-batches, the others get zero-loss dummies
    for epoch in range(2):
        steps = [plans[r][epoch] for r in range(3)]
        assert all(len(s) == 1 for s in steps)
        assert [s[0].micro_batches for s in steps] == [[[0], []], [[0, 1], []], [[0, 1], [2]]]
        assert {(s[0].num_tokens, s[0].num_seqs) for s in steps} == {(sum(lengths), 6)}
    shards = shard_rows(batch, 2)
    mini = plan_update(batch, shards, epochs=1, mini_batches=2, micro=MicroBatching(8), seed=0)
    steps0, steps1 = mini[0][0], mini[1][0]
    assert len(steps0) == len(steps1) == 2
    for m in range(2):
        rows = [shards[0][j] for mb in steps0[m].micro_batches for j in mb]
        rows += [shards[1][j] for mb in steps1[m].micro_batches for j in mb]
        assert steps0[m].num_tokens == steps1[m].num_tokens == sum(lengths[i] for i in rows)
    covered = sorted(shards[1][j] for m in range(2) for mb in steps1[m].micro_batches for j in mb)
    assert covered == shards[1]


def test_first_fit_decreasing_by_hand():
    lengths = [3, 9, 4, 6, 2, 5]
    # padding-free, 10 tokens: 9 -> [1]; 6 -> new [3]; 5 -> new [5]; 4 -> [3] (6+4=10);
    # 3 -> [5] (8); 2 -> [5] (10)
    assert first_fit_decreasing(lengths, 10, 8, True) == [[1], [3, 2], [5, 0, 4]]
    # padded, 10 slots = rows x longest: 4 joins 5 (2x5=10); 3 fits nowhere (2x9, 2x6, 3x5);
    # 2 joins 3 (2x3)
    assert first_fit_decreasing(lengths, 10, 8, False) == [[1], [3], [5, 2], [0, 4]]
    # at most 2 rows each: 2 no longer fits [5, 0]
    assert first_fit_decreasing(lengths, 10, 2, True) == [[1], [3, 2], [5, 0], [4]]
    # ties keep index order
    assert first_fit_decreasing([2, 2, 2], 4, 8, True) == [[0, 1], [2]]
    with pytest.raises(ValueError, match="11-token sequence exceeds"):
        first_fit_decreasing([11, 3], 10, 8, True)


def test_token_budget_cuts_padding_waste():
    lengths = [3, 9, 4, 6, 2, 5]  # 29 tokens
    rows = list(range(6))
    fixed = MicroBatching(2)  # [3, 9] [4, 6] [2, 5]: 18 + 12 + 10 slots
    assert fixed.slots(fixed.split(rows, lengths), lengths) == 40
    padded = MicroBatching(8, max_tokens=10)  # [9] [6] [5, 4] [3, 2]: 9 + 6 + 10 + 6 slots
    assert padded.slots(padded.split(rows, lengths), lengths) == 31
    packed = MicroBatching(8, max_tokens=10, padding_free=True)
    assert packed.split(rows, lengths) == [[1], [3, 2], [5, 0, 4]]
    assert packed.slots(packed.split(rows, lengths), lengths) == 29
    # split maps positions back to the caller's ids
    assert packed.split([10, 11, 12, 13, 14, 15], lengths) == [[11], [13, 12], [15, 10, 14]]


def test_pack_rows_restarts_positions_and_unpacks():
    ids = torch.tensor([[1, 5, 8], [1, 6, 0]])
    attn = torch.tensor([[1, 1, 1], [1, 1, 0]])
    mask = torch.tensor([[0.0, 1, 1], [0, 1, 0]])
    row = pack_rows(TrainBatch(ids, attn, mask, mask, mask))
    assert row.input_ids_1S.tolist() == [[1, 5, 8, 1, 6]]
    assert row.position_ids_1S.tolist() == [[0, 1, 2, 0, 1]]
    assert row.loss_mask_1S.tolist() == [[0, 1, 1, 0, 1]]
    # column 0 of each row (predicted by nothing, or by the previous sequence) comes back as 0
    back = row.unpack(torch.tensor([[10.0, 11, 12, 13, 14]]))
    assert back.tolist() == [[0, 11, 12], [0, 14, 0]]


def test_token_budget_plan_keeps_global_counts_and_equal_backward_counts():
    lengths = [9, 1, 1, 1, 5, 4]  # completion tokens; prompts are 1 token: lengths 10 2 2 2 6 5
    n, width = len(lengths), max(lengths) + 1
    attn = (torch.arange(width)[None] < torch.tensor(lengths)[:, None] + 1).long()
    mask = attn.float()
    mask[:, 0] = 0
    batch = TrainBatch(torch.ones(n, width, dtype=torch.long), attn, mask, mask, mask)
    shards = shard_rows(batch, 2)  # [[0, 1, 3], [2, 4, 5]]: lengths [10, 2, 2], [2, 6, 5]
    micro = MicroBatching(8, max_tokens=12, padding_free=True)
    plans = plan_update(batch, shards, epochs=1, mini_batches=1, micro=micro, seed=0)
    # rank 0: 10 -> [0]; 2 -> [0] (12); 2 -> new; rank 1: 6 -> [1]; 5 -> [1] (11); 2 -> new
    assert plans[0][0][0].micro_batches == [[0, 1], [2]]
    assert plans[1][0][0].micro_batches == [[1, 2], [0]]
    assert {(p[0][0].num_tokens, p[0][0].num_seqs) for p in plans} == {(sum(lengths), 6)}
