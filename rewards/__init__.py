"""Verifiers: the outcome contract, the registry, the process pool and the built-in verifiers.

No torch, no Ray: this package is imported by verifier worker processes.
"""

from rewards.base import CORRECT, ERROR, INCORRECT, Outcome, Verifier
from rewards.pool import VerifierPool, VerifyRequest
from rewards.registry import get_verifier, load_plugin, register, verifier_names

__all__ = [
    "CORRECT",
    "ERROR",
    "INCORRECT",
    "Outcome",
    "Verifier",
    "VerifierPool",
    "VerifyRequest",
    "get_verifier",
    "load_plugin",
    "register",
    "verifier_names",
]
