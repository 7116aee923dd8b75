"""Fixtures shared by unit tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny shapes gain nothing from threads, and on a busy CPU every one of their thousands of
    small ops waits at an OpenMP barrier for a descheduled thread (measured: 70x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
