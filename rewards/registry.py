"""Verifiers by short name. Rows choose theirs through a column (default `verifier`).

Three sources, one namespace (a name used twice by different functions is an error):
- built-ins, registered on import of their modules (`arith`, `math`, `math_boxed`, `countdown`,
  `format_boxed`, `format_think`, `format_regex`);
- installed plug-ins: entry points in group `rlvr.verifiers` (name = entry-point name), loaded
  only when their name is asked for, so one broken plug-in cannot break the others;
- `module:function` or `name=module:function` paths (recipes, `VerifierPool(plugins=...)`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable

from rewards.base import Verifier

ENTRY_POINT_GROUP = "rlvr.verifiers"
BUILTIN_MODULES = (
    "rewards.arith",
    "rewards.math_verifier",
    "rewards.countdown",
    "rewards.format",
)

_REGISTRY: dict[str, Verifier] = {}


def register(name: str) -> Callable[[Verifier], Verifier]:
    """Decorator: register `fn` under `name`. A second verifier with the same name is an error."""

    def wrap(fn: Verifier) -> Verifier:
        if not callable(fn):
            raise TypeError(f"verifier {name!r} must be callable, got {type(fn).__name__}")
        old = _REGISTRY.get(name)
        if old is not None and old is not fn:
            raise ValueError(
                f"verifier {name!r} is already registered by {_origin(old)}; "
                f"cannot register {_origin(fn)} under the same name"
            )
        _REGISTRY[name] = fn
        return fn

    return wrap


def get_verifier(name: str) -> Verifier:
    """The verifier registered under `name`, loading its entry point on first use."""
    _load_builtins()
    if name not in _REGISTRY:
        points = _entry_points()
        if name not in points:
            raise KeyError(f"unknown verifier {name!r}; valid: {', '.join(verifier_names())}")
        try:
            fn = points[name].load()
        except Exception as e:
            raise ImportError(
                f"verifier plug-in {name!r} ({points[name].value}) failed to load: "
                f"{type(e).__name__}: {e}"
            ) from e
        register(name)(fn)
    return _REGISTRY[name]


def verifier_names() -> list[str]:
    """Registered and installed (entry-point) verifier names, sorted."""
    _load_builtins()
    return sorted(set(_REGISTRY) | set(_entry_points()))


def load_plugin(spec: str) -> str:
    """Import and register a `module:function` or `name=module:function` verifier; returns the
    name (the function's name when none is given)."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = "", spec
    module_name, colon, attr = path.strip().partition(":")
    if not colon or not module_name or not attr or (sep and not name.strip()):
        raise ValueError(
            f"verifier plug-in {spec!r} must look like 'module:function' or 'name=module:function'"
        )
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    name = name.strip() or attr.split(".")[-1]
    _load_builtins()
    if name in _entry_points() and name not in _REGISTRY:
        get_verifier(name)  # so a clash with an installed plug-in is reported as a duplicate
    register(name)(obj)
    return name


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed verifier entry points by name; duplicates (also with built-ins) are errors."""
    points: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        other = points.get(ep.name)
        if other is not None and other.value != ep.value:
            raise ValueError(
                f"verifier {ep.name!r} is declared by two installed plug-ins: "
                f"{other.value} and {ep.value}"
            )
        builtin = _REGISTRY.get(ep.name)
        if builtin is not None and builtin.__module__ in BUILTIN_MODULES:
            raise ValueError(
                f"installed plug-in {ep.value} uses the built-in verifier name "
                f"{ep.name!r}; rename its entry point"
            )
        points[ep.name] = ep
    return points


def _origin(fn: object) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)  # registers on import
