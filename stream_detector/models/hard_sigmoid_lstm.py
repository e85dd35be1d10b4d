"""An LSTM layer with Keras 2.1's hard-sigmoid gates, which torch's fused LSTM cannot run.

telemanom trained on Keras 2.1.5, whose ``LSTM`` opened its input, forget and output gates
with ``hard_sigmoid`` (clip(0.2·x + 0.5, 0, 1)) instead of the logistic sigmoid. torch's
``nn.LSTM`` has the sigmoid only, so this layer steps through time in Python. Autograd over
that loop records a dozen small operations a step; the hand-written backward pass here does
the step-dependent work only and the rest for all steps at once, about twice as fast.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["HardSigmoidLSTM", "hard_sigmoid"]


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Keras 2.1's piecewise-linear sigmoid: 0 below −2.5, 1 above 2.5, a line between."""
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


class _HardSigmoidRecurrence(torch.autograd.Function):
    """Hidden states (T, B, H) from the input's gate shares (T, B, 4H) and W_hh (4H, H)."""

    @staticmethod
    def forward(ctx: Any, inputs: torch.Tensor, weight_hh: torch.Tensor) -> torch.Tensor:
        steps, batch, four_h = inputs.shape
        units = four_h // 4
        candidate = slice(2 * units, 3 * units)
        pre = torch.empty_like(inputs)  # every gate's input, for the backward pass
        gates = torch.empty_like(inputs)  # i, f, g, o after their activations
        cells = inputs.new_zeros(steps + 1, batch, units)
        hidden = inputs.new_zeros(steps + 1, batch, units)
        recurrent = weight_hh.t()
        for step in range(steps):
            a = torch.addmm(inputs[step], hidden[step], recurrent, out=pre[step])
            act = gates[step]
            torch.clamp(a * 0.2 + 0.5, 0.0, 1.0, out=act)
            torch.tanh(a[:, candidate], out=act[:, candidate])
            i, f, g, o = act.chunk(4, dim=1)
            torch.addcmul(f * cells[step], i, g, out=cells[step + 1])
            torch.mul(o, torch.tanh(cells[step + 1]), out=hidden[step + 1])
        ctx.save_for_backward(weight_hh, pre, gates, cells, hidden)
        return hidden[1:].clone()

    @staticmethod
    def backward(ctx: Any, d_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight_hh, pre, gates, cells, hidden = ctx.saved_tensors
        steps, batch, four_h = pre.shape
        units = four_h // 4
        i, f, g, o = gates.chunk(4, dim=2)
        tanh_c = torch.tanh(cells[1:])
        # Everything that does not wait for the next step's gradient, for all steps at once:
        # each gate's gradient is (dc or dh) × factor, the factor being the gate's partner
        # times its activation's slope.
        lin = pre * 0.2 + 0.5
        slope = ((lin > 0) & (lin < 1)).to(pre.dtype) * 0.2
        factor = torch.cat(
            (
                g * slope[..., :units],
                cells[:-1] * slope[..., units : 2 * units],
                i * (1 - g * g),
                tanh_c * slope[..., 3 * units :],
            ),
            dim=2,
        )
        dc_from_dh = o * (1 - tanh_c * tanh_c)
        d_pre = torch.empty_like(pre)
        dh_next = d_hidden.new_zeros(batch, units)
        dc_next = d_hidden.new_zeros(batch, units)
        for step in reversed(range(steps)):
            dh = d_hidden[step] + dh_next
            dc = torch.addcmul(dc_next, dh, dc_from_dh[step])
            da = d_pre[step]
            torch.mul(dc.repeat(1, 3), factor[step, :, : 3 * units], out=da[:, : 3 * units])
            torch.mul(dh, factor[step, :, 3 * units :], out=da[:, 3 * units :])
            dc_next = dc * f[step]
            dh_next = da @ weight_hh
        d_weight = torch.einsum("tbi,tbj->ij", d_pre, hidden[:-1])
        return d_pre, d_weight


class HardSigmoidLSTM(nn.Module):
    """One batch-first LSTM layer whose gates use ``hard_sigmoid``.

    Its parameters carry ``nn.LSTM``'s names, shapes, gate order (i, f, g, o) and uniform
    start, so the Keras initialisation and a state dict treat it as the fused layer.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        bound = 1.0 / hidden_size**0.5
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def forward(self, sequence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The input's share of every gate, for all steps in one product, time-major so each
        # step's slice is contiguous; only the recurrent share waits for the previous step.
        inputs = torch.addmm(
            self.bias_ih_l0 + self.bias_hh_l0,
            sequence.transpose(0, 1).reshape(-1, self.input_size),
            self.weight_ih_l0.t(),
        ).reshape(sequence.shape[1], sequence.shape[0], -1)
        hidden = _HardSigmoidRecurrence.apply(inputs, self.weight_hh_l0)
        return hidden.transpose(0, 1), hidden[-1]
