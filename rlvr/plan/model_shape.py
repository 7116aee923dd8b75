"""A decoder-only transformer's sizes, from its Hugging Face config.json (no weights, no torch).

`rlvr plan` needs only these numbers. A model's config comes from, in order: a `--model-config`
JSON file, `config.json` in a local model directory, a config shipped in `rlvr/plan/model_configs/`
for the recipe models (so planning works offline), or the local Hugging Face cache.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from rlvr.errors import ConfigError

SHIPPED = Path(__file__).with_name("model_configs")
REQUIRED = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
)


@dataclass(frozen=True)
class ModelShape:
    """Sizes of a Llama/Qwen2-style model: RMSNorm, GQA attention with RoPE, SwiGLU MLP."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    qkv_bias: bool = False  # Qwen2: biases on q, k, v only
    o_bias: bool = False  # Llama with attention_bias=true: biases on q, k, v and o
    mlp_bias: bool = False

    @classmethod
    def from_hf_config(cls, c: dict, where: str = "config") -> ModelShape:
        missing = [k for k in REQUIRED if k not in c]
        if missing:
            raise ConfigError(
                f"{where}: not a decoder config this planner understands "
                f"(missing {', '.join(missing)})"
            )
        heads = c["num_attention_heads"]
        attention_bias = bool(c.get("attention_bias", False))
        return cls(
            hidden=c["hidden_size"],
            layers=c["num_hidden_layers"],
            heads=heads,
            kv_heads=c.get("num_key_value_heads") or heads,
            head_dim=c.get("head_dim") or c["hidden_size"] // heads,
            intermediate=c["intermediate_size"],
            vocab=c["vocab_size"],
            tied=bool(c.get("tie_word_embeddings", False)),
            qkv_bias=c.get("model_type") == "qwen2" or attention_bias,
            o_bias=attention_bias,
            mlp_bias=bool(c.get("mlp_bias", False)),
        )

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_params(self) -> int:
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        attention = h * q + 2 * h * kv + q * h
        attention += (q + 2 * kv) * self.qkv_bias + h * self.o_bias
        mlp = 3 * h * i + (2 * i + h) * self.mlp_bias
        return attention + mlp + 2 * h  # two RMSNorm weights

    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    def largest_tensor_params(self) -> int:
        """Elements of the largest single weight (the embedding, or an MLP or q projection)."""
        return max(
            self.embedding_params(), self.intermediate * self.hidden, self.q_dim * self.hidden
        )

    def params(self) -> int:
        """All parameters: layers, input embedding, output layer unless tied, final norm."""
        embeddings = self.embedding_params() * (1 if self.tied else 2)
        return self.layers * self.layer_params() + embeddings + self.hidden

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of a block, by module name."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def lora_params(self, rank: int, targets: list[str] | str) -> int:
        """Adapter parameters: rank * (in + out) for each targeted linear layer of every block
        (all-linear: all seven; peft leaves the output layer out)."""
        shapes = self.linear_shapes()
        names = list(shapes) if targets == "all-linear" else [t for t in targets if t in shapes]
        return self.layers * sum(rank * sum(shapes[n]) for n in names)

    def kv_bytes_per_token(self, dtype_bytes: int, tp: int = 1) -> int:
        """K and V of every layer for one token on one of `tp` tensor-parallel ranks. KV heads
        split over the ranks; with fewer KV heads than ranks each rank keeps one (replicated)."""
        return 2 * self.layers * math.ceil(self.kv_heads / tp) * self.head_dim * dtype_bytes


def shipped_config_path(name: str) -> Path:
    return SHIPPED / (name.replace("/", "__") + ".json")


def load_model_shape(
    model_path: str, model_config: str | None = None, tiny=None
) -> tuple[ModelShape, str]:
    """(shape, its source) for `model.path`; `tiny` is cfg.model.tiny for builtin: models."""
    if model_config:
        return ModelShape.from_hf_config(read_json(Path(model_config)), model_config), model_config
    if model_path.startswith("builtin:"):
        return builtin_shape(tiny), "built-in tiny model (model.tiny)"
    local = Path(os.path.expanduser(model_path))
    if (local / "config.json").is_file():
        return ModelShape.from_hf_config(read_json(local / "config.json"), str(local)), str(
            local / "config.json"
        )
    shipped = shipped_config_path(model_path)
    if shipped.is_file():
        return ModelShape.from_hf_config(read_json(shipped), str(shipped)), str(shipped)
    cached = hub_cache_config(model_path)
    if cached is not None:
        return ModelShape.from_hf_config(read_json(cached), str(cached)), str(cached)
    raise ConfigError(
        f"model.path={model_path!r}: no config.json found (not a local directory, not shipped in "
        f"{SHIPPED.name}/, not in the Hugging Face cache). Download it once "
        f"(`hf download {model_path} config.json`) or pass --model-config PATH/config.json"
    )


def hub_cache_config(name: str) -> Path | None:
    """config.json of a hub model already in the local HF cache (never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(name, "config.json")
    return Path(found) if isinstance(found, str) else None


def builtin_shape(tiny) -> ModelShape:
    from rlvr.tasks.tiny_model import SYMBOLS

    return ModelShape(
        hidden=tiny.hidden_size,
        layers=tiny.num_layers,
        heads=tiny.num_heads,
        kv_heads=tiny.num_heads,
        head_dim=tiny.hidden_size // tiny.num_heads,
        intermediate=tiny.intermediate_size,
        vocab=4 + len(SYMBOLS),
        tied=True,
    )


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"model config {path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"model config {path}: not valid JSON ({exc.msg}, line {exc.lineno})"
        ) from None
