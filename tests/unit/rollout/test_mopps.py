"""MoPPS sampler: hand-computed posterior updates, selection in constructed cases, state round
trips, metrics, prior files and config."""

import json
import math

import numpy as np
import pytest

from rlvr.config import ConfigError, load_config
from rlvr.train.checkpoint import read_state, write_state
from rollout.mopps import MoPPSConfig, MoPPSSampler, average_ranks, load_prior, spearman
from rollout.samplers import SamplerConfig, UniformSampler, make_sampler


def peaked(means, mass=1e6):
    """Beta(mass m, mass (1 - m)): Thompson samples within ~5e-4 of m (std sqrt(m(1-m)/mass))."""
    m = np.asarray(means, dtype=np.float64)
    return mass * m, mass * (1 - m)


def mopps(num_prompts, seed, *, prior=None, **options):
    """A MoPPS sampler with `options` as its config section and, if given, the posterior
    (alpha_P, beta_P) set in place of the uniform Beta(1, 1) start (as a prior file would)."""
    s = MoPPSSampler(num_prompts, seed, MoPPSConfig(**options))
    if prior is not None:
        s.alpha_P[:], s.beta_P[:] = prior
    return s


def test_update_without_decay():
    # decay 1: alpha += s, beta += k - s, only for observed prompts
    # prompt 0: 3 of 8 -> (1 + 3, 1 + 5) = (4, 6); prompt 2: 0 of 4 -> (1, 5)
    s = mopps(4, seed=0)
    s.observe([0, 2], [3.0, 0.0], [8, 4])
    np.testing.assert_array_equal(s.alpha_P, [4, 1, 1, 1])
    np.testing.assert_array_equal(s.beta_P, [6, 1, 5, 1])
    assert s.metrics()["sampler/observed_frac"] == 0.5


def test_update_with_decay_errors_and_duplicates():
    s = mopps(3, seed=0, decay=0.5)
    # prompt 0, 3 of 4:  alpha = .5*1 + .5 + 3 = 4,    beta = .5*1 + .5 + 1 = 2
    s.observe([0], [3.0], [4])
    np.testing.assert_array_equal([s.alpha_P[0], s.beta_P[0]], [4.0, 2.0])
    # prompt 0, 0 of 4:  alpha = .5*4 + .5 + 0 = 2.5,  beta = .5*2 + .5 + 4 = 5.5
    # prompt 2, k = 0 (every verifier call failed): untouched, not even decayed, not "observed"
    s.observe([0, 2], [0.0, 0.0], [4, 0])
    np.testing.assert_array_equal(s.alpha_P, [2.5, 1.0, 1.0])
    np.testing.assert_array_equal(s.beta_P, [5.5, 1.0, 1.0])
    assert s.metrics()["sampler/observed_frac"] == pytest.approx(1 / 3, abs=1e-15)
    # prompt 1 twice in one call (1 of 4, 2 of 4) = one update with 3 of 8:
    # alpha = .5 + .5 + 3 = 4, beta = .5 + .5 + 5 = 6 (decayed once, not twice)
    s.observe([1, 1], [1.0, 2.0], [4, 4])
    np.testing.assert_array_equal([s.alpha_P[1], s.beta_P[1]], [4.0, 6.0])
    assert s.metrics()["sampler/observed_frac"] == pytest.approx(2 / 3, abs=1e-15)


def test_observe_rejects_bad_input():
    s = mopps(3, seed=0)
    with pytest.raises(ValueError, match="out of range"):
        s.observe([3], [0.0], [1])
    with pytest.raises(ValueError, match=r"\[0, counts\]"):
        s.observe([0], [5.0], [4])
    with pytest.raises(ValueError, match="differ in length"):
        s.observe([0, 1], [1.0], [4, 4])


MEANS = [0.02, 0.5, 0.97, 0.45, 0.8, 0.6, 0.35, 0.15]


def test_topk_picks_the_nearest_to_target_in_order():
    # Pool = all 8 prompts (ts_ratio * B >= 8). Distances to 0.5: p1 0, p3 .05, p5 .1, p6 .15, ...
    s = mopps(8, seed=1, ts_ratio=4, prior=peaked(MEANS))
    assert s.next_batch(3) == [1, 3, 5]
    m = s.metrics()
    assert m["sampler/pool_size"] == 8.0
    assert m["sampler/selected_posterior_mean"] == pytest.approx((0.5 + 0.45 + 0.6) / 3, abs=1e-12)
    # another target: nearest to 0.9 are p2 (.07) and p4 (.1)
    s = mopps(8, seed=1, ts_ratio=4, target=0.9, prior=peaked(MEANS))
    assert s.next_batch(2) == [2, 4]


def test_threshold_random_inside_then_topped_up_by_distance():
    # inside [0.3, 0.7]: p1 .5, p3 .45, p5 .6, p6 .35. Outside gaps: p0 .28, p2 .27, p4 .1, p7 .15
    chosen = set()
    for seed in range(20):
        s = mopps(8, seed=seed, ts_ratio=4, mode="threshold", prior=peaked(MEANS))
        batch = s.next_batch(2)
        assert len(set(batch)) == 2 and set(batch) <= {1, 3, 5, 6}
        chosen |= set(batch)
    assert chosen == {1, 3, 5, 6}  # random among the inside ones, not a fixed pick
    s = mopps(8, seed=0, ts_ratio=4, mode="threshold", prior=peaked(MEANS))
    batch = s.next_batch(6)
    assert set(batch[:4]) == {1, 3, 5, 6} and batch[4:] == [4, 7]


def test_selection_is_deterministic_under_a_seed_and_distinct():
    def run(seed):
        s = mopps(1000, seed=seed, ts_ratio=8)
        out = []
        for _ in range(4):
            idx = s.next_batch(16)
            assert len(set(idx)) == 16
            out.append(idx)
            s.observe(idx, [float(i % 5) for i in idx], [4] * 16)
        return out

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_pool_is_ts_ratio_times_batch_and_ratio_one_is_uniform():
    s = mopps(1000, seed=0, ts_ratio=2.5)
    s.next_batch(10)
    assert s.metrics()["sampler/pool_size"] == 25.0
    # ts_ratio = 1: the pool is the batch, so no prompt is ever preferred: every prompt appears
    # over 100 draws of 10 from 20 (P(a given prompt never drawn) = 0.5^100)
    s = mopps(20, seed=0, ts_ratio=1.0, prior=peaked([0.01] * 10 + [0.5] * 10))
    seen = set()
    for _ in range(100):
        seen |= set(s.next_batch(10))
    assert seen == set(range(20))
    with pytest.raises(ValueError, match="cannot select 21"):
        s.next_batch(21)


def drive(sampler, steps, rng):
    """Select and observe `steps` times with outcomes from `rng`; returns the selections."""
    out = []
    for _ in range(steps):
        idx = sampler.next_batch(8)
        k = rng.integers(0, 9, size=8)
        out.append(idx)
        sampler.observe(idx, (rng.random(8) * k).round().tolist(), k.tolist())
    return out


@pytest.mark.parametrize("mode", ["topk", "threshold"])
def test_state_round_trip_through_checkpoint_files(mode, tmp_path):
    a = mopps(500, seed=11, decay=0.7, mode=mode)
    drive(a, 5, np.random.default_rng(0))
    write_state(tmp_path, {"sampler": a.state_dict()})  # as the checkpoint does: JSON+safetensors
    state = read_state(tmp_path)["sampler"]
    b = mopps(500, seed=999, decay=0.7, mode=mode)
    b.load_state_dict(state)
    np.testing.assert_array_equal(a.alpha_P, b.alpha_P)
    np.testing.assert_array_equal(a.beta_P, b.beta_P)
    assert a.metrics()["sampler/observed_frac"] == b.metrics()["sampler/observed_frac"]
    assert drive(a, 5, np.random.default_rng(1)) == drive(b, 5, np.random.default_rng(1))
    np.testing.assert_array_equal(a.alpha_P, b.alpha_P)


def test_load_state_checks_kind_and_size():
    s = mopps(10, seed=0)
    with pytest.raises(ValueError, match="not MoPPS state"):
        s.load_state_dict(UniformSampler(10, 0).state_dict())
    with pytest.raises(ValueError, match="covers 11 prompts, the data has 10"):
        s.load_state_dict(mopps(11, seed=0).state_dict())


def test_rank_correlation_of_sampled_rates_and_outcomes():
    s = mopps(8, seed=0, ts_ratio=4, prior=peaked(MEANS))
    idx = s.next_batch(4)  # [1, 3, 5, 6]: g ~ .5, .45, .6, .35
    assert idx == [1, 3, 5, 6]
    # observed rates in the same order as g -> +1; reversed -> -1
    s.observe(idx, [4.0, 3.0, 6.0, 2.0], [8, 8, 8, 8])
    assert s.metrics()["sampler/rank_corr"] == pytest.approx(1.0, abs=1e-12)
    idx = s.next_batch(4)
    g_order = np.argsort(np.argsort([s.alpha_P[i] / (s.alpha_P[i] + s.beta_P[i]) for i in idx]))
    s.observe(idx, [float(8 - 2 * r) for r in g_order], [8] * 4)
    assert s.metrics()["sampler/rank_corr"] == pytest.approx(-1.0, abs=1e-12)
    # prompts with no verified completion are left out; fewer than 2 points -> NaN
    idx = s.next_batch(2)
    s.observe(idx, [1.0, 0.0], [2, 0])
    assert math.isnan(s.metrics()["sampler/rank_corr"])


def test_spearman_with_ties():
    np.testing.assert_array_equal(average_ranks(np.array([3, 1, 3, 2])), [3.5, 1, 3.5, 2])
    # ranks x = 1..4 (centred -1.5 -.5 .5 1.5), y ranks 1.5 1.5 3.5 3.5 (centred -1 -1 1 1):
    # 4 / sqrt(5 * 4)
    assert spearman(np.array([1, 2, 3, 4]), np.array([0, 0, 1, 1])) == pytest.approx(
        4 / math.sqrt(20), abs=1e-15
    )
    assert math.isnan(spearman(np.array([1, 2]), np.array([1, 1])))


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    return path


def test_prior_file_pseudo_counts(tmp_path):
    path = write_jsonl(
        tmp_path / "prior.jsonl",
        [
            {"index": 0, "n": 8, "correct": 6},
            {"prompt": "b", "n": 4, "success_rate": 0.25},
            {"index": 0, "n": 8, "correct": 2},
        ],
    )
    prompts = ["a", "b", "c", "b"]
    alpha, beta = load_prior(path, 4, prompts, strength=0.5)
    # prompt 0: 8 of 16 -> 1 + .5*8 = 5, 1 + .5*8 = 5; text "b" = rows 1 and 3: 1 of 4 -> 1.5, 2.5
    np.testing.assert_array_equal(alpha, [5.0, 1.5, 1.0, 1.5])
    np.testing.assert_array_equal(beta, [5.0, 2.5, 1.0, 2.5])


@pytest.mark.parametrize(
    "record,message",
    [
        ({"index": 9, "n": 4, "correct": 1}, "not a row"),
        ({"index": 0, "correct": 1}, "positive number"),
        ({"index": 0, "prompt": "a", "n": 4, "correct": 1}, "exactly one of 'index' and 'prompt'"),
        ({"index": 0, "n": 4, "correct": 1, "success_rate": 0.2}, "exactly one of 'correct'"),
        ({"index": 0, "n": 4, "correct": 5}, r"\[0, n=4\]"),
        ({"index": 0, "n": 4, "success_rate": 1.5}, r"\[0, 1\]"),
        ({"prompt": "zzz", "n": 4, "correct": 1}, "not in the training data"),
    ],
)
def test_prior_file_errors_name_the_line(tmp_path, record, message):
    path = write_jsonl(tmp_path / "p.jsonl", [{"index": 1, "n": 2, "correct": 1}, record])
    with pytest.raises(ValueError, match=message) as err:
        load_prior(path, 4, ["a", "b", "c", "d"])
    assert "p.jsonl:2" in str(err.value)
    with pytest.raises(ValueError, match="no prompt texts"):
        load_prior(write_jsonl(tmp_path / "q.jsonl", [{"prompt": "a", "n": 2, "correct": 1}]), 4)


def test_config_builds_mopps_with_prior(tmp_path):
    path = write_jsonl(tmp_path / "prior.jsonl", [{"prompt": "x", "n": 10, "correct": 10}])
    cfg = load_config(
        None,
        [
            "sampler.name=mopps",
            "sampler.decay=0.5",
            "sampler.ts_ratio=16",
            "sampler.mode=threshold",
            f"sampler.prior_file={path}",
            "sampler.prior_strength=2",
        ],
    )
    s = make_sampler(cfg.sampler, 3, seed=0, prompts=["w", "x", "y"])
    assert isinstance(s, MoPPSSampler)
    c = s.config
    assert (c.decay, c.ts_ratio, c.mode, c.low, c.high) == (0.5, 16.0, "threshold", 0.3, 0.7)
    assert (c.prior_file, c.prior_strength) == (str(path), 2.0)
    np.testing.assert_array_equal(s.alpha_P, [1.0, 21.0, 1.0])
    np.testing.assert_array_equal(s.beta_P, [1.0, 1.0, 1.0])
    assert isinstance(make_sampler(load_config(None).sampler, 3, seed=0), UniformSampler)


@pytest.mark.parametrize(
    "override,message",
    [
        ("sampler.prior_file=/no/such/prior.jsonl", "file not found"),
        ("sampler.low=0.8", "low must be < high"),
        ("sampler.decay=0", "must be > 0"),
        ("sampler.mode=best", "choose one of: topk, threshold"),
        ("sampler.ts_ratio=0.5", "must be >= 1"),
    ],
)
def test_config_rejects(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["sampler.name=mopps", override])


def test_make_sampler_from_the_section():
    s = make_sampler(SamplerConfig(name="mopps", decay=0.5, mode="threshold"), 5, seed=0)
    assert isinstance(s, MoPPSSampler) and s.num_prompts == 5
    assert (s.config.decay, s.config.mode) == (0.5, "threshold")
    u = make_sampler(SamplerConfig(), 5, seed=0)  # name defaults to uniform
    assert isinstance(u, UniformSampler) and sorted(u.next_batch(5)) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"name\s+Input should be 'uniform' or 'mopps'"):
        SamplerConfig(name="nope")
