"""The controller: the RL loop, one flat list of named, timed phases per step.

Each phase's name is the metric key of its time (time/<phase>). Sampling ideas plug in as the
prompt sampler (select, observe), the rollout schedule (expand) and the zero-variance gate
(observe); the loop itself does not change for them. A step's rollout (`collect`: select ..
observe) runs at the start of the step, or, with trainer.async_mode=one_step_off, during the
previous step's update, with the weights that update started from.
"""

from __future__ import annotations

import contextlib
import time
import zlib

import torch

from rlvr.algorithms import compute_advantages, overlong_filter
from rlvr.errors import ActorFailure
from rlvr.learner.batch import build_train_batch
from rlvr.seeds import Stream, derive_seed
from rlvr.train import faults
from rlvr.train.checkpoint import find_resume, list_checkpoints, load_checkpoint, save_checkpoint
from rlvr.train.metrics import PhaseTimer, summary_table, write_plots
from rlvr.train.preempt import Abandon, Preempted, PreemptWatch
from rlvr.train.probe import check_rollout_logp
from rlvr.train.recovery import Restart
from rlvr.train.rollouts import Rollouts
from rlvr.train.run import Run
from rlvr.train.scoring import GroupStats, Scores, score
from rlvr.train.step_metrics import learner_metrics, reward_metrics, rollout_metrics
from rollout.types import FINISH_LENGTH, Completions, PromptSampler


def train(cfg, recipe: str | None = None, log=print) -> dict:
    """Run RL as configured; returns the last evaluation's metrics.

    An actor that dies or hangs (ActorFailure) tears the cluster down and starts it again from
    the newest complete checkpoint of the same run directory, up to trainer.max_restarts times
    (rlvr.train.recovery). SIGTERM/SIGINT end the run at a step boundary with a checkpoint
    (rlvr.train.preempt)."""
    restarts: list[Restart] = []
    with PreemptWatch(cfg.trainer.preempt_grace_s, log) as watch:
        while True:
            run = Run.start(cfg, recipe, log)
            watch.arm()  # after ray.init, which replaces the SIGTERM handler
            try:
                if restarts:
                    restarts[-1].record(run)
                return _loop(run, cfg, log, watch)
            except Preempted as exc:
                raise stopped(watch, run, exc) from None
            except ActorFailure as exc:
                if watch.requested:  # the scheduler's signal reached the actors too
                    raise stopped(watch, run, Abandon(f"{watch.name}, then {exc}")) from None
                if len(restarts) >= cfg.trainer.max_restarts:
                    if restarts:
                        raise ActorFailure(f"{exc} (after {len(restarts)} restarts)") from exc
                    raise
                restarts.append(Restart.after(exc, run, len(restarts) + 1, log))
                cfg = restarts[-1].config(cfg, run.dir)
            finally:
                run.close()


def stopped(watch: PreemptWatch, run: Run, exc: Preempted) -> Preempted:
    """The preemption's record in metrics.jsonl, and its line for the user."""
    kept = list_checkpoints(run.dir)
    return Preempted(watch.record(run.dir, exc, kept[-1] if kept else None))


def _loop(run: Run, cfg, log, watch: PreemptWatch) -> dict:
    tc, cluster = cfg.trainer, run.cluster
    start, tracker, pending = resume(run, log)
    cluster.sync_weights()  # rollout workers start from exactly the learner's weights (checked)
    logger = run.logger(start, tracker)  # a resumed run continues its tracker run
    timer, began = PhaseTimer(), time.time()
    spent = completions_spent(run.history())  # a resumed run's steps count to max_completions
    last_eval = run.evaluate(start, logger) if start == 0 else {}
    ahead = tc.async_mode == "one_step_off"
    mark = time.perf_counter()  # time/step: wall time from here to the end of the step's sync
    for step in range(start, tc.steps):
        watch.begin_step(step)
        if pending is None:  # synchronous, or the first step: the rollout runs now
            pending = collect(run, step, staleness=0 if ahead else None)
        batch, pending = pending, None
        comps = batch.comps
        with timer("advantage"):
            adv_N, valid_N = compute_advantages(
                cfg.algorithm.advantage,
                batch.scores.reward_N.double(),
                comps.prompt_index_N,
                std_normalize=cfg.algorithm.std_normalize,
                eps=cfg.algorithm.eps,
            )
            keep_N = trainable(batch, valid_N, cfg.algorithm.overlong_filter)
        spent += len(comps)
        done = tc.max_completions is not None and spent >= tc.max_completions
        with timer("update"):
            faults.point("update", step + 1)
            updating = bool(keep_N.any())
            if updating:
                train = build_train_batch(batch.prompts, comps, keep_N, adv_N.float(), run.pad_id)
                finish = cluster.start_update(train, derive_seed(tc.seed, Stream.UPDATE, step))
            if ahead and step + 1 < tc.steps and not done:  # runs while the learners update
                pending = collect(run, step + 1, staleness=int(updating))
            with timer("update_wait") if ahead else contextlib.nullcontext():
                sums = finish() if updating else []
        with timer("sync"):
            sync = cluster.sync_weights() if sums else {"bytes": 0, "checked_workers": 0}
        times = {**timer.pop(), "time/step": time.perf_counter() - mark}
        learner = learner_metrics(sums)
        logger.log(step + 1, step_record(cfg, batch, adv_N, keep_N, learner, sync, times))
        run.log_samples(step + 1, batch, logger)
        if not batch.metrics.get("async/staleness"):  # a stale batch's gap holds an update
            check_rollout_logp(learner, cfg.sync.max_rollout_logp_diff, step + 1)  # after logging
        if run.eval_due(step + 1) or done:
            last_eval = run.evaluate(step + 1, logger)
        saved_s = None
        if run.checkpoint_due(step + 1, began) or done or watch.requested:
            saved_s = checkpoint(run, step + 1, logger, pending)
        watch.end_step(saved_s)
        if watch.requested:
            raise Preempted(f"{watch.name} during step {step + 1}")
        if limit_reached(tc, step + 1, spent, done, began, log):
            break
        mark = time.perf_counter()
    logger.close()
    history = run.history()
    write_plots(run.dir, history)
    log(summary_table(history))
    log(f"run directory: {run.dir}")
    return last_eval


def resume(run: Run, log) -> tuple[int, dict, Rollouts | None]:
    """(the first step to run, the tracker's state, the batch in flight under one_step_off)
    from the checkpoint trainer.resume names; (0, {}, None) when there is none."""
    found = find_resume(run.dir, run.cfg.trainer.resume)
    if found is None:  # resume=auto before the first checkpoint: start over (restarts stay)
        run.truncate_history(-1)
        return 0, {}, None
    state = load_checkpoint(found, run.cluster, run.sampler)
    extra = state["extra"]
    pending = extra.get("pending")
    run.truncate_history(state["step"])
    log(f"resumed from {found} at step {state['step']}")
    return (
        state["step"],
        extra.get("tracker", {}),
        None if pending is None else Rollouts.from_state(pending),
    )


def step_record(cfg, batch: Rollouts, adv_N, keep_N, learner: dict, sync: dict, times: dict):
    """A training step's metrics.jsonl record."""
    return {
        **rollout_metrics(batch, keep_N, batch.metrics),
        **reward_metrics(batch, adv_N, keep_N, cfg.algorithm.advantage),
        **learner,
        "sync/bytes": sync["bytes"],
        "sync/checked_workers": sync["checked_workers"],
        **{k: v for k, v in sync.items() if k.startswith("sync/")},  # the probe's
        **batch.metrics,  # the sampler's, schedule's and gate's, and the rollout's times
        **times,
    }


def limit_reached(tc, step: int, spent: int, done: bool, began: float, log) -> bool:
    """trainer.max_completions (`done`: `spent` reached it) or trainer.max_time_s reached after
    `step` (said in the log)."""
    if done:
        log(f"trainer.max_completions={tc.max_completions} reached after step {step} ({spent}); "
            "stopping")  # fmt: skip
        return True
    if tc.max_time_s and time.time() - began > tc.max_time_s:
        log(f"trainer.max_time_s={tc.max_time_s:g} reached after step {step}; stopping")
        return True
    return False


def collect(run: Run, step: int, staleness: int | None = None) -> Rollouts:
    """The rollout of `step`: select prompts, generate, verify, expand (DARS), let the sampler
    observe the outcomes, and refill (DAPO) until the gate has enough groups. The batch carries
    its metrics and phase times; `staleness` (one_step_off only, recorded as async/staleness):
    policy versions between the engines' weights and the update that trains on the batch."""
    cfg, timer = run.cfg, PhaseTimer()
    run.gate.begin()
    rounds: list[Rollouts] = []
    while not rounds or run.gate.more():  # one round, or DAPO refill rounds
        with timer("select"):
            idx = run.sampler.next_batch(cfg.trainer.prompts_per_step)
            rows, prompts = (
                [run.train_rows[i] for i in idx],
                [run.train_prompts[i] for i in idx],
            )
        with timer("generate"):
            sampling = run.sampling(cfg.rollout.n, step, len(rounds), stage=0)
            comps = run.cluster.generate(prompts, sampling)
        with timer("verify"):
            scores = score(run.pool, run.tokenizer, rows, comps, run.rewards)
        with timer("expand"):
            comps, scores, stats, extra_P = expand(
                run, rows, prompts, comps, scores, step, len(rounds)
            )
        with timer("observe"):
            feed_sampler(run.sampler, idx, stats)
            admit_P = run.gate.offer(admissible(stats, cfg.algorithm.drop_zero_variance))
        rounds.append(Rollouts(idx, prompts, comps, scores, stats, extra_P, admit_P))
    batch = Rollouts.merge(rounds)
    batch.metrics = {
        "sampler/batch_hash": zlib.crc32(str(batch.idx).encode()),
        **run.sampler.metrics(),
        **run.schedule.metrics(),
        **run.gate.metrics(),
        **timer.pop(),
    }
    if staleness is not None:
        batch.metrics["async/staleness"] = staleness
    return batch


def checkpoint(run: Run, step: int, logger, pending: Rollouts | None = None) -> float:
    """Write the checkpoint of `step` (with the batch in flight, if any) and its record; returns
    the seconds it took."""
    tc, began = run.cfg.trainer, time.perf_counter()
    extra = {
        "tracker": logger.tracker_state(),
        "pending": None if pending is None else pending.state(),
    }
    save_checkpoint(
        run.dir, step, run.cluster, run.tokenizer, run.cfg, run.sampler, extra,
        tc.keep_checkpoints,
    )  # fmt: skip
    seconds = time.perf_counter() - began
    logger.log(step, {"time/checkpoint": seconds}, kind="checkpoint")
    return seconds


def completions_spent(history: list[dict]) -> int:
    """Completions generated by the training steps recorded in a run's history."""
    return sum(int(r.get("rollout/completions", 0)) for r in history if r["kind"] == "train")


def expand(run: Run, rows, prompts, comps: Completions, scores: Scores, step: int, round_: int):
    """Second stage: the schedule's extra completions per prompt, same policy, merged into the
    groups. Returns (comps, scores, stats of the merged groups, extra_P)."""
    first = GroupStats.of(scores, comps.prompt_index_N, len(prompts))
    extra_P = run.schedule.extra(first.acc_P, run.cfg.rollout.n)
    if int(extra_P.sum()) == 0:
        run.schedule.after_expand(first.acc_P, first.acc_P)
        return comps, scores, first, extra_P
    order = [p for p in range(len(prompts)) for _ in range(int(extra_P[p]))]
    more = run.cluster.generate([prompts[p] for p in order], run.sampling(1, step, round_, stage=1))
    more.prompt_index_N = torch.tensor(order, dtype=torch.long)[more.prompt_index_N]
    comps = Completions.concat([comps, more], [0, 0])
    scores = Scores.concat([scores, score(run.pool, run.tokenizer, rows, more, run.rewards)])
    merged = GroupStats.of(scores, comps.prompt_index_N, len(prompts))
    run.schedule.after_expand(first.acc_P, merged.acc_P)
    return comps, scores, merged, extra_P


def trainable(batch: Rollouts, valid_N: torch.Tensor, drop_truncated: bool) -> torch.Tensor:
    """bool [N]: completions that enter the loss: a defined reward, an admitted group and, with
    DAPO's overlong filter, not cut off at the length cap."""
    keep_N = valid_N & batch.admit_P[batch.comps.prompt_index_N]
    if drop_truncated:
        reasons = batch.comps.finish_reason
        truncated_N = torch.tensor([r == FINISH_LENGTH for r in reasons], dtype=torch.bool)
        keep_N &= overlong_filter(truncated_N).bool()
    return keep_N


def feed_sampler(sampler: PromptSampler, idx: list[int], stats: GroupStats) -> None:
    """Every group's outcome goes to the sampler, whether it enters the update or not."""
    sampler.observe(idx, stats.correct_P.tolist(), stats.verified_P.tolist())


def admissible(stats: GroupStats, drop_zero_variance: bool) -> torch.Tensor:
    """Groups that may enter the update: those with signal, or every group with a verdict."""
    return stats.informative_P if drop_zero_variance else stats.verified_P > 0
