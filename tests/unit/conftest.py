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


@pytest.fixture()
def d11_cache_of(tmp_path):
    """Makes a score cache of D-11 (SMAP) for a given ModelRecipe, judged by the default
    threshold, in tmp_path/cache. Skips where the data is not at ../shared/datasets/smap_msl."""
    from pathlib import Path

    data = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "smap_msl"
    if not data.is_dir():
        pytest.skip(f"SMAP/MSL data not found at {data}")
    from stream_detector.evaluation.threshold_grid import ThresholdVariant, run_grid
    from stream_detector.settings import Settings

    def make(recipe):
        default = ThresholdVariant(
            "default", Settings().threshold.model_dump(), Settings().alerts.model_dump()
        )
        cache = tmp_path / "cache"
        run_grid(data, "smap", recipe, Settings(), [default], ["D-11"], False, cache=cache)
        return cache

    return make


@pytest.fixture()
def d11_cache(d11_cache_of):
    """A score cache of D-11 made in seconds: a small dense_ae, one epoch."""
    from stream_detector.evaluation.runner import ModelRecipe
    from stream_detector.models.base import FitConfig

    return d11_cache_of(
        ModelRecipe(
            kind="dense_ae",
            window=30,
            hyperparameters={"score_features": [0], "hidden": [16, 8]},
            fit=FitConfig(epochs=1, device="cpu"),
            train_stride=8,
        )
    )
