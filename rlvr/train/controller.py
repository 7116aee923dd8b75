"""The controller: the synchronous RL loop, one flat list of named, timed phases per step.

Each phase's name is the metric key of its time (time/<phase>). Sampling ideas plug in as the
prompt sampler (select, observe), the rollout schedule (expand) and the zero-variance gate
(observe); the loop itself does not change for them.
"""

from __future__ import annotations

import itertools
import time
import zlib
from dataclasses import dataclass

import torch

from rlvr.algorithms import compute_advantages
from rlvr.learner.batch import build_train_batch
from rlvr.train.checkpoint import find_resume, load_checkpoint, save_checkpoint
from rlvr.train.metrics import PhaseTimer, RunLogger, summary_table, write_plots
from rlvr.train.run import Run
from rlvr.train.scoring import Scores, group_accuracy, score
from rlvr.train.step_metrics import learner_metrics, rollout_metrics
from rollout.gates import zero_variance_admit
from rollout.types import Completions


def train(cfg, recipe: str | None = None, log=print) -> dict:
    """Run RL as configured; returns the last evaluation's metrics."""
    run = Run.start(cfg, recipe, log)
    try:
        return _loop(run, cfg, log)
    finally:
        run.close()


def _loop(run: Run, cfg, log) -> dict:
    tc, cluster = cfg.trainer, run.cluster
    start = 0
    resume = find_resume(run.dir, tc.resume)
    if resume is not None:
        start = load_checkpoint(resume, cluster, run.sampler)["step"]
        run.truncate_history(start)
        log(f"resumed from {resume} at step {start}")
    cluster.sync_weights()  # rollout workers start from exactly the learner's weights (checked)
    logger = RunLogger(run.dir, tc.steps, start)
    timer, began = PhaseTimer(), time.time()
    spent = completions_spent(
        run.history()
    )  # a resumed run's earlier steps count towards max_completions
    last_eval = run.evaluate(start, logger) if start == 0 else {}
    for step in range(start, tc.steps):
        run.gate.begin()
        rounds: list[Rollouts] = []
        while not rounds or run.gate.more():  # one round, or DAPO refill rounds
            with timer("select"):
                idx = run.sampler.next_batch(tc.prompts_per_step)
                rows, prompts = (
                    [run.train_rows[i] for i in idx],
                    [run.train_prompts[i] for i in idx],
                )
            with timer("generate"):
                comps = cluster.generate(
                    prompts, run.sampling(cfg.rollout.n, step, len(rounds), stage=0)
                )
            with timer("verify"):
                scores = score(run.pool, run.tokenizer, rows, comps)
            with timer("expand"):
                comps, scores, extra_P = expand(
                    run, rows, prompts, comps, scores, step, len(rounds)
                )
            with timer("observe"):
                acc_P, admit_P = observe(run, idx, comps, scores)
                rounds.append(
                    Rollouts(idx, prompts, comps, scores, acc_P, run.gate.offer(admit_P), extra_P)
                )
        idx, prompts, comps, scores, acc_P, admit_P, extra_P = Rollouts.merge(rounds)
        with timer("advantage"):
            adv_N, valid_N = compute_advantages(
                cfg.algorithm.advantage,
                scores.reward_N.double(),
                comps.prompt_index_N,
                std_normalize=cfg.algorithm.std_normalize,
                eps=cfg.algorithm.eps,
            )
            keep_N = valid_N & admit_P[comps.prompt_index_N]
        with timer("update"):
            stats = []
            if keep_N.any():
                batch = build_train_batch(prompts, comps, keep_N, adv_N.float(), run.pad_id)
                stats = cluster.update(batch, seed=tc.seed * 7919 + step)
        with timer("sync"):
            sync = cluster.sync_weights() if stats else {"bytes": 0, "checked_workers": 0}
        times = timer.pop()
        spent += len(comps)
        done = tc.max_completions is not None and spent >= tc.max_completions
        logger.log(
            step + 1,
            {
                **rollout_metrics(comps, scores, acc_P, keep_N, extra_P, times),
                **learner_metrics(stats),
                "sync/bytes": sync["bytes"],
                "sync/checked_workers": sync["checked_workers"],
                "sampler/batch_hash": zlib.crc32(str(idx).encode()),
                **run.sampler.metrics(),
                **run.schedule.metrics(),
                **run.gate.metrics(),
                **times,
            },
        )
        if run.eval_due(step + 1) or done:
            last_eval = run.evaluate(step + 1, logger)
        if run.checkpoint_due(step + 1, began) or done:
            saved = time.perf_counter()
            save_checkpoint(
                run.dir, step + 1, cluster, run.tokenizer, cfg, run.sampler, {}, tc.keep_checkpoints
            )
            logger.log(
                step + 1, {"time/checkpoint": time.perf_counter() - saved}, kind="checkpoint"
            )
        if done:
            log(
                f"trainer.max_completions={tc.max_completions} reached after step {step + 1} "
                f"({spent}); stopping"
            )
            break
        if tc.max_time_s and time.time() - began > tc.max_time_s:
            log(f"trainer.max_time_s={tc.max_time_s:g} reached after step {step + 1}; stopping")
            break
    logger.close()
    history = run.history()
    write_plots(run.dir, history)
    log(summary_table(history))
    log(f"run directory: {run.dir}")
    return last_eval


def completions_spent(history: list[dict]) -> int:
    """Completions generated by the training steps recorded in a run's history."""
    return sum(int(r.get("rollout/completions", 0)) for r in history if r["kind"] == "train")


def expand(run: Run, rows, prompts, comps: Completions, scores: Scores, step: int, round_: int):
    """Second stage: the schedule's extra completions per prompt, same policy, merged in."""
    acc_P = group_accuracy(scores.correct_N, scores.error_N, comps.prompt_index_N, len(prompts))
    extra_P = run.schedule.extra(acc_P, run.cfg.rollout.n)
    if int(extra_P.sum()) == 0:
        run.schedule.after_expand(acc_P, acc_P)
        return comps, scores, extra_P
    order = [p for p in range(len(prompts)) for _ in range(int(extra_P[p]))]
    more = run.cluster.generate([prompts[p] for p in order], run.sampling(1, step, round_, stage=1))
    more.prompt_index_N = torch.tensor(order, dtype=torch.long)[more.prompt_index_N]
    comps = Completions.concat([comps, more], [0, 0])
    scores = Scores.concat([scores, score(run.pool, run.tokenizer, rows, more)])
    run.schedule.after_expand(
        acc_P, group_accuracy(scores.correct_N, scores.error_N, comps.prompt_index_N, len(prompts))
    )
    return comps, scores, extra_P


def observe(run: Run, idx: list[int], comps: Completions, scores: Scores):
    """Feed outcomes to the sampler (every group, kept or not); which groups carry signal."""
    acc_P = group_accuracy(scores.correct_N, scores.error_N, comps.prompt_index_N, len(idx))
    counts_P = torch.zeros(len(idx)).index_add_(0, comps.prompt_index_N, (~scores.error_N).float())
    run.sampler.observe(idx, (acc_P.nan_to_num(0) * counts_P).tolist(), counts_P.long().tolist())
    if run.cfg.algorithm.drop_zero_variance:
        return acc_P, zero_variance_admit(scores.reward_N, comps.prompt_index_N, len(idx))
    return acc_P, ~acc_P.isnan()


@dataclass
class Rollouts:
    """One generation round of a step: P prompts and their (possibly expanded) groups."""

    idx: list[int]
    prompts: list[list[int]]
    comps: Completions
    scores: Scores
    acc_P: torch.Tensor
    admit_P: torch.Tensor
    extra_P: torch.Tensor

    @staticmethod
    def merge(rounds: list[Rollouts]) -> tuple:
        """All rounds of a step as one batch (group indices offset by earlier rounds' prompts)."""
        offsets = list(itertools.accumulate([0] + [len(r.prompts) for r in rounds[:-1]]))
        return (
            [i for r in rounds for i in r.idx],
            [p for r in rounds for p in r.prompts],
            Completions.concat([r.comps for r in rounds], offsets),
            Scores.concat([r.scores for r in rounds]),
            torch.cat([r.acc_P for r in rounds]),
            torch.cat([r.admit_P for r in rounds]),
            torch.cat([r.extra_P for r in rounds]),
        )
