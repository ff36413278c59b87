"""Shared test set-up: one torch thread, and no gin state carried from one test to the next."""

from __future__ import annotations

import gin
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread_clean_gin():
    """Tiny convolutions are dominated by thread synchronisation on a 2-core machine (3-9x slower with 2 threads
    while anything else runs), so tests use one; gin's process-global config is cleared around every test."""
    gin.clear_config()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    gin.clear_config()
