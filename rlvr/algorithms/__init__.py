"""Pure RLVR maths: advantages, policy losses, aggregation, DAPO length shaping, pass@k.

Torch only: no Ray, DeepSpeed, vLLM or I/O, so the controller, the learner and the tests import
it anywhere. Each family is a registry of short names with one shared signature; an unknown name
raises UnknownNameError (a KeyError and a ValueError) listing the valid ones.
"""

from rlvr.algorithms._registry import UnknownNameError
from rlvr.algorithms.advantages import (
    ADVANTAGES,
    compute_advantages,
    grpo_advantages,
    rloo_advantages,
)

__all__ = [
    "ADVANTAGES",
    "UnknownNameError",
    "compute_advantages",
    "grpo_advantages",
    "rloo_advantages",
]
