"""Verifiers: the outcome contract, the registry and the built-in verifiers. No torch, no Ray."""

from rewards.base import CORRECT, ERROR, INCORRECT, Outcome, Verifier
from rewards.registry import get_verifier, register, verifier_names

__all__ = ["CORRECT", "ERROR", "INCORRECT", "Outcome", "Verifier", "get_verifier", "register",
           "verifier_names"]
