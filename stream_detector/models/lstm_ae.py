"""The seed LSTM autoencoder for SMAP/MSL windows (``kind = "lstm_ae"``).

Encoder: LSTM(hidden1, sequence) -> Dropout -> LSTM(hidden2, last state) -> Linear(latent).
Decoder: the latent vector repeated for every step -> LSTM(hidden2, sequence) -> Dropout
-> LSTM(hidden1, sequence) -> Linear(n_features) at every step. Score: mean squared
reconstruction error over the window.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stream_detector.models.base import register
from stream_detector.models.reconstruction import ReconstructionDetector

__all__ = ["LSTMAutoencoder", "LSTMAutoencoderNetwork"]


class LSTMAutoencoderNetwork(nn.Module):
    """(B, T, F) -> (B, T, F) through a ``latent``-sized bottleneck."""

    def __init__(
        self, n_features: int, hidden1: int, hidden2: int, latent: int, dropout: float
    ) -> None:
        super().__init__()
        self.encoder_outer = nn.LSTM(n_features, hidden1, batch_first=True)
        self.encoder_dropout = nn.Dropout(dropout)
        self.encoder_inner = nn.LSTM(hidden1, hidden2, batch_first=True)
        self.to_latent = nn.Linear(hidden2, latent)
        self.decoder_inner = nn.LSTM(latent, hidden2, batch_first=True)
        self.decoder_dropout = nn.Dropout(dropout)
        self.decoder_outer = nn.LSTM(hidden2, hidden1, batch_first=True)
        self.to_features = nn.Linear(hidden1, n_features)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, latent)."""
        sequence, _ = self.encoder_outer(x)
        _, (last_hidden, _) = self.encoder_inner(self.encoder_dropout(sequence))
        return self.to_latent(last_hidden[-1])

    def decode(self, latent: torch.Tensor, steps: int) -> torch.Tensor:
        """(B, latent) -> (B, steps, F)."""
        # Keras' RepeatVector: every decoder step reads the same latent vector.
        repeated = latent.unsqueeze(1).expand(-1, steps, -1)
        sequence, _ = self.decoder_inner(repeated)
        sequence, _ = self.decoder_outer(self.decoder_dropout(sequence))
        return self.to_features(sequence)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x.shape[1])


@register
class LSTMAutoencoder(ReconstructionDetector):
    """LSTM autoencoder scoring windows by reconstruction error (the SMAP/MSL seed model)."""

    kind = "lstm_ae"

    def __init__(
        self,
        window: int,
        n_features: int,
        *,
        hidden1: int = 128,
        hidden2: int = 64,
        latent: int = 16,
        dropout: float = 0.2,
        score_features: list[int] | None = None,
        score_last: int | None = None,
    ) -> None:
        if min(hidden1, hidden2, latent) < 1:
            raise ValueError("hidden1, hidden2 and latent must be at least 1")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.hidden1 = hidden1
        self.hidden2 = hidden2
        self.latent = latent
        self.dropout = dropout
        super().__init__(window, n_features, score_features=score_features, score_last=score_last)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {
            "hidden1": self.hidden1,
            "hidden2": self.hidden2,
            "latent": self.latent,
            "dropout": self.dropout,
            **self.scoring_hyperparameters,
        }

    def build_network(self) -> nn.Module:
        return LSTMAutoencoderNetwork(
            self.n_features, self.hidden1, self.hidden2, self.latent, self.dropout
        )
