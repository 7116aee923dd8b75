"""The built-in model and tokenizer round-trip through save/from_pretrained; the HF engine's
log-probs are the sampling distribution's."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlvr.config import load_config
from rlvr.tasks.tiny_model import build_model, build_tokenizer
from rollout.hf_engine import HFEngine
from rollout.types import SamplingSettings


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    tok = build_tokenizer()
    model = build_model(load_config(None).model.tiny, tok, seed=0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model, tok


def test_character_tokenizer_by_hand():
    tok = build_tokenizer()
    # vocab: <pad>0 <bos>1 <eos>2 <unk>3, digits 4..13, + 14, - 15, * 16, = 17
    assert len(tok) == 18
    assert tok("12+34=").input_ids == [1, 5, 6, 14, 7, 8, 17]
    assert tok("7*0-9=").input_ids == [1, 11, 16, 4, 15, 13, 17]
    assert tok.decode([5, 6, 2], skip_special_tokens=True) == "12"
    batch = tok(["1+2=", "10+20="], padding=True)
    assert batch.input_ids[0] == [0, 0, 1, 5, 14, 6, 17]  # left padding for generation
    assert batch.attention_mask[0] == [0, 0, 1, 1, 1, 1, 1]


def test_round_trip_identical_weights_and_tokenizer(saved):
    path, model, tok = saved
    loaded = AutoModelForCausalLM.from_pretrained(path)
    assert loaded.config.model_type == "llama" and loaded.config.tie_word_embeddings
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    tok2 = AutoTokenizer.from_pretrained(path)
    for text in ["12+34=", "999*9-0=", "5"]:
        assert tok2(text).input_ids == tok(text).input_ids
    assert (tok2.pad_token_id, tok2.bos_token_id, tok2.eos_token_id) == (0, 1, 2)
    assert tok2.padding_side == "left"


def test_hf_engine_logprobs_match_a_fresh_forward(saved):
    path, _, tok = saved
    torch.manual_seed(0)
    engine = HFEngine(
        str(path), dtype="float32", batch_size=5, trust_remote_code=False
    )  # 3 prompts x 4 samples: chunks of 5, 5, 2
    prompts = tok(["1+2=", "10+20=", "99+9="]).input_ids
    temp = 0.7
    comps = engine.generate(
        prompts, SamplingSettings(n=4, temperature=temp, max_new_tokens=5, seed=3)
    )
    assert comps.prompt_index_N.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    model = engine.model
    for i in range(len(comps)):
        prompt, gen = prompts[int(comps.prompt_index_N[i])], comps.tokens(i)
        stopped = comps.finish_reason[i] == "stop"
        assert stopped == (gen[-1] == tok.eos_token_id) and (stopped or len(gen) == 5)
        assert tok.eos_token_id not in gen[:-1]
        ids = torch.tensor([prompt + gen])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1 : -1] / temp
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(gen)[:, None]).squeeze(-1)
        torch.testing.assert_close(comps.logprobs_NL[i, : len(gen)], expected, atol=1e-5, rtol=1e-5)
        assert torch.all(comps.logprobs_NL[i, len(gen) :] == 0)
    again = engine.generate(
        prompts, SamplingSettings(n=4, temperature=temp, max_new_tokens=5, seed=3)
    )
    assert torch.equal(again.token_ids_NL, comps.token_ids_NL)  # seeded
