"""What the learner receives: token-level training data and the plan of optimizer steps.

The learner is algorithm-blind: it sees tokens, masks, per-token advantages and rollout
log-probs, never rewards, groups or prompts. Every per-token tensor is [B, T] and aligned with
`input_ids_BT`: entry t belongs to token t (predicted from position t - 1), so column 0, the
first prompt token, is never a target.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from rollout.types import Completions


@dataclass
class TrainBatch:
    """B sequences (prompt + completion), right-padded to T.

    input_ids_BT:      long, pad after the sequence.
    attention_mask_BT: long, 1 on real tokens.
    loss_mask_BT:      float, 1 on completion tokens that count in the loss.
    advantages_BT:     float, the completion's advantage on each of its tokens.
    rollout_logp_BT:   float, the rollout engine's log-prob of each completion token.
    """

    input_ids_BT: torch.Tensor
    attention_mask_BT: torch.Tensor
    loss_mask_BT: torch.Tensor
    advantages_BT: torch.Tensor
    rollout_logp_BT: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids_BT.shape[0]

    def select(self, index: list[int]) -> TrainBatch:
        idx = torch.as_tensor(index, dtype=torch.long)
        width = int(self.attention_mask_BT[idx].sum(1).max()) if len(index) else 1
        return TrainBatch(*(t[idx, :width] for t in self._fields()))

    def _fields(self) -> tuple[torch.Tensor, ...]:
        return (
            self.input_ids_BT,
            self.attention_mask_BT,
            self.loss_mask_BT,
            self.advantages_BT,
            self.rollout_logp_BT,
        )

    def tokens_per_seq(self) -> torch.Tensor:
        return self.loss_mask_BT.sum(1)

    def lengths(self) -> list[int]:
        """Real tokens (prompt + completion) of each row."""
        return self.attention_mask_BT.sum(1).tolist()


@dataclass
class PackedRow:
    """The rows of a batch laid end to end in one row, padding-free: position ids restart at 0
    for each sequence, which tells the attention to keep sequences apart (a block-diagonal
    causal mask on sdpa/eager, varlen kernels on flash-attention). `rows_S`, `cols_S` give each
    packed token's place in the padded [B, T] layout."""

    input_ids_1S: torch.Tensor
    position_ids_1S: torch.Tensor
    loss_mask_1S: torch.Tensor
    rows_S: torch.Tensor
    cols_S: torch.Tensor
    shape: tuple[int, int]

    def unpack(self, values_1S: torch.Tensor) -> torch.Tensor:
        """[1, S] per-token values back to [B, T] (0 on padding and on each row's column 0,
        which no token predicts)."""
        out = values_1S.new_zeros(self.shape)
        out[self.rows_S, self.cols_S] = values_1S[0]
        out[:, 0] = 0
        return out


def pack_rows(batch: TrainBatch) -> PackedRow:
    real = batch.attention_mask_BT.bool()  # right-padded: nonzero() walks each row in order
    rows, cols = real.nonzero(as_tuple=True)
    return PackedRow(
        batch.input_ids_BT[real][None],
        cols[None],
        batch.loss_mask_BT[real][None],
        rows,
        cols,
        tuple(batch.input_ids_BT.shape),
    )


def micro_batch_cost(lengths: list[int], padding_free: bool) -> int:
    """Token slots a micro-batch computes: its tokens when packed, rows x longest when padded."""
    if not lengths:
        return 0
    return sum(lengths) if padding_free else len(lengths) * max(lengths)


def first_fit_decreasing(
    lengths: list[int], max_tokens: int, max_rows: int, padding_free: bool
) -> list[list[int]]:
    """Indices into `lengths` grouped into micro-batches of at most `max_tokens` token slots
    (`micro_batch_cost`) and `max_rows` rows: longest first (ties by index), each into the
    first micro-batch it fits, else a new one. Deterministic. A sequence longer than the budget
    is an error (the config check keeps prompt + completion caps within it)."""
    bins: list[list[int]] = []
    totals: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        if n > max_tokens:
            raise ValueError(
                f"a {n}-token sequence exceeds learner.max_tokens_per_micro_batch={max_tokens}"
            )
        for b, rows in enumerate(bins):
            # padded: the first row is the longest, so the cost is rows x that length
            cost = totals[b] + n if padding_free else (len(rows) + 1) * lengths[rows[0]]
            if len(rows) < max_rows and cost <= max_tokens:
                rows.append(i)
                totals[b] += n
                break
        else:
            bins.append([i])
            totals.append(n)
    return bins


def build_train_batch(
    prompts: list[list[int]],
    comps: Completions,
    keep_N: torch.Tensor,
    advantages_N: torch.Tensor,
    pad_id: int,
) -> TrainBatch:
    """Sequences for the completions with keep_N True, prompt tokens then completion tokens.
    Whole-batch tensor ops: writing row by row cost about 0.1 s per 2,048 rows."""
    rows = keep_N.nonzero().flatten()
    tokens, owner = comps.token_lists(), comps.prompt_index_N.tolist()
    seqs = [prompts[owner[i]] + tokens[i] for i in rows.tolist()]
    width = max(map(len, seqs), default=1)
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long)
    start_B = torch.tensor([len(prompts[owner[i]]) for i in rows.tolist()], dtype=torch.long)
    stop_B = start_B + comps.length_N[rows]
    col_BT = torch.arange(width).expand(len(seqs), width)
    completion_BT = (col_BT >= start_B[:, None]) & (col_BT < stop_B[:, None])
    # the rollout log-prob of token t is entry t - start of the completion's row
    at_BT = (col_BT - start_B[:, None]).clamp(0, max(comps.logprobs_NL.shape[1] - 1, 0))
    rollout_BT = comps.logprobs_NL[rows].float() if comps.logprobs_NL.shape[1] else None
    return TrainBatch(
        ids.reshape(len(seqs), width),  # (reshape: shape [0, 1] when nothing is kept)
        (col_BT < stop_B[:, None]).long(),
        completion_BT.float(),
        torch.where(completion_BT, advantages_N[rows].float()[:, None], 0.0),
        torch.where(completion_BT, rollout_BT.gather(1, at_BT), 0.0)
        if rollout_BT is not None
        else torch.zeros(len(seqs), width),
    )


@dataclass
class StepPlan:
    """One optimizer step on one rank: its micro-batches (row indices into the rank's shard; an
    empty list is a zero-loss dummy that keeps every rank's backward count equal) and the
    global token and sequence counts of the whole step across all ranks."""

    micro_batches: list[list[int]]
    num_tokens: int
    num_seqs: int


def shard_rows(batch: TrainBatch, num_ranks: int) -> list[list[int]]:
    """Split rows over ranks with near-equal token counts (longest first, greedy)."""
    lengths = batch.attention_mask_BT.sum(1).tolist()
    shards: list[list[int]] = [[] for _ in range(num_ranks)]
    load = [0] * num_ranks
    for i in sorted(range(len(batch)), key=lambda i: -lengths[i]):
        r = min(range(num_ranks), key=lambda r: (load[r], len(shards[r])))
        shards[r].append(i)
        load[r] += lengths[i]
    return [sorted(s) for s in shards]


@dataclass(frozen=True)
class MicroBatching:
    """How a rank's part of an optimizer step becomes micro-batches: `size` rows each, or, with
    `max_tokens`, first-fit decreasing by token count (at most `size` rows each too)."""

    size: int
    max_tokens: int | None = None
    padding_free: bool = False

    def split(self, items: list[int], lengths: list[int]) -> list[list[int]]:
        """`items` (any ids) in micro-batches; lengths[k] is the length of items[k]."""
        if self.max_tokens is None:
            return chunk(items, self.size)
        bins = first_fit_decreasing(lengths, self.max_tokens, self.size, self.padding_free)
        return [[items[k] for k in b] for b in bins]

    def slots(self, micro_batches: list[list[int]], lengths: list[int]) -> int:
        """Token slots the forward passes compute (lengths indexed by the micro-batch ids)."""
        packed = self.padding_free and self.max_tokens is not None
        return sum(micro_batch_cost([lengths[i] for i in mb], packed) for mb in micro_batches)


def plan_update(
    batch: TrainBatch,
    shards: list[list[int]],
    *,
    epochs: int,
    mini_batches: int,
    micro: MicroBatching,
    seed: int,
) -> list[list[list[StepPlan]]]:
    """plans[rank][epoch] = that rank's optimizer steps. Indices are positions within the shard.

    Full-batch is mini_batches=1. Each epoch reshuffles every shard and cuts it into
    `mini_batches` parts; part m of every rank forms optimizer step m, normalised by the
    step's global counts.
    """
    rng = random.Random(seed)
    tokens = batch.tokens_per_seq()
    lengths = batch.lengths()
    plans: list[list[list[StepPlan]]] = [[] for _ in shards]
    for _ in range(epochs):
        parts = []
        for shard in shards:
            order = list(range(len(shard)))
            if mini_batches > 1:
                rng.shuffle(order)
            parts.append([order[m::mini_batches] for m in range(mini_batches)])
        for r in range(len(shards)):
            plans[r].append([])
        for m in range(mini_batches):
            rows = [shards[r][j] for r in range(len(shards)) for j in parts[r][m]]
            num_tokens = int(tokens[rows].sum()) if rows else 0
            num_seqs = int((tokens[rows] > 0).sum()) if rows else 0
            split = [
                micro.split(parts[r][m], [lengths[shards[r][j]] for j in parts[r][m]])
                for r in range(len(shards))
            ]
            count = max(len(mb) for mb in split)
            for r in range(len(shards)):
                padded = split[r] + [[] for _ in range(count - len(split[r]))]
                plans[r][-1].append(StepPlan(padded, num_tokens, num_seqs))
    return plans


def chunk(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
