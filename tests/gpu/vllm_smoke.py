"""The first vLLM smoke test (shared VLLM.md), on one GPU, in one process. Prints `RESULT {json}`.

A small random Llama is saved in HF format; vLLM starts from random weights (load_format
"dummy", TP 1) and receives the HF model's weights through vLLM's own transfer engine (CUDA IPC,
packed) driven by our source and client code. Checked: every worker's fingerprint of what it
loaded equals the sender's; reset_prefix_cache() returned True (inside after_sync); greedy vLLM
outputs equal HF greedy outputs; vLLM's processed log-probs of sampled tokens match the
learner's formula log_softmax(logits / T) within 1e-2; and a generation throughput figure.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


class InProcessClient:
    """VLLMWeightSyncClient over an in-process engine (the Ray client does the same remotely)."""

    def __init__(self, engine):
        self.engine = engine

    def init_weight_transfer_engine(self, init_info):
        self.engine.init_weight_transfer_engine(init_info)

    def start_weight_update(self):
        self.engine.start_weight_update()

    def update_weights(self, update_info):
        self.engine.update_weights(update_info)

    def finish_weight_update(self, weight_version=None):
        self.engine.finish_weight_update()


def main(workdir: str = "/tmp/rlvr-vllm-smoke") -> int:
    import torch
    from transformers import AutoModelForCausalLM
    from vllm.distributed.weight_transfer import WeightTransferTrainerFactory
    from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

    from rlvr.learner.ds_weight_source import deepspeed_weight_source
    from rollout.types import SamplingSettings
    from rollout.vllm_engine import EngineSetup, VLLMConfig, VLLMEngine
    from tests.gpu.sync_torchrun import build_model_dir

    model_dir = Path(workdir) / "model"
    build_model_dir(model_dir, hidden=256, layers=4)
    learner = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).cuda().eval()
    with torch.no_grad():  # weights the dummy-loaded engine cannot have by chance
        for p in learner.parameters():
            p.add_(0.01 * torch.randn_like(p))
    engine = VLLMEngine(
        str(model_dir),
        VLLMConfig(gpu_memory_utilization=0.3, enforce_eager=True),
        EngineSetup(
            dtype="float32",
            max_model_len=64,
            transfer_backend="ipc",
            enable_sleep_mode=False,
            trust_remote_code=False,
            device="cuda",
        ),
    )
    source = deepspeed_weight_source(learner, digest=True)
    transfer = WeightTransferTrainerFactory.trainer_init(
        IPCTrainerInitInfo(rank=0, packed=True, packed_buffer_size_bytes=8 << 20),
        client=InProcessClient(engine),
        source=source,
    )
    began = time.perf_counter()
    transfer.send_weights()
    sync_s = time.perf_counter() - began
    fingerprints = engine.after_sync()  # raises unless reset_prefix_cache() returned True

    prompts = [[1] + [4 + (i * 3 + j) % 10 for j in range(6)] for i in range(16)]
    greedy = engine.generate(
        prompts, SamplingSettings(n=1, temperature=0.0, max_new_tokens=12, seed=0)
    )
    same = 0
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([prompt], device="cuda")
        hf = learner.generate(
            ids, do_sample=False, max_new_tokens=12, eos_token_id=2, pad_token_id=0
        )
        same += hf[0, len(prompt) :].tolist()[: int(greedy.length_N[i])] == greedy.tokens(i)

    temperature = 0.8
    sampled = engine.generate(
        prompts, SamplingSettings(n=4, temperature=temperature, max_new_tokens=12, seed=1)
    )
    worst = 0.0
    for i in range(len(sampled)):
        prompt, tokens = prompts[int(sampled.prompt_index_N[i])], sampled.tokens(i)
        ids = torch.tensor([prompt + tokens], device="cuda")
        with torch.no_grad():
            logits = learner(ids).logits[0, len(prompt) - 1 : -1].float()
        ours = torch.log_softmax(logits / temperature, -1).gather(
            -1, torch.tensor(tokens, device="cuda")[:, None]
        )
        worst = max(
            worst,
            (ours.squeeze(-1).cpu() - sampled.logprobs_NL[i, : len(tokens)]).abs().max().item(),
        )

    many = [[1] + [4 + (i * 7 + j) % 10 for j in range(8)] for i in range(256)]
    torch.cuda.synchronize()
    began = time.perf_counter()
    out = engine.generate(many, SamplingSettings(n=8, temperature=1.0, max_new_tokens=48, seed=2))
    tokens_per_s = int(out.length_N.sum()) / (time.perf_counter() - began)
    print(
        "RESULT "
        + json.dumps(
            {
                "card": torch.cuda.get_device_name(0),
                "fingerprints": fingerprints,
                "sent": source.fingerprint(),
                "greedy_equal": same,
                "prompts": len(prompts),
                "max_logprob_diff": worst,
                "sync_s": sync_s,
                "sync_bytes": source.bytes,
                "vllm_tokens_per_s": tokens_per_s,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
