"""Warm start of the built-in model: supervised fine-tuning on noisy arithmetic demonstrations.

Loss on answer tokens (and EOS) only; AdamW with linear warm-up and cosine decay. Runs in one
process, no Ray: it exists to give RL a policy that knows the format but is unreliable.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from rlvr.learner.lr_schedule import lr_lambda
from rlvr.tasks.arith import DemoSampler
from rlvr.tasks.tiny_model import build_model, build_tokenizer


class SFTConfig(BaseModel):
    """The `sft` section: warm start of the built-in model on noisy demonstrations (rlvr sft)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    steps: int = Field(600, ge=1, description="optimizer steps")
    batch_size: int = Field(256, ge=1, description="sequences per step")
    lr: float = Field(3e-3, gt=0.0, description="peak AdamW learning rate")
    warmup_steps: int = Field(50, ge=0, description="linear warm-up before the cosine decay")
    weight_decay: float = Field(0.0, ge=0.0)
    noise: float = Field(
        0.4,
        ge=0.0,
        le=1.0,
        description="probability that a demonstration's answer has one digit shifted by +-1 "
        "(leaves the model unreliable, so RL has something to sharpen)",
    )
    mix: dict[str, Annotated[float, Field(gt=0.0)]] = Field(
        default_factory=dict, description="levels of the demonstrations; empty = data.arith.mix"
    )
    seed: int = Field(0)


IGNORE = -100


def demo_batch(sampler: DemoSampler, tokenizer, size: int) -> tuple[torch.Tensor, ...]:
    """(input_ids_BT, attention_mask_BT, labels_BT), right-padded; labels only on the answer."""
    pairs = [sampler.sample() for _ in range(size)]
    prompts = tokenizer([p for p, _ in pairs]).input_ids
    answers = tokenizer([a for _, a in pairs], add_special_tokens=False).input_ids
    width = max(len(p) + len(a) + 1 for p, a in zip(prompts, answers))
    ids = torch.full((size, width), tokenizer.pad_token_id, dtype=torch.long)
    attn = torch.zeros((size, width), dtype=torch.long)
    labels = torch.full((size, width), IGNORE, dtype=torch.long)
    for row, (p, a) in enumerate(zip(prompts, answers)):
        seq = p + a + [tokenizer.eos_token_id]
        ids[row, : len(seq)] = torch.tensor(seq)
        attn[row, : len(seq)] = 1
        labels[row, len(p) : len(seq)] = torch.tensor(a + [tokenizer.eos_token_id])
    return ids, attn, labels


def run_sft(cfg, out_dir: Path, *, log=print) -> dict:
    """Train the built-in model per `cfg.sft` and save model + tokenizer to `out_dir`."""
    sft = cfg.sft
    tokenizer = build_tokenizer()
    model = build_model(cfg.model.tiny, tokenizer, sft.seed)
    sampler = DemoSampler(
        sft.mix or cfg.data.arith.mix, cfg.data.arith.heldout_fraction, sft.noise, sft.seed
    )
    opt = torch.optim.AdamW(model.parameters(), lr=sft.lr, weight_decay=sft.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("cosine", sft.warmup_steps, sft.steps))
    start, losses = time.time(), []
    bar = tqdm(range(sft.steps), desc="sft", unit="step", mininterval=2.0)
    for _ in bar:
        ids, attn, labels = demo_batch(sampler, tokenizer, sft.batch_size)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}", refresh=False)
    metrics = {
        "sft_steps": sft.steps,
        "sft_seconds": round(time.time() - start, 1),
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "sft_metrics.json").write_text(json.dumps(metrics, indent=2))
    log(
        f"sft: {metrics['sft_steps']} steps in {metrics['sft_seconds']} s, "
        f"loss {metrics['final_loss']:.3f}, {metrics['parameters']} parameters -> {out_dir}"
    )
    return metrics
