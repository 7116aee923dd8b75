"""The TRL peer arm of bench_sample_efficiency.py: the same warm-started model, task, group size,
sampling and budget through TRL's `GRPOTrainer` on CPU, evaluated by rlvr's own evaluation.

    PYTHONPATH=.:.cache/bench-trl python benchmarks/trl_grpo_arm.py RECIPE --seed 0 \
        --budget 40000 --eval-every 20 --out DIR [key=value ...]

TRL is not a project dependency: bench_sample_efficiency.py installs it with `pip install
--no-deps --target .cache/bench-trl trl==1.16.0` after checking that the project's environment
already satisfies its requirements (so nothing can pull another torch build).

Matched to the rlvr GRPO arm: B = trainer.prompts_per_step prompts x N = rollout.n completions per
generation, two optimizer steps per generation (TRL `steps_per_generation=2`, the arm's
`learner.mini_batches=2`), one pass (`num_iterations=1`), T = rollout.temperature, top-p 1, no
top-k, completion cap rollout.max_new_tokens, std-normalised group advantages
(`scale_rewards="group"`), token-mean loss (`loss_type="dapo"`), clip 0.2 / 0.2, no KL (`beta=0`),
AdamW at learner.lr, constant schedule, grad clip 1.0, fp32. Differences left: TRL keeps
zero-variance groups in the batch (advantage 0, their tokens still count in the token-mean
denominator; rlvr drops them), and TRL runs in one process with no Ray, no weight sync and no
verifier pool.

Writes DIR/metrics.jsonl: one `eval` record per evaluation with the step, completions generated
so far, training seconds so far (evaluation time excluded) and rlvr's evaluation metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch


def exact_match_reward(completions, answer, **_):
    """rlvr's `arith` verifier: the stripped completion equals the integer answer."""
    return [1.0 if c.strip() == str(a).strip() else 0.0 for c, a in zip(completions, answer)]


def live_engine(model, tokenizer, batch_size: int):
    """rlvr's HF engine around the model being trained (no reload from disk)."""
    from rollout.hf_engine import HFEngine

    return HFEngine.around(model, tokenizer, batch_size)


def make_callback(
    cfg,
    model,
    tokenizer,
    eval_rows,
    eval_prompts,
    pool,
    out: Path,
    per_step: int,
    gen_batch: int,
    every: int,
):
    from transformers import TrainerCallback

    from rlvr.train.evaluation import evaluate

    class EvalCallback(TrainerCallback):
        """rlvr's held-out evaluation at step 0, every `every` optimizer steps and at the end."""

        def __init__(self):
            self.log = open(out / "metrics.jsonl", "a", buffering=1)
            self.began, self.eval_s, self.last = 0.0, 0.0, -1

        def run_eval(self, step: int) -> None:
            if step == self.last:
                return
            paused = time.perf_counter()
            rng, was_training = torch.get_rng_state(), model.training
            model.eval()
            metrics = evaluate(
                live_engine(model, tokenizer, cfg.rollout.batch_size).generate,
                pool,
                tokenizer,
                eval_rows,
                eval_prompts,
                n=cfg.eval.n,
                ks=cfg.eval.k,
                temperature=cfg.eval.temperature,
                max_new_tokens=cfg.rollout.max_new_tokens,
                seed=cfg.trainer.seed + 3,
            )  # the eval seed of rlvr's loop
            model.train(was_training)
            torch.set_rng_state(rng)
            train_s = paused - self.began - self.eval_s
            self.eval_s += time.perf_counter() - paused
            done = math.ceil(step * per_step / gen_batch) * gen_batch  # generated in whole batches
            record = {
                "kind": "eval",
                "step": step,
                "completions": done,
                "train_time_s": train_s,
                "time/eval": time.perf_counter() - paused,
                **metrics,
            }
            self.log.write(json.dumps(record) + "\n")
            print(
                f"step {step} completions {done} pass@1 {metrics['pass@1']:.3f} "
                f"pass@8 {metrics.get('pass@8', float('nan')):.3f} train {train_s:.0f}s",
                flush=True,
            )
            self.last = step

        def on_train_begin(self, args, state, control, **kw):
            self.began = time.perf_counter()
            self.run_eval(0)

        def on_step_end(self, args, state, control, **kw):
            if state.global_step % every == 0:
                self.run_eval(state.global_step)

        def on_train_end(self, args, state, control, **kw):
            self.run_eval(state.global_step)
            self.log.close()

    return EvalCallback()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=int, required=True, help="generated completions")
    parser.add_argument(
        "--eval-every", type=int, default=20, help="optimizer steps between evaluations"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rewards.pool import PoolConfig, VerifierPool
    from rlvr.config import load_config
    from rlvr.tasks.loading import load_task
    from rlvr.tasks.warm_start import builtin_model_dir
    from rlvr.train.run import encode

    cfg = load_config(args.recipe, args.overrides + [f"trainer.seed={args.seed}"])
    model_path = str(builtin_model_dir(cfg))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    train_rows, eval_rows = load_task(cfg)
    data = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in train_rows])
    n, gen_batch = cfg.rollout.n, cfg.trainer.prompts_per_step * cfg.rollout.n
    per_step = gen_batch // 2  # two optimizer steps per generated batch, as the rlvr GRPO arm
    args.out.mkdir(parents=True, exist_ok=True)
    config = GRPOConfig(
        output_dir=str(args.out / "trl"),
        per_device_train_batch_size=per_step,
        gradient_accumulation_steps=1,
        steps_per_generation=2,
        num_generations=n,
        max_completion_length=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature,
        top_p=1.0,
        top_k=0,
        learning_rate=cfg.learner.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=cfg.learner.grad_clip,
        weight_decay=cfg.learner.weight_decay,
        beta=0.0,
        epsilon=cfg.algorithm.clip_low,
        epsilon_high=cfg.algorithm.clip_high,
        loss_type="dapo",
        scale_rewards="group",
        num_iterations=1,
        max_steps=math.ceil(args.budget / per_step),
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=args.seed,
        data_seed=args.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        log_completions=False,
    )
    with VerifierPool(PoolConfig(num_workers=0)) as pool:
        callback = make_callback(
            cfg,
            model,
            tokenizer,
            eval_rows,
            encode(cfg, tokenizer, eval_rows),
            pool,
            args.out,
            per_step,
            gen_batch,
            args.eval_every,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=exact_match_reward,
            args=config,
            train_dataset=data,
            processing_class=tokenizer,
            callbacks=[callback],
        )
        trainer.train()


if __name__ == "__main__":
    main()
