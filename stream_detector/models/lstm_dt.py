"""telemanom's LSTM next-value predictor (``kind = "lstm_dt"``; Hundman et al., KDD 2018).

The strongest published baseline on SMAP/MSL. A window of W steps is split in two: the
first W − n steps of every feature are the history, the last n steps of the target
column(s) (column 0, the telemetry value, by default) are what the model predicts. The
network is telemanom's: stacked LSTMs (2 × 80 units) with dropout 0.3 after each, the last
LSTM's final state, and a linear Dense layer with one output per predicted value.
It trains on the mean squared prediction error (telemanom's ``loss_metric: mse``) and a
window's score is the mean *absolute* prediction error over its predicted values
(telemanom's raw error ``e = |ŷ − y|``, before its EWMA smoothing and dynamic threshold,
which belong to the thresholding side, not to the model).

telemanom's settings map onto ours as: ``l_s = 250`` history steps and ``n_predictions =
10`` are ``window = 260, n_predictions = 10``; its training (batch 64, ≤35 epochs, early
stopping patience 10 with ``min_delta`` 0.0003 and the last epoch's weights kept, no
learning-rate schedule, 20 % of the shuffled windows validating) is a ``FitConfig`` with
``min_delta=0.0003, restore_best=False, lr_schedule=False`` and the shuffled split.

With ``n_predictions > 1`` the n outputs are a training target; what is scored is
``scored_prediction``:

- ``"first"`` (default, telemanom's): the error of the *first* prediction, the value one
  step after the history, made from the window's newest ``W − n`` steps. telemanom's
  ``predict_in_batches`` lines up every window's predictions by the time step they are for
  and keeps, for each step, the first prediction made for it, the one-step-ahead one; a
  window holds that prediction on its own, so the per-window score is exactly telemanom's.
- ``"mean"``: the mean error over the window's last n values, predicted from the steps
  before them. It lags the newest value by up to n − 1 steps and averages a spike away.

With the default ``n_predictions = 1`` the two are the same number: the error of the
prediction of the window's newest value.

``init = "keras"`` starts the weights as telemanom's Keras network did (Glorot-uniform
kernels, orthogonal recurrent kernels, forget-gate bias 1); the default ``"torch"`` keeps
torch's uniform draws, which every cached score so far was trained from.

``recurrent_gate = "hard_sigmoid"`` opens and closes the LSTM's input, forget and output
gates with Keras 2.1's ``hard_sigmoid`` (clip(0.2·x + 0.5, 0, 1)), the default of the Keras
telemanom ran on, instead of the logistic sigmoid of torch's fused LSTM. It steps through
time in Python (``hard_sigmoid_lstm.HardSigmoidLSTM``), slower than the fused kernel.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal, Self

import numpy as np
import torch
from torch import nn

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
from stream_detector.models.hard_sigmoid_lstm import HardSigmoidLSTM
from stream_detector.models.torch_training import fit_detector, windows_to_tensor

__all__ = ["LSTMNextValuePredictor", "TelemanomNetwork"]

TrainingLoss = Literal["squared", "absolute"]
Initialisation = Literal["torch", "keras"]
ScoredPrediction = Literal["first", "mean"]
RecurrentGate = Literal["sigmoid", "hard_sigmoid"]


class TelemanomNetwork(nn.Module):
    """History (B, L, F) -> predictions (B, n_predictions, n_targets)."""

    def __init__(
        self,
        n_features: int,
        hidden: list[int],
        dropout: float,
        n_predictions: int,
        n_targets: int,
        init: Initialisation = "torch",
        recurrent_gate: RecurrentGate = "sigmoid",
    ) -> None:
        super().__init__()
        self.n_predictions = n_predictions
        self.n_targets = n_targets
        sizes = [n_features, *hidden]
        self.lstms = nn.ModuleList(
            nn.LSTM(size_in, size_out, batch_first=True)
            if recurrent_gate == "sigmoid"
            else HardSigmoidLSTM(size_in, size_out)
            for size_in, size_out in itertools.pairwise(sizes)
        )
        # telemanom puts a Dropout after every LSTM, the last one included.
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden[-1], n_predictions * n_targets)
        if init == "keras":
            self._keras_init()

    @torch.no_grad()
    def _keras_init(self) -> None:
        """Keras' defaults, which telemanom's network was trained from: Glorot-uniform input
        and Dense kernels, an orthogonal recurrent kernel, zero biases but a forget-gate bias
        of 1 (``unit_forget_bias``). torch's default draws everything from U(±1/√units)."""
        for lstm in self.lstms:
            for name, parameter in lstm.named_parameters():
                if name.startswith("weight_ih"):
                    # (4·units, inputs): the same fan-in and fan-out as Keras' (inputs, 4·units).
                    nn.init.xavier_uniform_(parameter)
                elif name.startswith("weight_hh"):
                    # Keras draws one (units, 4·units) orthogonal matrix; this is its transpose.
                    nn.init.orthogonal_(parameter)
                elif name.startswith("bias"):
                    parameter.zero_()
                    # torch adds two biases where Keras has one: the forget gate's 1 goes in
                    # the input one. The gates are ordered i, f, g, o.
                    if name.startswith("bias_ih"):
                        units = len(parameter) // 4
                        parameter[units : 2 * units] = 1.0
        nn.init.xavier_uniform_(self.head.weight)
        self.head.bias.zero_()

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        sequence = history
        for lstm in self.lstms:
            sequence, _ = lstm(sequence)
            sequence = self.dropout(sequence)
        prediction = self.head(sequence[:, -1])
        return prediction.reshape(-1, self.n_predictions, self.n_targets)


@register
class LSTMNextValuePredictor(Detector):
    """Predicts the window's last ``n_predictions`` target values from the steps before them."""

    kind = "lstm_dt"
    nonnegative_scores = True  # the absolute prediction error
    # telemanom's setup: 250 steps of history before the predicted value, raw (-1, 1)
    # values and 0/1 command flags, batch 64. Fewer epochs (20, patience 5) and every
    # second training window: what a 2-core CPU trains in about a minute a channel.
    recipe_defaults = RecipeDefaults(
        window=251, scaling="none", epochs=20, patience=5, batch_size=64, train_stride=2
    )

    def __init__(
        self,
        window: int,
        n_features: int,
        *,
        hidden: list[int] | None = None,
        dropout: float = 0.3,
        n_predictions: int = 1,
        loss: TrainingLoss = "squared",
        score_features: list[int] | None = None,
        scored_prediction: ScoredPrediction = "first",
        init: Initialisation = "torch",
        recurrent_gate: RecurrentGate = "sigmoid",
    ) -> None:
        super().__init__(window, n_features)
        hidden = [80, 80] if hidden is None else [int(size) for size in hidden]
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must be a non-empty list of positive sizes, got {hidden}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        n_predictions = checked_n_predictions(n_predictions, window)
        if loss not in ("squared", "absolute"):
            raise ValueError(f"loss must be 'squared' or 'absolute', got {loss!r}")
        if scored_prediction not in ("first", "mean"):
            raise ValueError(
                f"scored_prediction must be 'first' or 'mean', got {scored_prediction!r}"
            )
        if init not in ("torch", "keras"):
            raise ValueError(f"init must be 'torch' or 'keras', got {init!r}")
        if recurrent_gate not in ("sigmoid", "hard_sigmoid"):
            raise ValueError(
                f"recurrent_gate must be 'sigmoid' or 'hard_sigmoid', got {recurrent_gate!r}"
            )
        # The columns predicted and scored. The name matches the reconstruction models', so
        # the same setting (the CLI's --score-features) means "score the telemetry value".
        targets = checked_score_features(
            [0] if score_features is None else score_features, n_features
        )
        self.hidden = hidden
        self.dropout = float(dropout)
        self.n_predictions = n_predictions
        self.loss: TrainingLoss = loss
        self.scored_prediction: ScoredPrediction = scored_prediction
        self.score_features = targets
        self.init: Initialisation = init
        self.recurrent_gate: RecurrentGate = recurrent_gate
        self.network = TelemanomNetwork(
            n_features, hidden, self.dropout, n_predictions, len(targets), init, recurrent_gate
        )

    @property
    def hyperparameters(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "hidden": list(self.hidden),
            "dropout": self.dropout,
            "n_predictions": self.n_predictions,
            "loss": self.loss,
            "score_features": list(self.score_features),
            "scored_prediction": self.scored_prediction,
        }
        # Only a non-default start is written: the score caches key their scores by these,
        # and how the weights started does not change how trained weights score.
        if self.init != "torch":
            described["init"] = self.init
        # Likewise the gate: every cache before it was trained with the sigmoid.
        if self.recurrent_gate != "sigmoid":
            described["recurrent_gate"] = self.recurrent_gate
        return described

    def to(self, device: str | torch.device) -> Self:
        self.device = resolve_device(device)
        self.network.to(self.device)
        return self

    def _prediction_error(self, network: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """Signed errors (B, n_predictions, n_targets) of predicting the window's last steps."""
        history = batch[:, : -self.n_predictions, :]
        target = batch[:, -self.n_predictions :, self.score_features]
        return network(history) - target

    def _batch_loss(self, network: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        error = self._prediction_error(network, batch)
        if self.loss == "absolute":
            return torch.mean(torch.abs(error))
        return torch.mean(error**2)

    def fit(
        self,
        train: np.ndarray,
        val: np.ndarray | None,
        config: FitConfig,
        progress: bool = True,
    ) -> FitHistory:
        return fit_detector(self, self.network, train, val, config, self._batch_loss, progress)

    def _first_prediction_error(self, batch: torch.Tensor) -> torch.Tensor:
        """Signed errors (B, 1, n_targets) of the one-step-ahead prediction of the newest step."""
        n_history = self.window - self.n_predictions
        history = batch[:, -n_history - 1 : -1, :]
        target = batch[:, -1:, self.score_features]
        return self.network(history)[:, :1, :] - target

    def score(self, windows: np.ndarray) -> np.ndarray:
        """Absolute error of the scored prediction(s) of each window (B,)."""
        self.check_windows(windows)
        if len(windows) == 0:
            return np.zeros(0, dtype=np.float32)
        self.network.eval()
        with torch.inference_mode():
            batch = windows_to_tensor(windows, self.device)
            if self.scored_prediction == "first":
                error = self._first_prediction_error(batch)
            else:
                error = self._prediction_error(self.network, batch)
            return torch.abs(error).mean(dim=(1, 2)).float().cpu().numpy()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.network.state_dict())

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.network.load_state_dict(state_dict, strict=True)
