"""The chapter's LSTM autoencoder (``kind = "lstm_ae_chapter"``, chapter §4.4).

Encoder: a stacked LSTM (``num_layers`` × ``hidden``) reads the window; its last layer's
final hidden state goes through a Linear layer to the latent vector z. Decoder: a Linear
layer maps z to the decoder's initial hidden state (the same for every layer; cell states
start at zero), and z repeated for every step is the decoder LSTM's input; a Linear layer
maps each step's output to n_features. Score: mean squared reconstruction error.

How it differs from ``lstm_ae`` (the SMAP/MSL seed): one stacked LSTM of equal width
instead of a 128→64 funnel, no dropout, and the latent vector reaches the decoder twice,
as its initial state and as its input at every step, where ``lstm_ae`` only feeds it as
input. It is a different model, so it has its own kind.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stream_detector.models.base import register
from stream_detector.models.reconstruction import ReconstructionDetector

__all__ = ["ChapterLSTMAutoencoder", "ChapterLSTMAutoencoderNetwork"]


class ChapterLSTMAutoencoderNetwork(nn.Module):
    """(B, T, F) -> (B, T, F); the latent vector seeds the decoder's state and input."""

    def __init__(self, n_features: int, hidden: int, num_layers: int, latent: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.encoder_lstm = nn.LSTM(n_features, hidden, num_layers=num_layers, batch_first=True)
        self.to_latent = nn.Linear(hidden, latent)
        self.latent_to_state = nn.Linear(latent, hidden)
        self.decoder_lstm = nn.LSTM(latent, hidden, num_layers=num_layers, batch_first=True)
        self.to_features = nn.Linear(hidden, n_features)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, latent) from the last layer's final hidden state."""
        _, (hidden, _) = self.encoder_lstm(x)
        return self.to_latent(hidden[-1])

    def decode(self, latent: torch.Tensor, steps: int) -> torch.Tensor:
        """(B, latent) -> (B, steps, F)."""
        initial_hidden = self.latent_to_state(latent).unsqueeze(0)
        initial_hidden = initial_hidden.expand(self.num_layers, -1, -1).contiguous()
        initial_cell = torch.zeros_like(initial_hidden)
        repeated = latent.unsqueeze(1).expand(-1, steps, -1)
        sequence, _ = self.decoder_lstm(repeated, (initial_hidden, initial_cell))
        return self.to_features(sequence)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x.shape[1])


@register
class ChapterLSTMAutoencoder(ReconstructionDetector):
    """The chapter §4.4 LSTM autoencoder, scored by reconstruction error."""

    kind = "lstm_ae_chapter"

    def __init__(
        self,
        window: int,
        n_features: int,
        *,
        hidden: int = 64,
        num_layers: int = 2,
        latent: int = 32,
        score_features: list[int] | None = None,
        score_last: int | None = None,
    ) -> None:
        if min(hidden, num_layers, latent) < 1:
            raise ValueError("hidden, num_layers and latent must be at least 1")
        self.hidden = hidden
        self.num_layers = num_layers
        self.latent = latent
        super().__init__(window, n_features, score_features=score_features, score_last=score_last)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "num_layers": self.num_layers,
            "latent": self.latent,
            **self.scoring_hyperparameters,
        }

    def build_network(self) -> nn.Module:
        return ChapterLSTMAutoencoderNetwork(
            self.n_features, self.hidden, self.num_layers, self.latent
        )
