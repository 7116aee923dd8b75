"""Loading the configuration tree: recipe YAML + `key.sub=value` overrides -> a validated `Config`.

A recipe is a sparse override of the defaults that each part declares beside its code
(`rlvr.config.schema` lists the sections). `load_config` validates everything before any work
starts and raises `ConfigError` with one line naming the field, the value and what is allowed
(the CLI turns it into exit status 2); `format_error` turns pydantic's errors into that line.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rlvr.config.schema import Config
from rlvr.errors import ConfigError

__all__ = ["Config", "ConfigError", "load_config", "dump_yaml", "json_schema", "format_error"]


def load_config(recipe: str | os.PathLike | None, overrides: list[str] = ()) -> Config:
    """Recipe file (or None for pure defaults) + `a.b=value` overrides -> validated Config."""
    data: dict[str, Any] = {}
    if recipe is not None:
        data = read_yaml(Path(recipe))
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(data, key, value)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_error(exc, Config)) from None


def dump_yaml(cfg: Config, path: Path) -> None:
    """Write the resolved config (every field, defaults included)."""
    cfg.write_yaml(path)


def json_schema() -> dict[str, Any]:
    """The JSON schema of a recipe (editors complete and check recipes with it)."""
    return Config.model_json_schema()


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads 1e-6 (no dot) as a string; read it as the number it means."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"recipe file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)
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
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else ""
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


# ---- one line from pydantic's errors ---------------------------------------------------------
_EXPECTED = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "float_type": "expected float",
    "float_parsing": "expected float",
    "string_type": "expected str",
}
_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}
_BOUND_KEYS = {">": "gt", ">=": "ge", "<": "lt", "<=": "le"}


def format_error(exc: ValidationError, root: type[BaseModel]) -> str:
    """The first error as one line: the dotted field name, the value and what is allowed."""
    errors = exc.errors(include_url=False)
    # A misspelt key also leaves its real one missing: name the misspelling.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc, kind, value = err["loc"], err["type"], err.get("input")
    union = _union_members(root, errors, loc)
    if union is not None:
        where, tags = union
        whole = [e for e in errors if len(e["loc"]) == len(where) + 1 and e["loc"][:-1] == where]
        value = whole[0]["input"] if whole else value
        readable = [re.sub(r"^literal\[(.*)\]$", r"\1", tag) for tag in tags]
        return f"{_dotted(where)}={value!r}: expected {' or '.join(readable)}"
    name = _dotted(loc)
    where = _locate(root, loc)
    if kind == "extra_forbidden":
        return _unknown_key(loc, where.parent_fields)
    if kind == "missing":
        return f"{name} is required"
    if kind in ("model_type", "model_attributes_type"):
        return f"{name or 'config'}: expected a section (mapping), got {value!r}"
    if kind in ("value_error", "assertion_error"):
        message = str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
        if not loc:
            return message
        if where.is_section:
            return f"{name}: {message}"
        return f"{name}={value!r}: {message}"
    if kind in _BOUNDS:
        return _out_of_range(name, value, kind, err["ctx"], where)
    if kind == "literal_error":
        return (
            f"{name}={value!r} is not allowed; choose one of: {', '.join(map(str, where.choices))}"
        )
    if kind in _EXPECTED:
        return f"{name}={value!r}: {_EXPECTED[kind]}"
    return f"{name}={value!r}: {err['msg']}"


def _union_members(root: type[BaseModel], errors: list[dict], loc: tuple):
    """A value that matches no member of a Union is reported once per member, with the member's
    tag in the location: ('target_modules', "literal['all-linear']") and ('target_modules',
    'list[str]', 0). Returns (the Union's location, the members' tags), or None."""
    for i in range(len(loc)):
        if _locate(root, loc[:i]).union:
            tags = [e["loc"][i] for e in errors if len(e["loc"]) > i and e["loc"][:i] == loc[:i]]
            return loc[:i], list(dict.fromkeys(tags))
    return None


def _dotted(loc: tuple) -> str:
    """('rewards', 0, 'weight') -> 'rewards[0].weight'."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)[1:]


def _unknown_key(loc: tuple, valid: list[str]) -> str:
    prefix = _dotted(loc[:-1]) + "." if loc[:-1] else ""
    key = str(loc[-1])
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {prefix}{close[0]}?" if close else f"; valid keys: {', '.join(valid)}"
    return f"unknown key {prefix}{key}{hint}"


def _out_of_range(name: str, value: Any, kind: str, ctx: dict, where: _Where) -> str:
    op = _BOUNDS[kind]
    bound = ctx[_BOUND_KEYS[op]]
    if isinstance(bound, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # the value as the field holds it
    text = f"{name}={value!r} is out of range: must be {op} {bound}"
    # A range closed on both sides ([lo, hi]) names the other end too.
    other = {">=": "<=", "<=": ">="}.get(op)
    limit = where.bounds.get(_BOUND_KEYS[other]) if other else None
    return text if limit is None else f"{text} and {other} {limit}"


class _Where(typing.NamedTuple):
    """What the schema says about the place an error points at."""

    parent_fields: list[str]  # the keys valid beside it
    is_section: bool  # it is a section (a model), not a value
    choices: tuple  # Literal choices of a value
    bounds: dict[str, Any]  # gt / ge / lt / le of a value
    union: bool = False  # a Union of two or more types (pydantic tags each member's error)


def _locate(root: type[BaseModel], loc: tuple) -> _Where:
    """Walk the model classes along `loc` (field names, dict keys, list indices)."""
    tp: Any = root
    parent: list[str] = list(root.model_fields)
    meta: list[Any] = []
    for part in loc:
        tp, meta_here = _unwrap(tp)
        meta = meta_here or meta
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            parent = list(tp.model_fields)
            field = tp.model_fields.get(str(part))
            if field is None:
                return _Where(parent, False, (), {})
            tp, meta = field.annotation, list(field.metadata)
        elif typing.get_origin(tp) in (list, dict):
            tp, meta = typing.get_args(tp)[-1], []
    union = _members(tp) > 1
    tp, meta_here = _unwrap(tp)
    meta = meta_here or meta
    is_section = isinstance(tp, type) and issubclass(tp, BaseModel)
    choices = typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else ()
    bounds = {k: getattr(m, k) for m in meta for k in ("gt", "ge", "lt", "le") if hasattr(m, k)}
    return _Where(parent, is_section, choices, bounds, union)


def _members(tp: Any) -> int:
    """How many types a Union holds besides None (1 for any other type)."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return len([a for a in typing.get_args(tp) if a is not type(None)])
    return 1


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """Strip Optional[...] and Annotated[...] (keeping Annotated's constraints)."""
    meta: list[Any] = []
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp, *extra = typing.get_args(tp)
            for m in extra:  # a Field(...) inside Annotated carries its constraints as metadata
                meta += getattr(m, "metadata", [m])
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0]
        else:
            return tp, meta
