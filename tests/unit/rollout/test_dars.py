"""DARS schedule: extra completions per accuracy level, derived by hand; caps, NaN, metrics."""

import math

import pytest
import torch

from rollout.dars import DARSConfig, DARSSchedule, dars_extra
from rollout.schedules import ScheduleConfig, SingleStage, make_schedule

NAN = float("nan")
N_MAX = {"et": 32, "hw": 64}  # the caps DARSConfig defaults to


def levels(n):
    """acc = c / n for c = 0..n, as float32 like the loop's group_accuracy."""
    return torch.arange(n + 1, dtype=torch.float32) / n


# et: dN = ceil(N / (4a(1-a)) - N), a = acc or 0.5/N at acc = 0; cap N_max - N = 32 - N.
# N = 8 (cap 24):
#   c=0: a=1/16: 4a(1-a) = 60/256 -> 8*256/60 - 8 = 392/15 = 26.13 -> 27 -> cap 24
#   c=1: a=1/8:  4a(1-a) = 28/64  -> 8*64/28 - 8  = 72/7   = 10.29 -> 11
#   c=2: a=1/4:  4a(1-a) = 3/4    -> 32/3 - 8     = 8/3    = 2.67  -> 3
#   c=3: a=3/8:  4a(1-a) = 60/64  -> 512/60 - 8   = 8/15   = 0.53  -> 1
#   c>=4: acc >= 0.5 -> 0
ET_8 = [24, 11, 3, 1, 0, 0, 0, 0, 0]
# hw: dN = ceil(N / (2a) - N); cap 64 - N.  N = 8 (cap 56):
#   c=0: a=1/16: 8*8 - 8 = 56;  c=1: 8*4 - 8 = 24;  c=2: 8*2 - 8 = 8;  c=3: 8*4/3 - 8 = 8/3 -> 3
HW_8 = [56, 24, 8, 3, 0, 0, 0, 0, 0]
# et, N = 16 (cap 16):
#   c=0: a=1/32: 16/(4*31/1024) - 16 = 3600/31 = 116.1 -> cap 16
#   c=1: a=1/16: 16*256/60 - 16 = 784/15 = 52.3 -> cap 16
#   c=2: a=1/8:  16*64/28 - 16  = 144/7  = 20.6 -> cap 16
#   c=3: a=3/16: 4a(1-a) = 156/256 -> 16*256/156 - 16 = 400/39 = 10.26 -> 11
#   c=4: a=1/4:  64/3 - 16  = 16/3  = 5.33 -> 6
#   c=5: a=5/16: 4a(1-a) = 220/256 -> 4096/220 - 16 = 144/55 = 2.62 -> 3
#   c=6: a=3/8:  1024/60 - 16 = 16/15 = 1.07 -> 2
#   c=7: a=7/16: 4a(1-a) = 252/256 -> 4096/252 - 16 = 16/63 = 0.25 -> 1
ET_16 = [16, 16, 16, 11, 6, 3, 2, 1] + [0] * 9
# hw, N = 16 (cap 48):
#   c=0: a=1/32: 16*16 - 16 = 240 -> 48;  c=1: 16*8 - 16 = 112 -> 48;  c=2: 16*4 - 16 = 48
#   c=3: 16*16/6 - 16 = 80/3 = 26.7 -> 27;  c=4: 16*2 - 16 = 16;  c=5: 16*16/10 - 16 = 9.6 -> 10
#   c=6: 16*16/12 - 16 = 16/3 -> 6;  c=7: 16*16/14 - 16 = 16/7 = 2.29 -> 3
HW_16 = [48, 48, 48, 27, 16, 10, 6, 3] + [0] * 9


@pytest.mark.parametrize(
    "n,mode,expected", [(8, "et", ET_8), (8, "hw", HW_8), (16, "et", ET_16), (16, "hw", HW_16)]
)
def test_every_accuracy_level(n, mode, expected):
    extra = dars_extra(levels(n), n, mode=mode, n_max=N_MAX[mode], std_normalized=False)
    assert extra.dtype == torch.long
    assert extra.tolist() == expected


# std-normalised (S = 2 sqrt(a(1-a)), peak N; docs/sampling.md):
#   et: dN = ceil(N / (2 sqrt(a(1-a))) - N);  hw: dN = ceil(N sqrt((1-a)/a) - N)
# N = 8:
#   et c=0: 64/sqrt(15) = 16.52 -> 8.52 -> 9;  c=1: 32/sqrt(7) = 12.09 -> 5
#      c=2: 16/sqrt(3) = 9.24 -> 2;            c=3: 32/sqrt(15) = 8.26 -> 1
#   hw c=0: 8 sqrt(15) = 30.98 -> 22.98 -> 23; c=1: 8 sqrt(7) = 21.17 -> 14
#      c=2: 8 sqrt(3) = 13.86 -> 6;            c=3: 8 sqrt(5/3) = 10.33 -> 3
# N = 16, hw (cap 48): c=0: 16 sqrt(31) = 89.1 -> 48;  c=1: 16 sqrt(15) = 61.97 -> 46
#   c=2: 16 sqrt(7) = 42.33 -> 27;  c=3: 16 sqrt(13/3) = 33.31 -> 18;  c=4: 16 sqrt(3) = 27.71 -> 12
#   c=5: 16 sqrt(11/5) = 23.73 -> 8;  c=6: 16 sqrt(5/3) = 20.66 -> 5
#   c=7: 16 sqrt(9/7) = 18.14 -> 3
@pytest.mark.parametrize(
    "n,mode,expected",
    [
        (8, "et", [9, 5, 2, 1, 0, 0, 0, 0, 0]),
        (8, "hw", [23, 14, 6, 3, 0, 0, 0, 0, 0]),
        (16, "hw", [48, 46, 27, 18, 12, 8, 5, 3] + [0] * 9),
    ],
)
def test_std_normalised_levels(n, mode, expected):
    extra = dars_extra(levels(n), n, mode=mode, n_max=N_MAX[mode], std_normalized=True)
    assert extra.tolist() == expected


def test_std_normalised_total_advantage_reaches_target():
    # The definition behind the formulas: (N + dN) * 2 sqrt(a(1-a)) >= target, and dN - 1 falls
    # short.
    # et target N (the peak at a = 0.5); hw target 2 (1 - a) N. Uncapped (n_max large).
    n = 8
    for c in range(1, 4):
        a = c / n
        s = 2 * math.sqrt(a * (1 - a))
        for mode, target in (("et", n), ("hw", 2 * (1 - a) * n)):
            dn = int(dars_extra(torch.tensor([a]), n, mode=mode, n_max=10_000, std_normalized=True))
            assert (n + dn) * s >= target > (n + dn - 1) * s


def test_float32_accuracy_that_lands_above_an_exact_integer():
    # 8 correct of 25 verified (errors removed 7 of 32): a = 0.32 exactly,
    # hw dN = 32/0.64 - 32 = 18.
    # In float32 a = 0.31999999..., so 32/(2a) - 32 = 18.0000011; a plain ceil would give 19.
    acc = torch.tensor([8.0]) / torch.tensor([25.0])
    assert dars_extra(acc, 32, mode="hw", n_max=64, std_normalized=False).tolist() == [18]


def test_nan_accuracy_gets_nothing_and_caps_apply():
    acc = torch.tensor([NAN, 0.0, 0.25, 1.0])
    assert dars_extra(acc, 8, mode="hw", n_max=64, std_normalized=False).tolist() == [0, 56, 8, 0]
    # n_max = 20 -> at most 12 more; n_max below N -> nothing (never negative)
    assert dars_extra(acc, 8, mode="hw", n_max=20, std_normalized=False).tolist() == [0, 12, 8, 0]
    assert dars_extra(acc, 8, mode="et", n_max=4, std_normalized=False).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="valid: et, hw"):
        dars_extra(acc, 8, mode="xx", n_max=64, std_normalized=False)


def test_schedule_metrics_and_after_expand():
    sched = DARSSchedule(DARSConfig(mode="et", std_normalized=False))  # n_max 32: cap 24 at N = 8
    acc1 = torch.tensor([0.0, 0.0, 0.125, 0.5, 1.0, NAN, 0.0, 0.75])
    extra = sched.extra(acc1, 8)
    assert extra.tolist() == [24, 24, 11, 0, 0, 0, 24, 0]
    m = sched.metrics()
    assert m["dars/extra_completions"] == 24 * 3 + 11
    assert m["dars/expanded_frac"] == 4 / 8
    assert m["dars/capped_frac"] == 3 / 8
    # merged: two of the three acc = 0 prompts found a correct answer in stage 2
    merged = torch.tensor([1 / 32, 0.0, 3 / 19, 0.5, 1.0, NAN, 2 / 32, 0.75])
    sched.after_expand(acc1, merged)
    m = sched.metrics()
    assert m["dars/rescued_frac"] == pytest.approx(2 / 3, abs=1e-12)
    # stage 1 with verdicts: 7 prompts; none: 3, partly: 3 (0.125, 0.5, 0.75), all: 1
    assert m["dars/stage1_solved_none"] == pytest.approx(3 / 7, abs=1e-12)
    assert m["dars/stage1_solved_partly"] == pytest.approx(3 / 7, abs=1e-12)
    assert m["dars/stage1_solved_all"] == pytest.approx(1 / 7, abs=1e-12)
    # no acc = 0 prompt: nothing to rescue -> NaN, not 0
    sched.after_expand(torch.tensor([0.5]), torch.tensor([0.5]))
    assert math.isnan(sched.metrics()["dars/rescued_frac"])


def test_registry_from_config_section():
    cfg = ScheduleConfig(name="dars", mode="hw", n_max=40, std_normalized=False)
    sched = make_schedule(cfg)
    assert isinstance(sched, DARSSchedule) and sched.n_max == 40
    # n_max unset: the mode's default cap
    assert make_schedule(ScheduleConfig(name="dars", std_normalized=False)).n_max == 64
    assert make_schedule(ScheduleConfig(name="dars", mode="et", std_normalized=False)).n_max == 32
    assert {m: DARSConfig(mode=m).n_max for m in N_MAX} == N_MAX
    single = make_schedule(ScheduleConfig())  # name defaults to single
    assert isinstance(single, SingleStage) and single.extra(torch.zeros(3), 8).tolist() == [0, 0, 0]
    assert isinstance(make_schedule(ScheduleConfig(name="single")), SingleStage)
    with pytest.raises(ValueError, match=r"name\s+Input should be 'single' or 'dars'"):
        ScheduleConfig(name="nope")
    with pytest.raises(ValueError, match=r"mode\s+Input should be 'et' or 'hw'"):
        DARSConfig(mode="xx")


def test_schedule_needs_to_know_whether_advantages_are_std_normalised():
    # std_normalized is left unset in the section for the root config to copy from
    # algorithm.std_normalize; a schedule built without it refuses rather than guess.
    with pytest.raises(ValueError, match="std_normalized is unset"):
        DARSSchedule(DARSConfig(mode="hw"))
    with pytest.raises(ValueError, match="std_normalized is unset"):
        make_schedule(ScheduleConfig(name="dars"))
    sched = DARSSchedule(DARSConfig(mode="hw", std_normalized=True))
    assert sched.extra(levels(8), 8).tolist() == [23, 14, 6, 3, 0, 0, 0, 0, 0]
