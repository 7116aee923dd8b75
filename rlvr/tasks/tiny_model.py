"""The built-in base model: a tiny Llama with a character-level tokenizer.

Saved with `save_pretrained`, so `AutoModelForCausalLM` / `AutoTokenizer` (and vLLM) load it
like any hub model. `builtin_model_dir` builds and warm-starts it (SFT) into a cache directory
on first use, keyed by everything that shapes its weights, and reuses it afterwards.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

from rlvr.tasks.arith import OPERATORS

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SYMBOLS = list("0123456789") + list(OPERATORS) + ["="]
BUILD_VERSION = 1  # bump when the tokenizer, the model or the SFT recipe changes meaning


def build_tokenizer():
    """One token per character; prompts get <bos> prepended; pads on the left for generation."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([PAD, BOS, EOS, UNK] + SYMBOLS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
    )


def build_model(tiny, tokenizer, seed: int):
    """A freshly initialised LlamaForCausalLM (tied embeddings) from `model.tiny` settings."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=tiny.hidden_size,
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_heads,
        intermediate_size=tiny.intermediate_size,
        max_position_embeddings=tiny.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def cache_root() -> Path:
    return Path(os.environ.get("RLVR_CACHE", Path.home() / ".cache" / "rlvr"))


def builtin_key(cfg) -> str:
    """Hash of every setting that shapes the warm-started weights."""
    import dataclasses

    payload = {
        "v": BUILD_VERSION,
        "tiny": dataclasses.asdict(cfg.model.tiny),
        "sft": dataclasses.asdict(cfg.sft),
        "arith": dataclasses.asdict(cfg.data.arith),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def builtin_model_dir(cfg, *, log=print) -> Path:
    """The cached warm-started model for `cfg`, built (once, under a file lock) if missing."""
    name = cfg.model.path.split(":", 1)[1]
    target = cache_root() / "models" / f"{name}-{builtin_key(cfg)}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds it built
        if not (target / "config.json").exists():
            from rlvr.tasks.sft import run_sft

            log(f"building {cfg.model.path} into {target} (one-time warm start)")
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            run_sft(cfg, tmp, log=log)
            os.replace(tmp, target)
    return target


def resolve_model_path(cfg, *, log=print) -> str:
    """model.path as a from_pretrained argument (building the built-in model when asked for)."""
    if cfg.model.path.startswith("builtin:"):
        return str(builtin_model_dir(cfg, log=log))
    return os.path.expanduser(cfg.model.path)
