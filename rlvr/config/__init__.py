"""The typed configuration tree: every default lives here, once.

A recipe YAML is a sparse override of these defaults; `key.sub=value` arguments override the
recipe. `load_config` validates everything before any work starts and raises `ConfigError` with
one line naming the field, the value and what is allowed (the CLI turns it into exit status 2).
The field declarations live in `rlvr/config/schema.py`; this module holds the machinery.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from rlvr.config.schema import Config
from rlvr.errors import ConfigError

__all__ = ["Config", "ConfigError", "load_config", "dump_yaml", "to_dict"]


def load_config(recipe: str | os.PathLike | None, overrides: list[str] = ()) -> Config:
    """Recipe file (or None for pure defaults) + `a.b=value` overrides -> validated Config."""
    data: dict[str, Any] = {}
    if recipe is not None:
        data = read_yaml(Path(recipe))
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(data, key, value)
    cfg = from_dict(Config, data, "")
    check_values(cfg, "")
    cfg.validate()
    return cfg


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where} is not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}"
        )
    return data


def parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def from_dict(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, checking keys and types; fields not given keep
    defaults."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{prefix.rstrip('.') or 'config'}: expected a section (mapping), got {data!r}"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            hint = (
                f"; did you mean {prefix}{close[0]}?"
                if close
                else f"; valid keys: {', '.join(names)}"
            )
            raise ConfigError(f"unknown key {name}{hint}")
        kwargs[key] = coerce(hints[key], value, name)
    return cls(**kwargs)


def coerce(tp: Any, value: Any, name: str) -> Any:
    """Check `value` against type hint `tp` (converting int -> float and nested sections)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, name + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(inner[0], value, name)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{name}={value!r}: expected a list")
        return [coerce(item_tp, v, f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{name}={value!r}: expected a mapping")
        return {coerce(key_tp, k, name): coerce(val_tp, v, f"{name}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-6 (no dot) as a string; accept it as the number it means
            return float(value)
        except ValueError:
            pass
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r}: expected true or false")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{name}={value!r}: expected an integer")
    if not isinstance(value, tp):
        raise ConfigError(f"{name}={value!r}: expected {tp.__name__}")
    return value


def check_values(obj: Any, prefix: str) -> None:
    """Range, choice and file checks declared in field metadata (see `config_schema.spec`)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_values(value, name + ".")
            continue
        if value is None:
            continue
        if isinstance(value, dict):
            items = [(f"{name}.{k}", v) for k, v in value.items()]
        elif isinstance(value, list):
            items = [(f"{name}[{i}]", v) for i, v in enumerate(value)]
        else:
            items = [(name, value)]
        for item_name, item in items:
            check_one(f.metadata, item, item_name)


def check_one(meta: typing.Mapping[str, Any], value: Any, name: str) -> None:
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        raise ConfigError(
            f"{name}={value!r} is out of range: must be >= {lo}{bound_text(hi, '<=')}"
        )
    if hi is not None and value > hi:
        raise ConfigError(
            f"{name}={value!r} is out of range: must be <= {hi}{bound_text(lo, '>=')}"
        )
    if meta.get("gt") is not None and value <= meta["gt"]:
        raise ConfigError(f"{name}={value!r} is out of range: must be > {meta['gt']}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(
            f"{name}={value!r} is not allowed; choose one of: {', '.join(map(str, choices))}"
        )
    if meta.get("file") and value and not Path(os.path.expanduser(value)).exists():
        raise ConfigError(f"{name}={value!r}: file not found")


def bound_text(bound: Any, op: str) -> str:
    return "" if bound is None else f" and {op} {bound}"


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config, path: Path) -> None:
    """Write the resolved config (every field, defaults included)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    os.replace(tmp, path)
