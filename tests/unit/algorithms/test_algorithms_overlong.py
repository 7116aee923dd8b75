"""DAPO overlong reward shaping and filtering."""

import pytest
import torch

from rlvr.algorithms import overlong_filter, overlong_penalty


def test_overlong_penalty_hand_values():
    # max_len 16, cache 4: soft zone (12, 16]. L <= 12 -> 0; L in (12, 16] -> (12 - L)/4;
    # L > 16 -> -1:  0 -> 0, 12 -> 0, 13 -> -.25, 14 -> -.5, 15 -> -.75, 16 -> -1, 17 -> -1
    lengths = torch.tensor([0, 12, 13, 14, 15, 16, 17, 100])
    got = overlong_penalty(lengths, max_len=16, cache_len=4, dtype=torch.float64)
    want = torch.tensor([0, 0, -0.25, -0.5, -0.75, -1, -1, -1], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-15)


def test_overlong_penalty_cache_equal_to_max_len_and_validation():
    # cache = max_len = 4: the ramp starts at 0: L 1 -> -.25, 2 -> -.5, 4 -> -1
    got = overlong_penalty(torch.tensor([0, 1, 2, 4]), max_len=4, cache_len=4, dtype=torch.float64)
    torch.testing.assert_close(got, torch.tensor([0, -0.25, -0.5, -1.0], dtype=torch.float64))
    for cache_len in (0, 5):
        with pytest.raises(ValueError, match="cache_len"):
            overlong_penalty(torch.tensor([1]), max_len=4, cache_len=cache_len)


def test_overlong_filter():
    got = overlong_filter(torch.tensor([True, False, True, False]))
    assert got.dtype == torch.get_default_dtype()
    assert got.tolist() == [0.0, 1.0, 0.0, 1.0]
