"""`rlvr export` checked against the checkpoint it came from (shared by e2e tests)."""

import json
from pathlib import Path

import torch

from rlvr.train.checkpoint import list_checkpoints


def check_export(run: Path, out: Path, lora: bool):
    """`rlvr export RUN OUT`: a plain HF model whose log-probs are the final policy's (for
    LoRA, the base with the adapter applied by peft itself)."""
    from transformers import AutoModelForCausalLM

    from rlvr.cli import main
    from rollout.types import score_tokens

    assert main(["export", str(run), str(out)]) == 0
    policy = list_checkpoints(run)[-1] / "policy"
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    if lora:
        import peft

        base = json.loads((policy / "adapter_config.json").read_text())["base_model_name_or_path"]
        reference = peft.PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base), policy
        ).eval()
    else:
        reference = AutoModelForCausalLM.from_pretrained(policy).eval()
    probe = [[1, 5, 6, 14, 7, 17, 9, 2], [1, 12, 4, 16, 8, 8, 2]]
    cpu = torch.device("cpu")
    for mine, theirs in zip(
        score_tokens(exported, probe, cpu), score_tokens(reference, probe, cpu)
    ):
        torch.testing.assert_close(torch.tensor(mine), torch.tensor(theirs), atol=1e-5, rtol=0)
    assert main(["export", str(run), str(out)]) == 2  # never over an existing model
