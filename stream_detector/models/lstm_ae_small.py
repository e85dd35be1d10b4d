"""The small LSTM autoencoder of the lstm-autoencoder-small seed (``kind = "lstm_ae_small"``).

Keras layout, rebuilt: LSTM 16 (relu, sequence, L2 on its input kernel) → LSTM 4 (relu,
last state) → RepeatVector(T) → LSTM 4 (relu, sequence) → LSTM 16 (relu, sequence) →
TimeDistributed Dense(F). Score: mean squared reconstruction error over the window.

Keras' ``LSTM(activation="relu")`` swaps tanh for ReLU in two places: the candidate cell
value ``g = relu(W_g x + U_g h + b_g)`` and the output ``h = o * relu(c)``; the gates keep
their sigmoid. ``torch.nn.LSTM`` has tanh hard-wired, so ``ReluLSTM`` below is a plain
step-by-step LSTM layer with those two activations, initialised as Keras does (Glorot-uniform
input kernel, orthogonal recurrent kernel, zero bias except a forget-gate bias of 1).

L2: Keras' ``kernel_regularizer=l2(λ)`` adds ``λ · Σ W²`` over the first layer's *input*
kernel (not its recurrent kernel) to the training loss; we add exactly that term to the
training batches' loss. The validation loss, which picks the best epoch, is the plain
reconstruction MSE, so it equals the mean score. The seed names the regulariser but no
strength. ``l2`` defaults to 0.01, the strength of a bare Keras ``regularizers.l2()``;
the widely copied public Keras code of this model passes ``l2(0.00)`` (no regularisation),
which ``l2=0`` reproduces. On our sine tests 0.01 trained to half the error of 0.0 and kept
a spike's error on its own feature, where 0.0 smeared it over all features.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from stream_detector.models.base import register
from stream_detector.models.reconstruction import ReconstructionDetector

__all__ = ["ReluLSTM", "SmallLSTMAutoencoder", "SmallLSTMAutoencoderNetwork"]


class ReluLSTM(nn.Module):
    """One LSTM layer with ReLU candidate and output activations: (B, T, I) -> (B, T, H)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        # Gate order along the last axis: input, forget, candidate, output (as Keras).
        self.input_kernel = nn.Parameter(torch.empty(input_size, 4 * hidden_size))
        self.recurrent_kernel = nn.Parameter(torch.empty(hidden_size, 4 * hidden_size))
        self.bias = nn.Parameter(torch.zeros(4 * hidden_size))
        nn.init.xavier_uniform_(self.input_kernel)
        nn.init.orthogonal_(self.recurrent_kernel)
        with torch.no_grad():
            # Keras' unit_forget_bias: start by remembering.
            self.bias[hidden_size : 2 * hidden_size] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = x.shape
        # The input's share of every gate for all steps in one matmul; only the
        # recurrent part has to run step by step.
        projected = x @ self.input_kernel + self.bias
        hidden = x.new_zeros(batch, self.hidden_size)
        cell = x.new_zeros(batch, self.hidden_size)
        outputs = []
        for step in range(steps):
            gates = projected[:, step] + hidden @ self.recurrent_kernel
            input_gate, forget_gate, candidate, output_gate = gates.chunk(4, dim=1)
            cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(input_gate) * torch.relu(
                candidate
            )
            hidden = torch.sigmoid(output_gate) * torch.relu(cell)
            outputs.append(hidden)
        return torch.stack(outputs, dim=1)


class SmallLSTMAutoencoderNetwork(nn.Module):
    """(B, T, F) -> (B, T, F) through a ``latent``-wide (default 4) bottleneck."""

    def __init__(self, n_features: int, outer: int, latent: int) -> None:
        super().__init__()
        self.encoder_outer = ReluLSTM(n_features, outer)
        self.encoder_inner = ReluLSTM(outer, latent)
        self.decoder_inner = ReluLSTM(latent, latent)
        self.decoder_outer = ReluLSTM(latent, outer)
        self.to_features = nn.Linear(outer, n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # return_sequences=False: the encoder keeps only its last step.
        code = self.encoder_inner(self.encoder_outer(x))[:, -1]
        repeated = code.unsqueeze(1).expand(-1, x.shape[1], -1)
        return self.to_features(self.decoder_outer(self.decoder_inner(repeated)))

    def kernel_penalty(self) -> torch.Tensor:
        """Σ W² over the first layer's input kernel: what Keras' l2 kernel_regularizer sums."""
        return torch.sum(self.encoder_outer.input_kernel**2)


@register
class SmallLSTMAutoencoder(ReconstructionDetector):
    """The small ReLU LSTM autoencoder (16-4-4-16), scored by reconstruction error."""

    kind = "lstm_ae_small"

    def __init__(
        self,
        window: int,
        n_features: int,
        *,
        outer: int = 16,
        latent: int = 4,
        l2: float = 0.01,
        score_features: list[int] | None = None,
        score_last: int | None = None,
    ) -> None:
        if min(outer, latent) < 1:
            raise ValueError("outer and latent must be at least 1")
        if not (math.isfinite(l2) and l2 >= 0):
            raise ValueError(f"l2 must be a finite number >= 0, got {l2}")
        self.outer = outer
        self.latent = latent
        self.l2 = float(l2)
        super().__init__(window, n_features, score_features=score_features, score_last=score_last)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {
            "outer": self.outer,
            "latent": self.latent,
            "l2": self.l2,
            **self.scoring_hyperparameters,
        }

    def build_network(self) -> nn.Module:
        return SmallLSTMAutoencoderNetwork(self.n_features, self.outer, self.latent)

    def _batch_loss(self, network: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """Reconstruction MSE, plus the L2 kernel term on training batches only."""
        loss = torch.mean((network(batch) - batch) ** 2)
        if network.training and self.l2 > 0:
            assert isinstance(network, SmallLSTMAutoencoderNetwork)
            loss = loss + self.l2 * network.kernel_penalty()
        return loss
