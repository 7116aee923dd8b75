"""Completions are capped so that prompt + completion fits the engine's context: one function,
`completion_caps`, applied by both engines (the HF engine for real, the vLLM engine's requests
checked through a stand-in `vllm` module)."""

import sys
import types

import pytest
import torch
from pydantic import BaseModel

from rollout.types import FINISH_LENGTH, SamplingSettings, completion_caps


def test_caps_leave_room_for_the_prompt():
    assert completion_caps([3, 10, 15], 6, 16) == [6, 6, 1]  # 16 - 10 = 6, 16 - 15 = 1
    assert completion_caps([3, 100], 6, None) == [6, 6]  # no known limit
    with pytest.raises(ValueError, match="a prompt of 16 tokens leaves no room .* context of 16"):
        completion_caps([3, 16], 6, 16)


class Tiny(BaseModel):
    hidden_size: int = 16
    num_layers: int = 1
    num_heads: int = 2
    intermediate_size: int = 32
    max_positions: int = 16


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A randomly initialised built-in model with 16 positions (the architecture of the real
    one, smaller): generation needs no training to show where it stops."""
    from rlvr.tasks.tiny_model import build_model, build_tokenizer

    path = tmp_path_factory.mktemp("tiny16")
    tok = build_tokenizer()
    build_model(Tiny(), tok, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_the_hf_engine_cuts_each_completion_at_its_cap(tiny_model_dir, one_thread):
    from rollout.hf_engine import HFEngine

    engine = HFEngine(tiny_model_dir, dtype="float32", batch_size=64, trust_remote_code=False)
    assert engine.context_len == 16
    long, short = [1] + [5] * 13, [1, 5, 17]  # 14 and 3 tokens: room for 2 and for 13 (cap 6)
    sampling = SamplingSettings(n=8, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=3)
    out = engine.generate([long, short], sampling)
    length_N, reasons = out.length_N, out.finish_reason
    assert out.prompt_index_N.tolist() == [0] * 8 + [1] * 8
    assert int(length_N[:8].max()) == 2 and int(length_N[8:].max()) <= 6
    assert int(length_N[8:].max()) > 2  # the short prompt's completions were not cut at 2
    for i in range(16):
        n = int(length_N[i])
        assert (out.token_ids_NL[i, n:] == out.pad_id).all() and (out.logprobs_NL[i, n:] == 0).all()
        stopped = int(out.token_ids_NL[i, n - 1]) == engine.eos_id
        assert reasons[i] == ("stop" if stopped else FINISH_LENGTH)
    with pytest.raises(ValueError, match="leaves no room"):
        engine.generate([[1] + [5] * 15], sampling)


class Recorded:
    """Stand-in for vllm.SamplingParams / TokensPrompt: keeps its keyword arguments."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs


def test_the_vllm_engine_asks_each_request_for_its_capped_length(monkeypatch):
    """VLLMEngine.generate builds one SamplingParams per prompt with max_tokens from
    completion_caps and vLLM's max_model_len; a stand-in LLM returns that many tokens."""
    from rollout.vllm_engine import EngineSetup, VLLMConfig, VLLMEngine, request_seed

    vllm = types.ModuleType("vllm")
    vllm.SamplingParams = Recorded
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = Recorded
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)

    class LLM:
        def generate(self, prompts, params, use_tqdm):
            self.params = params
            return [
                types.SimpleNamespace(
                    outputs=[sample(k, p.kwargs["max_tokens"]) for k in range(p.kwargs["n"])]
                )
                for p in params
            ]

    def sample(index, tokens):
        ids = [5] * tokens
        logprobs = [{5: types.SimpleNamespace(logprob=-1.0)} for _ in ids]
        return types.SimpleNamespace(
            index=index, token_ids=ids, logprobs=logprobs, finish_reason="length"
        )

    engine = VLLMEngine.__new__(VLLMEngine)
    engine.llm, engine.asleep, engine.pad_id = LLM(), False, 0
    engine.setup = EngineSetup("float32", 16, None, False, False, "cuda")
    engine.config = VLLMConfig()  # seed_mode=request: a seed per prompt
    sampling = SamplingSettings(n=2, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=3)
    out = engine.generate([[1] * 14, [1] * 3], sampling)
    assert [p.kwargs["max_tokens"] for p in engine.llm.params] == [2, 6]
    assert [p.kwargs["seed"] for p in engine.llm.params] == [request_seed(3, p, 2) for p in (0, 1)]
    assert out.length_N.tolist() == [2, 2, 6, 6]
    assert torch.equal(out.prompt_index_N, torch.tensor([0, 0, 1, 1]))


def test_batch_seed_mode_reseeds_the_workers_once_and_leaves_requests_unseeded(monkeypatch):
    """seed_mode=batch: one rlvr_reseed per generate call, every request unseeded, caps kept."""
    from rollout.vllm_engine import SEED_MODULUS, EngineSetup, VLLMConfig, VLLMEngine

    vllm = types.ModuleType("vllm")
    vllm.SamplingParams = Recorded
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = Recorded
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    calls = []

    class LLM:
        def collective_rpc(self, method, args=()):
            calls.append((method, args))

        def generate(self, prompts, params, use_tqdm):
            self.params = params
            ok = types.SimpleNamespace(logprob=-1.0)
            done = [
                types.SimpleNamespace(
                    index=0, token_ids=[5], logprobs=[{5: ok}], finish_reason="stop"
                )
            ]
            return [types.SimpleNamespace(outputs=done) for _ in params]

    engine = VLLMEngine.__new__(VLLMEngine)
    engine.llm, engine.asleep, engine.pad_id = LLM(), False, 0
    engine.setup = EngineSetup("float32", 16, None, False, False, "cpu")
    engine.config = VLLMConfig(seed_mode="batch")
    seed = 2**40 + 5
    engine.generate([[1] * 14, [1] * 3], SamplingSettings(n=1, max_new_tokens=6, seed=seed))
    assert calls == [("rlvr_reseed", (seed % SEED_MODULUS,))]
    assert [p.kwargs["seed"] for p in engine.llm.params] == [None, None]
    assert [p.kwargs["max_tokens"] for p in engine.llm.params] == [2, 6]
