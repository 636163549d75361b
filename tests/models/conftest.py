"""Shared fixtures for the model tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run the tiny test networks on one thread.

    Intra-op threads only add overhead at these sizes, and on a busy two-core machine their
    spin-waiting made a 32x32 forward pass take seconds instead of milliseconds.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
