"""One vLLM engine on CPU, in this process: weights arrive through vLLM's own transfer API over
the gloo engine (rollout.vllm_gloo), its log-probs equal Hugging Face's, a tied head stays tied,
and the behavioural probe catches what the fingerprint cannot."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlvr.errors import PipelineError
from rlvr.learner.ds_weight_source import deepspeed_weight_source
from rlvr.train.probe import check_probe, probe_gap
from rollout.types import SamplingSettings, score_tokens
from rollout.vllm_engine import EngineSetup, VLLMConfig, VLLMEngine

# "<bos>12+34=" style prompts of the built-in vocabulary (4 specials, digits at 4..13)
PROBE = [[1, 5, 6, 14, 7, 8, 17], [1, 9, 14, 9, 17, 5, 12, 2], [1, 13, 15, 4, 17, 13]]
TOL = 1e-5  # fp32: measured gaps are 1e-6 to 2e-6


class DirectClient:
    """vLLM's four-method sync client, calling one in-process engine directly."""

    def __init__(self, engine):
        self.engine = engine

    def init_weight_transfer_engine(self, info):
        self.engine.init_weight_transfer_engine(info)

    def start_weight_update(self):
        self.engine.start_weight_update()

    def update_weights(self, info):
        self.engine.update_weights(info)

    def finish_weight_update(self, weight_version=None):
        self.engine.finish_weight_update()


def start_engine(path):
    setup = EngineSetup(
        dtype="float32",
        max_model_len=64,
        transfer_backend="gloo",
        enable_sleep_mode=False,
        trust_remote_code=False,
        device="cpu",
    )
    return VLLMEngine(path, VLLMConfig(load_format="dummy", enforce_eager=True), setup)


def trainer(engine, model, bucket_bytes: int = 1 << 20):
    from vllm.distributed.weight_transfer import WeightTransferTrainerFactory

    from rollout.vllm_gloo import GlooTrainerInitInfo

    info = GlooTrainerInitInfo(
        master_address="127.0.0.1", world_size=2, rank=0, packed_buffer_size_bytes=bucket_bytes
    )
    source = deepspeed_weight_source(model, digest=True)
    return WeightTransferTrainerFactory.trainer_init(
        info, client=DirectClient(engine), source=source
    ), source


@torch.no_grad()
def nudge(model, seed: int, scale: float = 0.01):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(scale * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def tied(tiny_model_dir):
    engine = start_engine(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    send, source = trainer(engine, model)
    return engine, model, send, source


def test_sync_into_dummy_engine_then_logprobs_equal_hf(tied):
    engine, model, send, source = tied
    assert model.config.tie_word_embeddings
    # before any sync the engine holds dummy (random) weights: nats away from the model
    assert probe_gap(score_tokens(model, PROBE, "cpu"), engine.score(PROBE))[0] > 1.0
    for seed in range(3):  # several syncs, each of changed weights
        nudge(model, seed)
        send.send_weights()
        fp = engine.after_sync()
        assert fp == [source.fingerprint()]
        mean, worst = probe_gap(score_tokens(model, PROBE, "cpu"), engine.score(PROBE))
        assert worst <= TOL, (seed, mean, worst)
    # the sampled tokens' log-probs (processed, T = 1) equal HF's log_softmax on them
    out = engine.generate(PROBE, SamplingSettings(n=4, max_new_tokens=5, seed=3))
    rows = []
    for i in range(len(out)):
        prompt = PROBE[int(out.prompt_index_N[i])]
        rows.append(prompt + out.tokens(i))
    hf = score_tokens(model, rows, "cpu")
    for i, row in enumerate(hf):
        n = int(out.length_N[i])
        got = out.logprobs_NL[i, :n]
        torch.testing.assert_close(got, torch.tensor(row[-n:]), atol=TOL, rtol=0)
    # 9 tensors per layer x 2 + embedding + final norm: the tied head is never sent
    assert source.bytes == 4 * sum(p.numel() for p in model.parameters())


def test_stale_head_and_damaged_tensor_pass_the_digest_but_not_the_probe(tied):
    engine, model, send, source = tied
    engine.llm.collective_rpc("rlvr_set_retie", args=(False,))  # vLLM's own behaviour
    try:
        nudge(model, 10, scale=0.05)
        send.send_weights()
        assert engine.after_sync() == [source.fingerprint()]  # every tensor arrived intact
        learner = score_tokens(model, PROBE, "cpu")
        with pytest.raises(PipelineError, match="rollout worker 0 scores the probe"):
            check_probe(learner, [engine.score(PROBE)], 1e-3)
        assert probe_gap(learner, engine.score(PROBE))[0] > 1e-2  # the head is one sync old
    finally:
        engine.llm.collective_rpc("rlvr_set_retie", args=(True,))
    send.send_weights()
    assert engine.after_sync() == [source.fingerprint()]
    assert check_probe(score_tokens(model, PROBE, "cpu"), [engine.score(PROBE)], TOL)
    # a tensor damaged after loading: the digest of what arrived still matches
    [name] = engine.llm.collective_rpc("rlvr_damage_parameter", args=("input_layernorm", 0.5))
    assert name == "model.layers.0.input_layernorm.weight"
    with pytest.raises(PipelineError, match="rollout worker 0"):
        check_probe(score_tokens(model, PROBE, "cpu"), [engine.score(PROBE)], 1e-3)
    send.send_weights()  # the next sync repairs it
    assert engine.after_sync() == [source.fingerprint()]
    check_probe(score_tokens(model, PROBE, "cpu"), [engine.score(PROBE)], TOL)


def test_untied_head_is_sent_and_loaded(tiny_model_dir, tmp_path_factory):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.config.tie_word_embeddings = False
    head = model.get_output_embeddings()
    head.weight = torch.nn.Parameter(head.weight.detach().clone() + 0.05)
    path = tmp_path_factory.mktemp("untied")
    model.save_pretrained(path)
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).config  # noqa: B018 (tokenizer below)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert "lm_head.weight" in dict(model.named_parameters())
    engine = start_engine(str(path))
    send, source = trainer(engine, model)
    nudge(model, 20)
    send.send_weights()
    assert engine.after_sync() == [source.fingerprint()]
    worst = probe_gap(score_tokens(model, PROBE, "cpu"), engine.score(PROBE))[1]
    assert worst <= TOL
