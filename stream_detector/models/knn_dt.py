"""The nearest analogues' next value (``kind = "knn_dt"``): a predictor with no weights to train.

The method of analogues: a window's last ``n_predictions`` target values (column 0, the
telemetry value, by default) are predicted as the mean of the values that followed the
``neighbours`` training histories nearest to the ``history`` steps before them (Euclidean
distance over every feature, telemetry value and command flags alike). A window's score is
the mean absolute error of that prediction. With the default ``n_predictions = 1`` it is
the error of predicting the window's newest value, the quantity ``lstm_dt`` scores, so
every threshold chosen for prediction errors reads these scores unchanged.

Fitting keeps the training windows' histories and the values that followed them, and,
unless both are given, chooses ``history`` and ``neighbours`` on the validation windows:
the pair with the lowest mean absolute error of the prediction the score is made of, as
``lstm_dt``'s training watches its validation loss. Without validation windows the fixed
fallback (``FALLBACK``) is used.

Why it is here: it has no training seed (two trainings of ``lstm_dt`` differ by as much as
the threshold choices the race compares; docs/threshold-race.md, fifteenth look), a
channel fits in seconds on a CPU, and its errors are a different model's, so what one
misses the other may not.

Ties are common (telemetry repeats itself exactly), so neighbours are ranked by squared
distance rounded to ``DISTANCE_QUANTUM`` and then by position in the training windows: the
same window scores the same whichever batch it is in. Scores of the training windows
themselves are in-sample (a window is its own nearest history), unlike a network's.
"""

from __future__ import annotations

import time
from typing import Any, Self

import numpy as np
import torch
from tqdm.auto import tqdm

from stream_detector.models.base import (
    Detector,
    FitConfig,
    FitHistory,
    RecipeDefaults,
    checked_n_predictions,
    checked_score_features,
    register,
    resolve_device,
)
from stream_detector.models.torch_training import windows_to_tensor

__all__ = ["FALLBACK", "HISTORY_CANDIDATES", "NEIGHBOUR_CANDIDATES", "NearestAnaloguePredictor"]

# What fit chooses among when a setting is left open (those that fit before the predicted steps).
HISTORY_CANDIDATES = (5, 10, 25, 50, 100)
NEIGHBOUR_CANDIDATES = (1, 5, 20)
# (history, neighbours) when nothing validates and a setting is left open.
FALLBACK = (25, 5)
# Squared distances equal to this precision are ties, broken by training order.
DISTANCE_QUANTUM = 1e-6
# Rounded squared distances are capped here (beyond it every pair ties), so that a key,
# capped distance × analogues + position, stays within int64 for up to MAX_ANALOGUES.
DISTANCE_CAP = 1e13
MAX_ANALOGUES = 900_000
# Queries per distance computation: bounds memory at QUERY_BATCH × training windows.
QUERY_BATCH = 512


@register
class NearestAnaloguePredictor(Detector):
    """Predicts a window's last target values from the training histories nearest to them."""

    kind = "knn_dt"
    nonnegative_scores = True  # the absolute prediction error
    # lstm_dt's window and raw values, so the two detectors' scores line up step for step;
    # every training window is kept (stride 1): more analogues, and fitting is cheap.
    recipe_defaults = RecipeDefaults(
        window=251, scaling="none", epochs=1, patience=1, batch_size=QUERY_BATCH, train_stride=1
    )

    def __init__(
        self,
        window: int,
        n_features: int,
        *,
        history: int | None = None,
        neighbours: int | None = None,
        n_predictions: int = 1,
        score_features: list[int] | None = None,
    ) -> None:
        super().__init__(window, n_features)
        self.n_predictions = checked_n_predictions(n_predictions, window)
        longest = self._longest_history
        if history is not None and not 1 <= int(history) <= longest:
            raise ValueError(
                f"history must lie in [1, window - n_predictions] = [1, {longest}], got {history}"
            )
        if neighbours is not None and int(neighbours) < 1:
            raise ValueError(f"neighbours must be at least 1, got {neighbours}")
        self.history = None if history is None else int(history)
        self.neighbours = None if neighbours is None else int(neighbours)
        self.score_features = checked_score_features(
            [0] if score_features is None else score_features, n_features
        )
        # What fit chose (or was given); 0 until fitted.
        self.chosen_history = 0
        self.chosen_neighbours = 0
        # The analogues: histories in float64 (the distances' precision) with their squared
        # norms, kept from fit so that scoring does not convert them again every batch.
        self._histories = torch.zeros(0, 0, dtype=torch.float64)
        self._norms = torch.zeros(0, dtype=torch.float64)
        self._successors = torch.zeros(0, self.n_predictions, len(self.score_features))

    @property
    def _longest_history(self) -> int:
        """The most steps a history can hold: those before the predicted ones."""
        return self.window - self.n_predictions

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "neighbours": self.neighbours,
            "n_predictions": self.n_predictions,
            "score_features": list(self.score_features),
        }

    def to(self, device: str | torch.device) -> Self:
        self.device = resolve_device(device)
        self._histories = self._histories.to(self.device)
        self._norms = self._norms.to(self.device)
        self._successors = self._successors.to(self.device)
        return self

    def _flat_histories(self, windows: np.ndarray, history: int) -> torch.Tensor:
        """The ``history`` steps before the predicted ones, flattened: (B, history × F)."""
        end = self.window - self.n_predictions
        part = windows[:, end - history : end, :].reshape(len(windows), -1)
        return windows_to_tensor(part, self.device)

    def _targets(self, windows: np.ndarray) -> torch.Tensor:
        """The predicted values (B, n_predictions, targets)."""
        predicted = windows[:, -self.n_predictions :, :][:, :, self.score_features]
        return windows_to_tensor(predicted, self.device)

    def _nearest(
        self, queries: torch.Tensor, reference: torch.Tensor, norms: torch.Tensor, k: int
    ) -> torch.Tensor:
        """Indices (B, k) of each query's k nearest histories in ``reference`` (float64, with
        its squared ``norms``), nearest first, ties by order."""
        positions = torch.arange(len(reference), device=reference.device)
        parts = []
        for start in range(0, len(queries), QUERY_BATCH):
            query = queries[start : start + QUERY_BATCH].double()
            squared = (query**2).sum(dim=1, keepdim=True) + norms - 2 * query @ reference.T
            # An integer key per pair: the rounded distance first, then the training position,
            # so that equal distances rank the same in every batch.
            rounded = torch.floor(squared.clamp(min=0) / DISTANCE_QUANTUM).clamp(max=DISTANCE_CAP)
            key = rounded.long() * len(reference) + positions
            parts.append(torch.topk(key, k, dim=1, largest=False, sorted=True).indices)
        return torch.cat(parts) if parts else torch.zeros(0, k, dtype=torch.long)

    def fit(
        self,
        train: np.ndarray,
        val: np.ndarray | None,
        config: FitConfig,
        progress: bool = True,
    ) -> FitHistory:
        """Keep ``train``'s histories and successors; choose what was left open on ``val``."""
        started = time.perf_counter()
        self.check_windows(train)
        if not 0 < len(train) <= MAX_ANALOGUES:
            raise ValueError(
                f"knn_dt keeps 1 to {MAX_ANALOGUES:,} training windows, got {len(train):,}: "
                "space them out with a larger train stride"
            )
        successors = self._targets(train)
        longest = self._longest_history
        history_options = (
            [h for h in HISTORY_CANDIDATES if h <= longest] or [longest]
            if self.history is None
            else [self.history]
        )
        k_options = [
            min(k, len(train))
            for k in (NEIGHBOUR_CANDIDATES if self.neighbours is None else (self.neighbours,))
        ]
        open_settings = self.history is None or self.neighbours is None
        record = FitHistory()
        has_val = val is not None and len(val) > 0
        if has_val and open_settings:
            assert val is not None
            self.check_windows(val)
            val_targets = self._targets(val)
            best: tuple[float, int, int] | None = None
            bar = tqdm(history_options, desc="knn_dt history", unit="h", disable=not progress)
            for h in bar:
                reference = self._flat_histories(train, h).double()
                nearest = self._nearest(
                    self._flat_histories(val, h),
                    reference,
                    _squared_norms(reference),
                    max(k_options),
                )
                for k in k_options:
                    prediction = successors[nearest[:, :k]].mean(dim=1)
                    error = float(torch.abs(prediction - val_targets).mean())
                    if best is None or error < best[0]:
                        best = (error, h, k)
            assert best is not None
            val_error, chosen_history, chosen_neighbours = best
            record.val_loss.append(val_error)
        else:
            chosen_history = min(FALLBACK[0] if self.history is None else self.history, longest)
            chosen_neighbours = min(
                FALLBACK[1] if self.neighbours is None else self.neighbours, len(train)
            )
        self.chosen_history = chosen_history
        self.chosen_neighbours = chosen_neighbours
        self._keep_analogues(self._flat_histories(train, chosen_history), successors)
        # In-sample (each window is among its own analogues), on at most ~2,000 windows.
        sample = train[:: max(1, len(train) // 2000)]
        record.train_loss.append(float(np.mean(self.score(sample))))
        record.learning_rates.append(0.0)
        record.seconds = time.perf_counter() - started
        return record

    def score(self, windows: np.ndarray) -> np.ndarray:
        """Mean absolute error of predicting each window's last target values (B,)."""
        self.check_windows(windows)
        if self.chosen_history == 0:
            raise RuntimeError("knn_dt has no training windows yet: fit or load_state_dict first")
        if len(windows) == 0:
            return np.zeros(0, dtype=np.float32)
        queries = self._flat_histories(windows, self.chosen_history)
        nearest = self._nearest(queries, self._histories, self._norms, self.chosen_neighbours)
        prediction = self._successors[nearest].mean(dim=1)
        error = torch.abs(prediction - self._targets(windows)).mean(dim=(1, 2))
        return error.float().cpu().numpy()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "histories": self._histories.float(),
            "successors": self._successors,
            "history": torch.tensor(self.chosen_history),
            "neighbours": torch.tensor(self.chosen_neighbours),
        }

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        expected = {"histories", "successors", "history", "neighbours"}
        if set(state_dict) != expected:
            raise KeyError(f"knn_dt expects weights {sorted(expected)}, got {sorted(state_dict)}")
        history = int(state_dict["history"])
        neighbours = int(state_dict["neighbours"])
        histories = state_dict["histories"]
        successors = state_dict["successors"]
        if not 1 <= history <= self._longest_history or neighbours < 1:
            raise ValueError(f"knn_dt state holds history {history} and neighbours {neighbours}")
        expected_successors = (len(histories), self.n_predictions, len(self.score_features))
        if (
            histories.shape[1:] != (history * self.n_features,)
            or successors.shape != expected_successors
        ):
            raise ValueError(
                f"knn_dt state shapes {tuple(histories.shape)} and {tuple(successors.shape)} "
                f"do not fit history {history}, {self.n_features} features, "
                f"{self.n_predictions} predictions and {len(self.score_features)} targets"
            )
        if neighbours > len(histories):
            raise ValueError(f"knn_dt state has {len(histories)} windows, fewer than {neighbours}")
        self.chosen_history = history
        self.chosen_neighbours = neighbours
        self._keep_analogues(histories.float().to(self.device), successors.float().to(self.device))

    def _keep_analogues(self, histories: torch.Tensor, successors: torch.Tensor) -> None:
        self._histories = histories.double()
        self._norms = _squared_norms(self._histories)
        self._successors = successors


def _squared_norms(rows: torch.Tensor) -> torch.Tensor:
    return (rows**2).sum(dim=1)
