"""Verifiers by short name. Rows choose theirs through a column (default `verifier`)."""

from __future__ import annotations

from rewards.base import Verifier

_REGISTRY: dict[str, Verifier] = {}


def register(name: str):
    """Decorator: register `fn` under `name`. A second verifier with the same name is an error."""

    def wrap(fn: Verifier) -> Verifier:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"verifier {name!r} is already registered ({_REGISTRY[name].__module__})")
        _REGISTRY[name] = fn
        return fn

    return wrap


def get_verifier(name: str) -> Verifier:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown verifier {name!r}; valid: {', '.join(sorted(_REGISTRY))}") from None


def verifier_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    import rewards.arith  # noqa: F401  (registers on import)
