"""Sliding windows over a multivariate series, as a view that copies nothing."""

from __future__ import annotations

import numpy as np


def sliding_windows(x: np.ndarray, window: int, stride: int = 1) -> np.ndarray:
    """Windows (N, window, D) of a series ``x`` (T, D), N = (T - window) // stride + 1.

    The result is a read-only strided view of ``x``: no data is copied, so windows over a
    long series cost nothing until a batch of them is gathered (fancy indexing copies).

    Raises ValueError when ``x`` is not 2-D, ``window`` or ``stride`` is below 1, or the series
    is shorter than one window.
    """
    if x.ndim != 2:
        raise ValueError(f"expected a series of shape (T, D), got shape {x.shape}")
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    length = x.shape[0]
    if length < window:
        raise ValueError(f"series of length {length} is shorter than one window of {window}")
    # sliding_window_view puts the window axis last, (T - window + 1, D, window); the
    # transpose and the stride slice are views too, so nothing is copied.
    view = np.lib.stride_tricks.sliding_window_view(x, window, axis=0)
    return view.transpose(0, 2, 1)[::stride]
