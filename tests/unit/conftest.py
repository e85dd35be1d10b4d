"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small models train fastest on one thread: on a busy 2-core box, two threads spin-wait.

    Module-scoped, and it restores the previous count, so a module that changed it cannot
    leak the change into the next. Use with ``pytestmark = pytest.mark.usefixtures(...)``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
