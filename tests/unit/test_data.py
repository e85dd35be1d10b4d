"""The SMAP/MSL loader against the real files, and sliding windows as a no-copy view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_detector.data import channel_ids, load_labels, load_series, sliding_windows

SMAP_MSL_ROOT = Path("/work/shared/datasets/smap_msl")
needs_dataset = pytest.mark.skipif(
    not SMAP_MSL_ROOT.is_dir(), reason=f"SMAP/MSL data set not at {SMAP_MSL_ROOT}"
)


@needs_dataset
def test_load_series_reads_a_real_channel_as_float32() -> None:
    """A-1 has 2880 train and 8640 test rows of 25 columns (SMAP width)."""
    train = load_series(SMAP_MSL_ROOT, "A-1", "train")
    test = load_series(SMAP_MSL_ROOT, "A-1", "test")
    assert train.shape == (2880, 25)
    assert test.shape == (8640, 25)
    assert train.dtype == np.float32
    assert np.all(np.isfinite(test))


@needs_dataset
def test_load_series_errors_name_the_missing_path_and_root(tmp_path: Path) -> None:
    """A missing channel or root says which path and which root."""
    with pytest.raises(FileNotFoundError, match=r"Z-99.*dataset root"):
        load_series(SMAP_MSL_ROOT, "Z-99", "train")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_series(tmp_path / "nowhere", "A-1", "train")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_labels(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split"):
        load_series(SMAP_MSL_ROOT, "A-1", "validation")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channel id"):
        load_series(SMAP_MSL_ROOT, "../train/A-1", "train")


@needs_dataset
def test_load_labels_matches_the_published_counts() -> None:
    """82 rows, P-2 twice in file order, 105 sequences: 69 SMAP and 36 MSL."""
    rows = load_labels(SMAP_MSL_ROOT)
    assert len(rows) == 82
    p2 = [row for row in rows if row.chan_id == "P-2"]
    assert [row.anomaly_sequences for row in p2] == [[(5350, 6575)], [(5300, 6420)]]
    per_craft = {"SMAP": 0, "MSL": 0}
    for row in rows:
        per_craft[row.spacecraft] += len(row.anomaly_sequences)
        assert len(row.classes) == len(row.anomaly_sequences)
        assert set(row.classes) <= {"point", "contextual"}
        assert all(0 <= start <= end < row.num_values for start, end in row.anomaly_sequences)
    assert per_craft == {"SMAP": 69, "MSL": 36}
    first = rows[0]
    assert first.chan_id == "P-1"
    assert first.classes == ["contextual"] * 3
    assert first.num_values == 8505


@needs_dataset
def test_channel_ids_are_distinct_in_file_order_and_t10_only_without_spacecraft() -> None:
    """54 SMAP, 27 MSL; the unlabelled T-10 appears only in the full list."""
    smap = channel_ids(SMAP_MSL_ROOT, "SMAP")
    msl = channel_ids(SMAP_MSL_ROOT, "MSL")
    everything = channel_ids(SMAP_MSL_ROOT)
    assert (len(smap), len(msl), len(everything)) == (54, 27, 82)
    assert smap[:3] == ["P-1", "S-1", "E-1"]
    assert "T-10" not in smap + msl
    assert everything == [*smap, *msl, "T-10"]
    with pytest.raises(ValueError, match="spacecraft"):
        channel_ids(SMAP_MSL_ROOT, "Voyager")  # type: ignore[arg-type]


def test_sliding_windows_shape_values_and_no_copy() -> None:
    """Windows are read-only views of the series holding the right rows."""
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    windows = sliding_windows(x, window=4, stride=3)
    assert windows.shape == (3, 4, 3)
    np.testing.assert_array_equal(windows[1], x[3:7])
    np.testing.assert_array_equal(windows[2], x[6:10])
    assert np.shares_memory(windows, x)
    assert not windows.flags.writeable
    assert sliding_windows(x, window=10).shape == (1, 10, 3)


def test_sliding_windows_rejects_bad_arguments() -> None:
    """Too short a series, a 1-D series and non-positive sizes are ValueErrors."""
    x = np.zeros((5, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="shorter"):
        sliding_windows(x, window=6)
    with pytest.raises(ValueError, match=r"\(T, D\)"):
        sliding_windows(np.zeros(5), window=2)
    with pytest.raises(ValueError, match="window"):
        sliding_windows(x, window=0)
    with pytest.raises(ValueError, match="stride"):
        sliding_windows(x, window=2, stride=0)


# No deadline: this box is shared, and a slow first example is not a failure.
@settings(deadline=None)
@given(
    length=st.integers(1, 60),
    features=st.integers(1, 4),
    window=st.integers(1, 60),
    stride=st.integers(1, 10),
)
def test_sliding_windows_property(length: int, features: int, window: int, stride: int) -> None:
    """Window i is x[i*stride : i*stride + window], for every i, and there are no more."""
    x = np.arange(length * features, dtype=np.float32).reshape(length, features)
    if length < window:
        with pytest.raises(ValueError):
            sliding_windows(x, window, stride)
        return
    windows = sliding_windows(x, window, stride)
    assert windows.shape == ((length - window) // stride + 1, window, features)
    for i, w in enumerate(windows):
        np.testing.assert_array_equal(w, x[i * stride : i * stride + window])
    # The next window would run past the end.
    assert len(windows) * stride + window > length
    assert np.shares_memory(windows, x)
