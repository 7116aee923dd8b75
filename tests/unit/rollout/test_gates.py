"""Gates: the zero-variance filter and the DAPO dynamic-sampling refill policy."""

import math

import pytest
import torch

from rollout.gates import DynamicSampling, GateConfig, zero_variance_admit

NAN = float("nan")


def t(values):
    return torch.tensor(values, dtype=torch.bool)


def test_zero_variance_admit():
    # group 0: [1, 0] mixed -> admit; group 1: [1, 1] flat -> drop;
    # group 2: [0, NaN, 1] mixed among verified -> admit; group 3: [1, NaN] one verified -> drop
    reward = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, NAN, 1.0, 1.0, NAN])
    group = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3, 3])
    assert zero_variance_admit(reward, group, 4).tolist() == [True, False, True, False]


def test_refill_until_target_then_truncate():
    gate = DynamicSampling(GateConfig(refill=True, max_gen_batches=4), target=5)
    gate.begin()
    # round 1: 3 of 6 informative -> keep all 3, still 2 short
    assert gate.offer(t([1, 0, 1, 0, 0, 1])).tolist() == [True, False, True, False, False, True]
    assert gate.more()
    # round 2: 4 informative, room for 2 -> keep the first two in generation order
    assert gate.offer(t([0, 1, 1, 0, 1, 1])).tolist() == [False, True, True, False, False, False]
    assert not gate.more()
    assert gate.metrics() == {
        "gate/gen_batches": 2.0,
        "gate/generated_groups": 12.0,
        "gate/informative_frac": 7 / 12,
        "gate/kept_groups": 5.0,
        "gate/short_groups": 0.0,
    }
    with pytest.raises(RuntimeError, match="after more"):
        gate.offer(t([1]))


def test_refill_stops_at_max_gen_batches_and_reports_shortfall():
    gate = DynamicSampling(GateConfig(refill=True, max_gen_batches=3), target=4)
    gate.begin()
    for _ in range(3):
        assert gate.more()
        gate.offer(t([1, 0, 0]))  # one informative group per round
    assert not gate.more()
    m = gate.metrics()
    assert (m["gate/gen_batches"], m["gate/kept_groups"], m["gate/short_groups"]) == (3.0, 3.0, 1.0)
    # a new step starts from zero
    gate.begin()
    assert gate.more() is True and gate.metrics()["gate/gen_batches"] == 0.0
    assert math.isnan(gate.metrics()["gate/informative_frac"])


def test_without_refill_one_round_keeps_every_informative_group():
    gate = DynamicSampling(GateConfig(refill=False, max_gen_batches=10), target=2)
    gate.begin()
    # more groups informative than the target: no truncation, the plain filter
    assert gate.offer(t([1, 1, 0, 1])).tolist() == [True, True, False, True]
    assert not gate.more()
    assert gate.metrics()["gate/short_groups"] == 0.0


def test_config_section_and_argument_checks():
    gate = DynamicSampling(GateConfig(refill=True, max_gen_batches=6), target=256)
    assert (gate.target, gate.max_gen_batches, gate.refill) == (256, 6, True)
    # the section's defaults: the plain filter, at most 10 rounds once refill is on
    assert GateConfig().model_dump() == {"refill": False, "max_gen_batches": 10}
    with pytest.raises(ValueError, match="target >= 1"):
        DynamicSampling(GateConfig(refill=True), target=0)
    with pytest.raises(ValueError, match="max_gen_batches"):
        GateConfig(refill=True, max_gen_batches=0)
