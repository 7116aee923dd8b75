"""Learner batches: token alignment, rank shards, and the global counts of each optimizer step."""

import torch

from rlvr.learner.batch import build_train_batch, plan_update, shard_rows
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


def test_shards_balance_tokens_and_plans_use_global_counts():
    lengths = [9, 1, 1, 1, 5, 4]  # completion tokens; every prompt is 1 token
    n, width = len(lengths), max(lengths) + 1
    ids = torch.ones(n, width, dtype=torch.long)
    attn = (torch.arange(width)[None] < torch.tensor(lengths)[:, None] + 1).long()
    mask = attn.float()
    mask[:, 0] = 0
    from rlvr.learner.batch import TrainBatch

    batch = TrainBatch(ids, attn, mask, mask.clone(), torch.zeros(n, width))
    # sequence lengths (prompt + completion) 10, 2, 2, 2, 6, 5; longest first, each to the least
    # loaded rank: 0->r0 [10,0,0], 4->r1 [10,6,0], 5->r2 [10,6,5], 1->r2 [10,6,7], 2->r1 [10,8,7],
    # 3->r2 [10,8,9]
    assert shard_rows(batch, 3) == [[0], [2, 4], [1, 3, 5]]
    assert shard_rows(batch, 2) == [[0, 1, 3], [2, 4, 5]]
    shards = shard_rows(batch, 3)
    plans = plan_update(batch, shards, epochs=2, mini_batches=1, micro_batch_size=2, seed=0)
    # full batch: one step per epoch; rank 2 needs 2 micro-batches, the others get zero-loss dummies
    for epoch in range(2):
        steps = [plans[r][epoch] for r in range(3)]
        assert all(len(s) == 1 for s in steps)
        assert [s[0].micro_batches for s in steps] == [[[0], []], [[0, 1], []], [[0, 1], [2]]]
        assert {(s[0].num_tokens, s[0].num_seqs) for s in steps} == {(sum(lengths), 6)}
    shards = shard_rows(batch, 2)
    mini = plan_update(batch, shards, epochs=1, mini_batches=2, micro_batch_size=8, seed=0)
    steps0, steps1 = mini[0][0], mini[1][0]
    assert len(steps0) == len(steps1) == 2
    for m in range(2):
        rows = [shards[0][j] for mb in steps0[m].micro_batches for j in mb]
        rows += [shards[1][j] for mb in steps1[m].micro_batches for j in mb]
        assert steps0[m].num_tokens == steps1[m].num_tokens == sum(lengths[i] for i in rows)
    covered = sorted(shards[1][j] for m in range(2) for mb in steps1[m].micro_batches for j in mb)
    assert covered == shards[1]
