"""Scaler, calibration, checkpoint file and the trainer that ties them together."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stream_detector import __version__
from stream_detector.data import sliding_windows
from stream_detector.errors import CheckpointError
from stream_detector.models import FitConfig
from stream_detector.training import (
    Calibration,
    Checkpoint,
    StandardScaler,
    load_checkpoint,
    save_checkpoint,
    split_windows,
    train_on_dataset,
    train_on_series,
)

SMAP_MSL_ROOT = Path("/work/shared/datasets/smap_msl")
TINY = {"hidden1": 16, "hidden2": 8, "latent": 4}
WINDOW = 20


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synthetic_series(length: int, seed: int) -> np.ndarray:
    """A sine value column in raw units plus a constant and a rare one-hot flag column."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    value = 50 + 10 * np.sin(2 * np.pi * t / 30) + rng.normal(0, 0.3, length)
    constant = np.zeros(length)
    flag = (t % 97 == 0).astype(float)
    return np.stack([value, constant, flag], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoint() -> Checkpoint:
    series = [synthetic_series(300, seed=1), synthetic_series(200, seed=2)]
    return train_on_series(
        "lstm_ae",
        series,
        window=WINDOW,
        stride=5,
        hyperparameters=TINY,
        fit_config=FitConfig(epochs=4, device="cpu"),
        channels=["X-1", "X-2"],
        dataset="synthetic",
        progress=False,
    )


# --- scaler ------------------------------------------------------------------------------


def test_scaler_standardises_and_leaves_constant_columns_finite() -> None:
    """Train data comes out with mean 0 and std 1; a constant column gets std 1, not 0."""
    data = synthetic_series(500, seed=0)
    scaler = StandardScaler.fit(data)
    scaled = scaler.transform(data)
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled[:, 0].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(scaled[:, 0].std(), 1, rtol=1e-4)
    assert scaler.std[1] == 1.0
    np.testing.assert_array_equal(scaled[:, 1], 0)
    np.testing.assert_allclose(scaler.inverse_transform(scaled), data, rtol=1e-5, atol=1e-4)


def test_scaler_applies_to_windows_and_round_trips_through_json() -> None:
    """Statistics are per feature on the last axis; to_dict/from_dict loses nothing."""
    data = synthetic_series(100, seed=5)
    scaler = StandardScaler.fit(data)
    windows = sliding_windows(data, 10)
    np.testing.assert_array_equal(scaler.transform(windows)[3], scaler.transform(data)[3:13])
    again = StandardScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert again == scaler
    with pytest.raises(ValueError, match="features"):
        scaler.transform(np.zeros((4, 2), np.float32))


# --- calibration -------------------------------------------------------------------------


def test_calibration_statistics() -> None:
    """n, mean, std and the named quantiles are those of the scores."""
    scores = np.arange(1, 1001, dtype=np.float32)
    calibration = Calibration.from_scores(scores)
    assert calibration.n == 1000
    assert calibration.mean == pytest.approx(500.5)
    assert calibration.std == pytest.approx(np.std(np.arange(1, 1001)))
    assert list(calibration.quantiles) == ["p50", "p90", "p95", "p99", "p99.9", "max"]
    assert calibration.quantiles["p50"] == pytest.approx(500.5)
    assert calibration.quantiles["p99"] == pytest.approx(np.quantile(scores, 0.99))
    assert calibration.quantiles["max"] == 1000
    assert Calibration.from_dict(calibration.to_dict()) == calibration
    with pytest.raises(ValueError):
        Calibration.from_scores(np.array([]))


# --- trainer -----------------------------------------------------------------------------


def test_split_windows_never_crosses_series_and_holds_out_the_end() -> None:
    """Each series gives its own windows; the last 20 % of each go to validation."""
    a = np.zeros((30, 1), np.float32)
    b = np.ones((25, 1), np.float32)
    train, val = split_windows([a, b], window=6, stride=1, val_fraction=0.2)
    # a: 25 windows -> 20 train, 5 val; b: 20 windows -> 16 train, 4 val.
    assert (len(train), len(val)) == (36, 9)
    # A window mixing zeros and ones would span both series.
    assert all(len(np.unique(w)) == 1 for w in np.concatenate([train, val]))
    np.testing.assert_array_equal(train[:20], sliding_windows(a, 6)[:20])
    np.testing.assert_array_equal(val[5:], sliding_windows(b, 6)[16:])


def test_a_shuffled_split_validates_a_seeded_random_fifth_of_each_series() -> None:
    """telemanom's split: as many windows per series as the chronological one, drawn at random
    (the same draw for the same seed), in time order, the end of each series trained on too."""
    a = np.arange(30, dtype=np.float32)[:, None]
    b = 100 + np.arange(25, dtype=np.float32)[:, None]
    train, val = split_windows([a, b], window=6, stride=1, val_fraction=0.2, split="shuffled")
    assert (len(train), len(val)) == (36, 9)
    starts = np.concatenate([train, val])[:, 0, 0]
    # Every window exactly once, none spanning both series.
    np.testing.assert_array_equal(np.sort(starts), np.r_[np.arange(25), 100 + np.arange(20)])
    assert all(np.all(np.diff(w[:, 0]) == 1) for w in np.concatenate([train, val]))
    # Per series: 20 + 16 trained, in time order; the last windows are not all held out.
    a_train, b_train = train[:20, 0, 0], train[20:, 0, 0]
    assert np.all(a_train < 100) and np.all(b_train >= 100)
    assert np.all(np.diff(a_train) > 0) and np.all(np.diff(b_train) > 0)
    assert a_train.max() > 20 or b_train.max() > 115
    again, _ = split_windows([a, b], window=6, stride=1, val_fraction=0.2, split="shuffled")
    np.testing.assert_array_equal(again, train)
    other, _ = split_windows([a, b], 6, 1, 0.2, split="shuffled", seed=1)
    assert not np.array_equal(other, train)
    with pytest.raises(ValueError, match="split must be one of"):
        split_windows([a], window=6, stride=1, val_fraction=0.2, split="random")  # type: ignore[arg-type]


def test_train_on_series_builds_a_complete_checkpoint(checkpoint: Checkpoint) -> None:
    """The checkpoint carries shapes, channels, scaler, calibration and the fit summary."""
    assert checkpoint.window == WINDOW and checkpoint.stride == 5 and checkpoint.n_features == 3
    assert checkpoint.channels == ["X-1", "X-2"]
    assert checkpoint.detector.hyperparameters == {
        **TINY,
        "dropout": 0.2,
        "score_features": None,
        "score_last": None,
    }
    assert checkpoint.package_version == __version__
    # Scaler from the concatenated training series only.
    both = np.concatenate([synthetic_series(300, seed=1), synthetic_series(200, seed=2)])
    np.testing.assert_allclose(checkpoint.scaler.mean, both.mean(axis=0), rtol=1e-5)
    # train_stride defaults to stride: (300-20)//5+1 = 57 and (200-20)//5+1 = 37 windows.
    assert checkpoint.fit["train_windows"] + checkpoint.fit["val_windows"] == 57 + 37
    assert checkpoint.fit["config"]["epochs"] == 4
    assert checkpoint.fit["history"]["epochs"] == len(checkpoint.fit["history"]["train_loss"])
    assert checkpoint.calibration.n == 57 + 37
    json.dumps(checkpoint.meta())  # everything but the weights is plain JSON


def test_calibration_is_the_scores_of_all_training_windows(checkpoint: Checkpoint) -> None:
    """Recomputing the scores of train + val windows reproduces the stored calibration."""
    windows = np.concatenate(
        [
            sliding_windows(synthetic_series(300, seed=1), WINDOW, 5),
            sliding_windows(synthetic_series(200, seed=2), WINDOW, 5),
        ]
    )
    scores = checkpoint.score_raw(windows)
    assert checkpoint.calibration.mean == pytest.approx(float(scores.mean()), rel=1e-5)
    assert checkpoint.calibration.quantiles["max"] == pytest.approx(float(scores.max()), rel=1e-5)


def test_training_is_reproducible_with_the_same_seed() -> None:
    """Same data, same seed: same weights, same model_version."""
    series = [synthetic_series(150, seed=3)]
    kwargs = {
        "window": WINDOW,
        "hyperparameters": TINY,
        "fit_config": FitConfig(epochs=2, device="cpu", seed=7),
        "channels": ["X-3"],
        "dataset": "synthetic",
        "progress": False,
    }
    first = train_on_series("lstm_ae", series, **kwargs)  # type: ignore[arg-type]
    second = train_on_series("lstm_ae", series, **kwargs)  # type: ignore[arg-type]
    assert first.model_version == second.model_version


def test_train_on_series_rejects_mismatched_or_short_series() -> None:
    """Different feature counts and too-short series fail before any training."""
    with pytest.raises(ValueError, match="feature count"):
        train_on_series(
            "lstm_ae",
            [np.zeros((50, 3), np.float32), np.zeros((50, 4), np.float32)],
            window=WINDOW,
            channels=["A", "B"],
            dataset="x",
        )
    with pytest.raises(ValueError, match="B has 10 steps"):
        train_on_series(
            "lstm_ae",
            [np.zeros((50, 3), np.float32), np.zeros((10, 3), np.float32)],
            window=WINDOW,
            channels=["A", "B"],
            dataset="x",
        )


# --- checkpoint file ---------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_scores_and_version(
    checkpoint: Checkpoint, tmp_path: Path
) -> None:
    """A loaded checkpoint scores exactly like the saved one and keeps its version."""
    path = save_checkpoint(checkpoint, tmp_path / "models" / "x.pt")
    loaded = load_checkpoint(path, device="cpu")
    windows = sliding_windows(synthetic_series(120, seed=9), WINDOW)
    np.testing.assert_array_equal(loaded.score_raw(windows), checkpoint.score_raw(windows))
    assert loaded.model_version == checkpoint.model_version
    assert len(loaded.model_version) == 12
    assert loaded.scaler == checkpoint.scaler
    assert loaded.calibration == checkpoint.calibration
    assert loaded.meta() == checkpoint.meta()
    assert loaded.detector.device == torch.device("cpu")
    # Written with weights only: a safe loader can read it back.
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "stream-detector-checkpoint" and payload["format_version"] == 1


def test_load_auto_device_picks_what_is_there(checkpoint: Checkpoint, tmp_path: Path) -> None:
    """device="auto" means CUDA when available, the CPU otherwise."""
    loaded = load_checkpoint(save_checkpoint(checkpoint, tmp_path / "x.pt"))
    assert loaded.detector.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_model_version_changes_with_the_weights(checkpoint: Checkpoint, tmp_path: Path) -> None:
    """Different weights are a different model version."""
    loaded = load_checkpoint(save_checkpoint(checkpoint, tmp_path / "x.pt"), device="cpu")
    state = loaded.detector.state_dict()
    name = next(iter(state))
    state[name] = state[name] + 1e-3
    loaded.detector.load_state_dict(state)
    assert loaded.model_version != checkpoint.model_version


def test_missing_corrupt_and_foreign_files_raise_checkpoint_error(
    checkpoint: Checkpoint, tmp_path: Path
) -> None:
    """Every unreadable checkpoint is a CheckpointError that says why."""
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")

    good = save_checkpoint(checkpoint, tmp_path / "good.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(corrupt)

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a stream-detector checkpoint"):
        load_checkpoint(foreign)

    payload = torch.load(good, weights_only=True)
    payload["format_version"] = 99
    future = tmp_path / "future.pt"
    torch.save(payload, future)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(future)


def test_unknown_kind_and_mismatched_weights_raise_checkpoint_error(
    checkpoint: Checkpoint, tmp_path: Path
) -> None:
    """A model kind this build lacks, or weights of another shape, are refused clearly."""
    payload = torch.load(save_checkpoint(checkpoint, tmp_path / "x.pt"), weights_only=True)

    payload["meta"]["detector"]["kind"] = "quantum_ae"
    unknown = tmp_path / "unknown.pt"
    torch.save(payload, unknown)
    with pytest.raises(CheckpointError, match=r"quantum_ae.*available: .*lstm_ae"):
        load_checkpoint(unknown)

    payload["meta"]["detector"]["kind"] = "lstm_ae"
    payload["meta"]["detector"]["hyperparameters"]["hidden1"] = 32
    mismatched = tmp_path / "mismatched.pt"
    torch.save(payload, mismatched)
    with pytest.raises(CheckpointError, match="inconsistent"):
        load_checkpoint(mismatched)


def test_checkpoint_refuses_inconsistent_parts(checkpoint: Checkpoint) -> None:
    """A checkpoint whose window disagrees with its detector cannot be built."""
    with pytest.raises(ValueError, match="detector is for windows"):
        dataclasses.replace(checkpoint, window=WINDOW + 1)


# --- the real data set -------------------------------------------------------------------


@pytest.mark.skipif(not SMAP_MSL_ROOT.is_dir(), reason=f"no SMAP/MSL data at {SMAP_MSL_ROOT}")
def test_train_on_dataset_with_one_real_smap_channel(tmp_path: Path) -> None:
    """A-1 trains end to end with tiny settings, and its checkpoint loads back."""
    trained = train_on_dataset(
        SMAP_MSL_ROOT,
        ["A-1"],
        "lstm_ae",
        window=WINDOW,
        train_stride=10,
        hyperparameters=TINY,
        fit_config=FitConfig(epochs=2, device="cpu"),
        progress=False,
    )
    assert trained.n_features == 25
    assert trained.channels == ["A-1"] and trained.dataset == "smap_msl"
    assert trained.fit["history"]["epochs"] == 2
    assert np.isfinite(trained.calibration.quantiles["max"])
    loaded = load_checkpoint(save_checkpoint(trained, tmp_path / "a1.pt"), device="cpu")
    assert loaded.model_version == trained.model_version
