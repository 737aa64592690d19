"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models: a second OpenMP thread gains little and thrashes on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
