"""The integration recipe of docs/kernels.md, run on tiny random Hugging Face models.

The learner calls the decoder (`model.model`) for final hidden states and passes
`model.get_output_embeddings().weight`, so the LM head never builds [B, T, V] logits. This
must give the same log-probs, entropies and parameter gradients as the full-logits path,
with tied (Qwen2-style) and untied (Llama-style) embeddings.
"""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

import kernels

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


SIZES = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)


def tiny_model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "qwen2-tied":
        return Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=True, **SIZES))
    return LlamaForCausalLM(LlamaConfig(tie_word_embeddings=False, **SIZES))


def full_logits_path(model, input_ids_BT, attention_mask_BT, mask_BT, temperature):
    logits_BTV = model(input_ids=input_ids_BT, attention_mask=attention_mask_BT).logits
    log_probs_BTV = torch.log_softmax(logits_BTV[:, :-1].float() / temperature, dim=-1)
    logp_BT1 = log_probs_BTV.gather(2, input_ids_BT[:, 1:, None]).squeeze(2)
    entropy_BT1 = -(log_probs_BTV.exp() * log_probs_BTV).sum(-1)
    keep_BT1 = mask_BT[:, 1:]
    return logp_BT1 * keep_BT1, entropy_BT1 * keep_BT1


def hidden_states_path(model, input_ids_BT, attention_mask_BT, mask_BT, temperature):
    hidden_BTH = model.model(
        input_ids=input_ids_BT, attention_mask=attention_mask_BT
    ).last_hidden_state
    weight_VH = model.get_output_embeddings().weight  # the embedding itself when tied
    return kernels.next_token_logprobs_entropy(
        hidden_BTH,
        weight_VH,
        input_ids_BT,
        temperature,
        mask_BT=mask_BT,
        impl="chunked",
        vocab_chunk=40,
    )


@pytest.mark.parametrize("kind", ["qwen2-tied", "llama-untied"])
def test_hidden_state_path_matches_full_logits(kind):
    model = tiny_model(kind)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tied == (kind == "qwen2-tied")
    gen = torch.Generator().manual_seed(1)
    input_ids_BT = torch.randint(0, 97, (2, 9), generator=gen)
    attention_mask_BT = torch.ones(2, 9, dtype=torch.long)
    attention_mask_BT[1, 7:] = 0  # right padding
    mask_BT = attention_mask_BT.bool().clone()
    mask_BT[:, :3] = False  # prompt tokens are not scored
    coef_BT1 = torch.randn(2, 8, generator=gen)
    results = {}
    for path in (full_logits_path, hidden_states_path):
        model.zero_grad()
        logp_BT1, entropy_BT1 = path(model, input_ids_BT, attention_mask_BT, mask_BT, 0.8)
        ((coef_BT1 * logp_BT1).sum() + 0.3 * entropy_BT1.sum()).backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        results[path.__name__] = (logp_BT1.detach(), entropy_BT1.detach(), grads)
    (logp_a, ent_a, grads_a), (logp_b, ent_b, grads_b) = results.values()
    torch.testing.assert_close(logp_b, logp_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent_b, ent_a, rtol=1e-5, atol=1e-5)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:  # measured: <= 4.2e-7 of each gradient's scale
        scale = max(1.0, grads_a[name].abs().max().item())
        err = (grads_b[name] - grads_a[name]).abs().max().item()
        assert err <= 1e-5 * scale, f"{name}: max error {err:.2e} (scale {scale:.3g})"
