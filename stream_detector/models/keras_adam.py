"""Adam as Keras 2.1 computed it, for recipes that follow telemanom's training.

torch's Adam divides the bias-corrected first moment by ``√v̂ + ε`` with ε = 1e-8. Keras 2.1
folds both bias corrections into the step size and adds its ε = 1e-7 (``K.epsilon()``) to
the *uncorrected* ``√v``::

    lr_t = lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ)
    p   ← p − lr_t · m / (√v + ε)

which is torch's rule with an ε of ``1e-7 / √(1 − β₂ᵗ)``: about 3e-6 at the first step, and
still above 2e-7 after 200. Where the gradients are small, as they are for a predictor of
telemetry scaled to [−1, 1] late in its training, that damps the steps more than torch's
default does. Everything else (moments, β's, the learning rate a scheduler may change) is
Adam's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

# Keras' K.epsilon(), the Adam ε of its 2.1 releases when none was given.
KERAS_EPSILON = 1e-7


class KerasAdam(torch.optim.Optimizer):
    """Keras 2.1's ``Adam`` (without ``decay`` or ``amsgrad``, which telemanom left off)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = KERAS_EPSILON,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if not eps >= 0:
            raise ValueError(f"eps must be at least 0, got {eps}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                state = self.state[parameter]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(parameter)
                    state["v"] = torch.zeros_like(parameter)
                state["step"] += 1
                t = state["step"]
                m, v, grad = state["m"], state["v"], parameter.grad
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                lr_t = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                parameter.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-lr_t)
        return loss
