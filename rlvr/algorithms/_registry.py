"""Name lookup shared by the algorithm registries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """An algorithm name that is not in its registry.

    Subclasses both KeyError (it is a failed lookup) and ValueError (it usually comes from a bad
    config value), so callers may catch either.
    """

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


def lookup(registry: Mapping[str, T], name: str, kind: str) -> T:
    """`registry[name]`, or UnknownNameError naming `kind` and listing the valid names."""
    try:
        return registry[name]
    except (KeyError, TypeError):  # TypeError: an unhashable "name"
        valid = ", ".join(sorted(registry))
        raise UnknownNameError(f"unknown {kind} {name!r}; valid: {valid}") from None
