"""GPU check without Ray: DeepSpeed learner ranks and an HF rollout engine under torchrun, one
learner update, then bucketed weight syncs from learner rank 0 into the engine.

    torchrun --standalone --nproc-per-node W tests/gpu/sync_torchrun.py --gpus G [--zero 3] ...

Ranks 0..W-2 are learners (`rlvr.learner.deepspeed_learner.Learner`, one DeepSpeed world), rank W-1
runs `rollout.hf_engine.HFEngine`. Process r uses GPU r % G; --gpus 0 runs the same flow on CPU
(float32, gloo), which is how this script itself is tested without a GPU. The sync group is NCCL
when learner rank 0 and the engine have different GPUs; on a single GPU it is gloo over CUDA tensors
(NCCL refuses two ranks on one device), and the result says so. Small control messages (ports, the
manifest, the completions) go through torchrun's own store. Prints `RESULT {json}` on rank 0 (sync
figures) and on the engine rank (tokens/s).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--gpus", type=int, required=True)
    p.add_argument("--zero", type=int, default=3)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--syncs", type=int, default=3)
    p.add_argument("--bucket-mb", type=float, default=32.0)
    p.add_argument("--workdir", default="/tmp/rlvr-gpu-check")
    return p.parse_args()


def main() -> int:
    args = parse()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    # One GPU per process, chosen before anything initialises CUDA (Learner assumes LOCAL_RANK 0).
    os.environ["CUDA_VISIBLE_DEVICES"] = str(rank % args.gpus) if args.gpus else ""
    import torch
    import torch.distributed as dist

    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False
    )
    # The learners' DeepSpeed world is its own process group, not torchrun's agent store.
    os.environ.pop("TORCHELASTIC_USE_AGENT_STORE", None)
    learners, engine_rank = world - 1, world - 1
    model_dir = Path(args.workdir) / f"model-{args.hidden}x{args.layers}"
    if rank == 0:
        build_model_dir(model_dir, args.hidden, args.layers)
        store.set("model_ready", "1")
    store.get("model_ready")  # blocks until rank 0 has written it
    cfg = make_config(model_dir, learners, args)
    backend = "nccl" if args.gpus > 1 else "gloo"
    if rank == engine_rank:
        result = run_engine(store, model_dir, args, backend)
    else:
        result = run_learner(store, rank, learners, cfg, model_dir, args, backend)
    if result is not None:
        result["card"] = torch.cuda.get_device_name(0) if args.gpus else "cpu"
        print("RESULT " + json.dumps(result), flush=True)
    return 0


def build_model_dir(path: Path, hidden: int, layers: int) -> None:
    from rlvr.tasks.tiny_model import TinyModelConfig, build_model, build_tokenizer

    if (path / "config.json").exists():
        return
    tokenizer = build_tokenizer()
    tiny = TinyModelConfig(
        hidden_size=hidden,
        num_layers=layers,
        num_heads=max(1, hidden // 128),
        intermediate_size=4 * hidden,
        max_positions=64,
    )
    model = build_model(tiny, tokenizer, seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def make_config(model_dir: Path, learners: int, args):
    from rlvr.config import load_config

    return load_config(
        None,
        [
            f"model.path={model_dir}",
            f"model.dtype={dtype(args)}",
            f"learner.num_workers={learners}",
            f"learner.zero_stage={args.zero}",
            f"learner.gpus_per_worker={int(args.gpus > 0)}",
            "learner.lr=1.0e-4",
            "learner.micro_batch_size=16",
            "rollout.max_new_tokens=8",
        ],
    )


def run_learner(store, rank, learners, cfg, model_dir, args, backend):
    from rlvr.learner.batch import MicroBatching, TrainBatch, plan_update, shard_rows
    from rlvr.learner.deepspeed_learner import Learner, free_port
    from rlvr.learner.spec import LearnerSpec

    learner = Learner(rank, learners, LearnerSpec.from_config(cfg, str(model_dir)))
    if rank == 0:
        store.set("ds_port", str(free_port()))
    learner.setup("127.0.0.1", int(store.get("ds_port")))
    if rank == 0:
        port = learner.create_sync_store("127.0.0.1", 2, 600.0)
        store.set("manifest", pickle.dumps(learner.manifest()))
        store.set("sync_port", str(port))
        learner.join_sync("127.0.0.1", 2, backend, int(args.bucket_mb * 2**20), 600.0)
    batch: TrainBatch = pickle.loads(store.get("batch"))
    shards = shard_rows(batch, learners)
    plans = plan_update(batch, shards, epochs=1, mini_batches=1, micro=MicroBatching(16), seed=0)
    stats = learner.update(batch.select(shards[rank]), plans[rank], True)
    fingerprint_after_update = learner.fingerprint()
    times, sent = [], {}
    for _ in range(args.syncs):
        store.get(f"engine_ready_{len(times)}")
        began = time.perf_counter()
        sent = learner.send_weights()
        if rank == 0:
            times.append(time.perf_counter() - began)
            store.set(f"sent_{len(times) - 1}", json.dumps(sent))
        else:
            times.append(0.0)
    if rank != 0:
        return None
    best = min(times[1:] or times)
    return {
        "role": "learner",
        "backend": backend,
        "zero_stage": args.zero,
        "learners": learners,
        "bytes": sent["bytes"],
        "sync_s": times,
        "sync_GBps": sent["bytes"] / best / 1e9,
        "fingerprint": sent["fingerprint"],
        "fingerprint_after_update": fingerprint_after_update,
        "optimizer_steps": stats.get("optimizer_steps", 0),
    }


def dtype(args) -> str:
    return "bfloat16" if args.gpus else "float32"


def run_engine(store, model_dir, args, backend):
    import torch

    from rlvr.learner.batch import build_train_batch
    from rollout.hf_engine import HFEngine
    from rollout.types import SamplingSettings
    from rollout.weight_sync import SyncGroup, plan_buckets, receive_buckets

    device = torch.device("cuda" if args.gpus else "cpu")
    engine = HFEngine(
        str(model_dir),
        dtype=dtype(args),
        device=device.type,
        batch_size=1024,
        trust_remote_code=False,
    )
    sync = torch.cuda.synchronize if args.gpus else (lambda: None)
    prompts = [[1] + [4 + (i * 7 + j) % 10 for j in range(5)] for i in range(64)]  # <bos> + digits
    sampling = SamplingSettings(n=8, temperature=1.0, max_new_tokens=8, seed=1)
    engine.generate(prompts[:4], sampling)  # warm-up
    sync()
    began = time.perf_counter()
    comps = engine.generate(prompts, sampling)
    sync()
    tokens_per_s = int(comps.length_N.sum()) / (time.perf_counter() - began)
    advantages = torch.randn(len(comps))
    store.set(
        "batch",
        pickle.dumps(
            build_train_batch(
                prompts, comps, torch.ones(len(comps), dtype=torch.bool), advantages, engine.pad_id
            )
        ),
    )
    from rollout.weight_sync import fingerprint

    initial = fingerprint(engine.named_parameters())  # the learners start from the same weights
    manifest = pickle.loads(store.get("manifest"))
    group = SyncGroup("127.0.0.1", int(store.get("sync_port")), 1, 2, backend, 600.0)
    plan = plan_buckets(manifest, int(args.bucket_mb * 2**20))
    matches = []
    for i in range(args.syncs):
        store.set(f"engine_ready_{i}", "1")
        receive_buckets(group, manifest, plan, device, engine.load_weights)
        got = fingerprint(engine.named_parameters())
        matches.append(got == json.loads(store.get(f"sent_{i}"))["fingerprint"])
    return {
        "role": "engine",
        "hf_tokens_per_s": tokens_per_s,
        "completions": len(comps),
        "fingerprints_match": matches,
        "fingerprint_before_sync": initial,
    }


if __name__ == "__main__":
    sys.exit(main())
