"""Throughput side by side: a bare single-process GRPO loop, TRL's GRPOTrainer, and rlvr.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_throughput.py [--repeats 3] [--steps 20]
    PYTHONPATH=. .venv/bin/python benchmarks/bench_throughput.py --padding   # packing only

Every arm trains the same warm-started built-in model on the same task (recipes/arith-tiny.yaml
with GRPO: uniform prompts, no DARS, P prompts x n completions a step, one full-batch pass, the
recipe's lr, lengths and sampling) for the same number of steps, and evaluates held-out pass@1
with rlvr's evaluation every --eval-every steps (evaluation time is left out of every figure):

  bare         one process, no Ray, no DeepSpeed: rlvr's HF engine, verifier, advantages and
               loss called directly, torch AdamW (the lower bound of pipeline overhead)
  trl          TRL's GRPOTrainer through benchmarks/trl_grpo_arm.py (run when TRL is importable,
               e.g. from .cache/bench-trl as bench_sample_efficiency.py installs it)
  rlvr-sync    `rlvr train`, synchronous
  rlvr-async   the same with trainer.async_mode=one_step_off (the next step's rollout runs while
               the learner updates)
  rlvr-budget  the same with learner.max_tokens_per_micro_batch=2048, padded rows of similar
               lengths (learner.padding_free=false)
  rlvr-packed  the same budget, padding-free packed rows

Per arm: completions/s and generated tokens/s over all training steps (the first included, as
in TRL's training time: leaving it out favoured one-step-off, whose first step also generates the
second step's batch), training seconds until held-out pass@1 first reaches --target (so to the
evaluation on or after the step that reached it: evaluate every step for the sharpest figure),
and the phase breakdown
(generate / update / the rest; for rlvr-async "update" is time/update_wait, the part of the
update that the next rollout did not hide). Ratios are to the bare loop and to TRL. Runs go one
at a time, each in its own process (rlvr arms start their own local Ray).

--padding prints the padding waste of micro-batches with and without a token budget on a batch
with skewed lengths (counted from the learner's own plan: rows x longest when padded, real tokens
when packed), no model involved.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "arith-tiny.yaml"
GRPO = [
    "sampler.name=uniform",
    "schedule.name=single",
    "learner.update=mini-batch",
    "learner.mini_batches=2",
    "learner.epochs=1",
    "trainer.checkpoint_every=0",
    "eval.num_problems=200",
]


# ---- the bare loop ----------------------------------------------------------------------------
def bare_loop(cfg, out: Path) -> None:
    """Single-process GRPO with rlvr's own pieces, no Ray and no DeepSpeed. Writes metrics.jsonl
    records shaped like rlvr's (train: time/* and rollout counts; eval: pass@1)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rewards.pool import PoolConfig, VerifierPool
    from rlvr.algorithms import compute_advantages, microbatch_loss
    from rlvr.learner.batch import build_train_batch
    from rlvr.learner.spec import LearnerSpec
    from rlvr.tasks.loading import load_task
    from rlvr.tasks.warm_start import builtin_model_dir
    from rlvr.train.evaluation import evaluate
    from rlvr.train.run import encode
    from rlvr.train.scoring import GroupStats, score
    from rollout.hf_engine import HFEngine
    from rollout.types import SamplingSettings

    torch.manual_seed(cfg.trainer.seed)
    path = str(builtin_model_dir(cfg))
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    engine = HFEngine.around(model, tok, cfg.rollout.batch_size)  # rlvr's engine, this model
    train_rows, eval_rows = load_task(cfg)
    train_prompts, eval_prompts = encode(cfg, tok, train_rows), encode(cfg, tok, eval_rows)
    spec = LearnerSpec.from_config(cfg, path)
    lc, rc, tc = cfg.learner, cfg.rollout, cfg.trainer
    opt = torch.optim.AdamW(model.parameters(), lr=lc.lr, betas=tuple(lc.betas))
    rng = random.Random(tc.seed)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "metrics.jsonl", "w", buffering=1)

    def run_eval(step: int, pool) -> None:
        model.eval()
        metrics = evaluate(
            engine.generate, pool, tok, eval_rows, eval_prompts, n=cfg.eval.n, ks=cfg.eval.k,
            temperature=cfg.eval.temperature, max_new_tokens=rc.max_new_tokens, seed=tc.seed + 3,
        )  # fmt: skip
        log.write(json.dumps({"kind": "eval", "step": step, **metrics}) + "\n")

    with VerifierPool(PoolConfig(num_workers=0)) as pool:
        run_eval(0, pool)
        for step in range(tc.steps):
            times: dict[str, float] = {}
            began = time.perf_counter()
            idx = rng.sample(range(len(train_rows)), tc.prompts_per_step)
            rows, prompts = [train_rows[i] for i in idx], [train_prompts[i] for i in idx]
            model.eval()
            sampling = SamplingSettings(rc.n, rc.temperature, rc.top_p, rc.max_new_tokens, step)
            comps = engine.generate(prompts, sampling)
            times["time/generate"] = time.perf_counter() - began
            scores = score(pool, tok, rows, comps)
            stats = GroupStats.of(scores, comps.prompt_index_N, len(prompts))
            adv_N, valid_N = compute_advantages(
                cfg.algorithm.advantage, scores.reward_N.double(), comps.prompt_index_N,
                std_normalize=cfg.algorithm.std_normalize, eps=cfg.algorithm.eps,
            )  # fmt: skip
            keep_N = valid_N & stats.informative_P[comps.prompt_index_N]
            mark = time.perf_counter()
            if keep_N.any():
                batch = build_train_batch(prompts, comps, keep_N, adv_N.float(), tok.pad_token_id)
                with torch.no_grad():  # the policy before this step's optimizer steps
                    old_logp = token_logp(model.eval(), batch, rc.temperature)
                model.train()
                order = list(range(len(batch)))
                rng.shuffle(order)
                for part in [order[m :: lc.mini_batches] for m in range(lc.mini_batches)]:
                    mb = batch.select(part)
                    width, mask = mb.input_ids_BT.shape[1], mb.loss_mask_BT
                    logp = token_logp(model, mb, rc.temperature)
                    loss, _ = microbatch_loss(
                        spec.loss, logp, old_logp[part, :width], mb.advantages_BT, mask,
                        num_tokens=int(mask.sum()), num_seqs=int((mask.sum(1) > 0).sum()),
                        rollout_logp_BT=mb.rollout_logp_BT,
                    )  # fmt: skip
                    opt.zero_grad()
                    loss.backward()
                    if lc.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), lc.grad_clip)
                    opt.step()
            times["time/update"] = time.perf_counter() - mark
            times["time/step"] = time.perf_counter() - began
            record = {
                "kind": "train",
                "step": step + 1,
                "rollout/completions": len(comps),
                "length/mean": comps.length_N.float().mean().item(),
                **times,
            }
            log.write(json.dumps(record) + "\n")
            if cfg.eval.every and (step + 1) % cfg.eval.every == 0 or step + 1 == tc.steps:
                run_eval(step + 1, pool)
    log.close()


def token_logp(model, batch, temperature: float):
    """[B, T] log-prob of each token (column 0 is 0), full logits (an 18-symbol vocabulary)."""
    import torch

    logits = model(
        input_ids=batch.input_ids_BT, attention_mask=batch.attention_mask_BT, use_cache=False
    ).logits
    logp_all = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
    logp = logp_all.gather(-1, batch.input_ids_BT[:, 1:, None]).squeeze(-1)
    return torch.cat([torch.zeros_like(logp[:, :1]), logp], 1)


# ---- running arms -----------------------------------------------------------------------------
def run_arm(name: str, overrides: list[str], out: Path, lock: str | None) -> list[dict]:
    """One arm in its own process; returns its metrics records."""
    out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / '.cache' / 'bench-trl'}",
        "OMP_WAIT_POLICY": "PASSIVE",  # as `rlvr` sets for itself (rlvr.cli.quiet_threads)
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [sys.executable, __file__, "--arm", name, "--out", str(out), *overrides]
    if lock:  # one heavy run at a time on a shared machine, the lock held per arm only
        cmd = ["flock", lock, *cmd]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    files = list(out.rglob("metrics.jsonl"))
    return [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]


def arm_main(name: str, out: Path, overrides: list[str]) -> None:
    from rlvr.config import load_config

    cfg = load_config(str(RECIPE), GRPO + overrides + [f"trainer.output_dir={out}"])
    if name == "bare":
        bare_loop(cfg, out)
    elif name == "trl":
        eval_every = cfg.eval.every * 2  # TRL takes two optimizer steps per generated batch
        budget = cfg.trainer.steps * cfg.trainer.prompts_per_step * cfg.rollout.n
        cmd = [
            sys.executable, str(ROOT / "benchmarks" / "trl_grpo_arm.py"), str(RECIPE),
            "--seed", str(cfg.trainer.seed), "--budget", str(budget),
            "--eval-every", str(eval_every), "--out", str(out), *GRPO, *overrides,
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
    else:
        from rlvr.train.controller import train

        train(cfg, str(RECIPE), log=lambda *_: None)


def summarise(records: list[dict], target: float) -> dict:
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    if train:  # rlvr and the bare loop: per-step records
        seconds = sum(r["time/step"] for r in train)
        completions = sum(r["rollout/completions"] for r in train)
        tokens = sum(r["rollout/completions"] * r["length/mean"] for r in train)
        elapsed, clock = {}, 0.0
        for r in train:
            clock += r["time/step"]
            elapsed[r["step"]] = clock
        waited = "time/update_wait" if "time/update_wait" in train[-1] else "time/update"
        phases = {
            name: sum(r.get(key, 0.0) for r in train) / seconds
            for name, key in (("generate", "time/generate"), ("update", waited))
        }
        phases["other"] = 1.0 - sum(phases.values())
        reach = next((elapsed.get(e["step"], 0.0) for e in evals if e["pass@1"] >= target), None)
    else:  # TRL: eval records carry completions and training seconds so far
        last = evals[-1]
        seconds, completions = last["train_time_s"], last["completions"]
        tokens, phases = math.nan, {}
        reach = next((e["train_time_s"] for e in evals if e["pass@1"] >= target), None)
    return {
        "completions_per_s": completions / seconds,
        "tokens_per_s": tokens / seconds,
        "time_to_target_s": math.nan if reach is None else reach,
        "final_pass@1": evals[-1]["pass@1"] if evals else math.nan,
        "phases": phases,
        "padding_waste": statistics.fmean(
            [r["actor/padding_waste"] for r in train if "actor/padding_waste" in r] or [math.nan]
        ),
    }


def trl_missing() -> str | None:
    """Why TRL cannot run (None when it can): installed like bench_sample_efficiency.py does."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_sample_efficiency import ensure_trl

    return ensure_trl()


def fmt(values: list[float], digits: int = 1) -> str:
    good = [v for v in values if not math.isnan(v)]
    if not good:
        return "-"
    mean = statistics.fmean(good)
    spread = f" +- {statistics.stdev(good):.{digits}f}" if len(good) > 1 else ""
    missed = f" ({len(values) - len(good)} missed)" if len(good) < len(values) else ""
    return f"{mean:.{digits}f}{spread}{missed}"


def table(results: dict[str, list[dict]], target: float) -> str:
    mean = {
        arm: statistics.fmean([r["completions_per_s"] for r in runs])
        for arm, runs in results.items()
    }
    ttt = {
        arm: statistics.fmean([r["time_to_target_s"] for r in runs])
        for arm, runs in results.items()
    }
    lines = [
        f"| arm | completions/s | tokens/s | s to pass@1 {target} | final pass@1 | generate / "
        "update / other | padding waste | x bare (compl/s) | x TRL (compl/s) | "
        "time to target / TRL's |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, runs in results.items():
        ph = runs[0]["phases"]
        share = " / ".join(f"{statistics.fmean([r['phases'][k] for r in runs]):.0%}" for k in ph)
        ratio_bare = mean[arm] / mean["bare"] if "bare" in mean else math.nan
        ratio_trl = mean[arm] / mean["trl"] if "trl" in mean else math.nan
        time_trl = ttt[arm] / ttt["trl"] if "trl" in ttt else math.nan
        lines.append(
            f"| {arm} ({len(runs)} runs) | {fmt([r['completions_per_s'] for r in runs])} | "
            f"{fmt([r['tokens_per_s'] for r in runs])} | "
            f"{fmt([r['time_to_target_s'] for r in runs])} | "
            f"{fmt([r['final_pass@1'] for r in runs], 3)} | {share or '-'} | "
            f"{fmt([r['padding_waste'] for r in runs], 3)} | {ratio_bare:.2f} | "
            f"{ratio_trl:.2f} | {time_trl:.2f} |"
        )
    return "\n".join(lines)


# ---- padding waste ----------------------------------------------------------------------------
def padding_report(rows: int = 512, budget: int = 16384, micro_rows: int = 64) -> str:
    """Waste of fixed-size padded micro-batches vs token-budget ones, on lengths skewed like
    reasoning completions (log-normal, median 200 tokens, capped at 4096, 100-token prompts)."""
    from rlvr.learner.batch import MicroBatching

    rng = random.Random(0)
    lengths = [100 + min(4096, int(rng.lognormvariate(math.log(200), 1.0))) for _ in range(rows)]
    real = sum(lengths)
    items = list(range(rows))
    arms = {
        f"{micro_rows} rows, padded": MicroBatching(micro_rows),
        f"{budget} tokens, padded rows": MicroBatching(rows, budget, padding_free=False),
        f"{budget} tokens, packed": MicroBatching(rows, budget, padding_free=True),
    }
    out = [
        f"{rows} sequences, {real} tokens, lengths {min(lengths)}..{max(lengths)} "
        f"(median {statistics.median(lengths):.0f})",
        "| micro-batches | count | token slots | padding waste |",
        "|---|---|---|---|",
    ]
    for name, micro in arms.items():
        split = micro.split(items, lengths)
        slots = micro.slots(split, lengths)
        out.append(f"| {name} | {len(split)} | {slots} | {1 - real / slots:.1%} |")
    return "\n".join(out)


def packing_cost(reps: int = 5) -> str:
    """Forward + backward of the warm-started built-in model on one micro-batch, padded rows vs
    one packed row, for near-equal and for skewed lengths (CPU: the packed row's attention is a
    dense S x S product under a block-diagonal mask)."""
    import torch
    from transformers import AutoModelForCausalLM

    from rlvr.config import load_config
    from rlvr.learner.batch import TrainBatch, pack_rows
    from rlvr.tasks.warm_start import builtin_model_dir

    path = builtin_model_dir(load_config(str(RECIPE), []))
    net = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    rng = random.Random(0)
    cases = {
        "10-16 tokens, uniform": [rng.randint(10, 16) for _ in range(150)],
        "8-64 tokens, log-normal": [
            min(64, int(rng.lognormvariate(2.7, 0.6))) + 4 for _ in range(60)
        ],
    }

    def step(batch: TrainBatch, packed: bool) -> None:
        if packed:
            row = pack_rows(batch)
            inputs = {"input_ids": row.input_ids_1S, "position_ids": row.position_ids_1S}
        else:
            inputs = {"input_ids": batch.input_ids_BT, "attention_mask": batch.attention_mask_BT}
        net(**inputs, use_cache=False).logits.logsumexp(-1).sum().backward()

    lines = [
        "| lengths | sequences | tokens | padding | padded ms | packed ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, lengths in cases.items():
        width = max(lengths)
        attn = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
        ids = torch.randint(4, 18, attn.shape, generator=torch.Generator().manual_seed(0)) * attn
        batch = TrainBatch(ids, attn, attn.float(), attn.float(), attn.float())
        ms = []
        for packed in (False, True):
            step(batch, packed)  # warm-up
            began = time.perf_counter()
            for _ in range(reps):
                step(batch, packed)
            ms.append((time.perf_counter() - began) / reps * 1000)
        waste = 1 - sum(lengths) / (len(lengths) * width)
        lines.append(
            f"| {name} | {len(lengths)} | {sum(lengths)} | {waste:.0%} | "
            f"{ms[0]:.0f} | {ms[1]:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--target", type=float, default=0.6, help="held-out pass@1")
    parser.add_argument("--eval-every", type=int, default=1, help="steps between evaluations")
    parser.add_argument("--arms", default="bare,trl,rlvr-sync,rlvr-async,rlvr-budget,rlvr-packed")
    parser.add_argument("--padding", action="store_true", help="padding waste only")
    parser.add_argument("--lock", help="flock this file around each arm's run")
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # internal: run one arm
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    if args.arm:
        return arm_main(args.arm, args.out, args.overrides)
    print(padding_report())
    if args.padding:
        print(packing_cost())
        return
    arms = args.arms.split(",")
    if "trl" in arms and (why := trl_missing()):
        print(f"trl left out: {why}")
        arms.remove("trl")
    budget = "learner.max_tokens_per_micro_batch=2048"
    extra = {
        "rlvr-async": ["trainer.async_mode=one_step_off"],
        "rlvr-packed": [budget],
        "rlvr-budget": [budget, "learner.padding_free=false"],
    }
    base = Path(tempfile.mkdtemp(prefix="bench_throughput_"))
    results: dict[str, list[dict]] = {}
    for seed in range(args.repeats):
        for arm in arms:
            overrides = [f"trainer.steps={args.steps}", f"eval.every={args.eval_every}"]
            overrides.append(f"trainer.seed={seed}")
            records = run_arm(arm, overrides + extra.get(arm, []) + args.overrides,
                              base / f"{arm}-{seed}", args.lock)  # fmt: skip
            results.setdefault(arm, []).append(summarise(records, args.target))
            print(arm, seed, json.dumps(results[arm][-1]), flush=True)
    print(table(results, args.target))
    (base / "results.json").write_text(json.dumps(results, indent=1))
    print(f"results: {base / 'results.json'}")


if __name__ == "__main__":
    main()
