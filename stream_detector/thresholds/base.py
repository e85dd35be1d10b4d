"""The threshold interface: a pure ``step(state, score) -> (state, decision)`` plus a registry.

Strategies hold no state of their own, so the same code runs with state kept in Redis (the
daemon) or in a dict (evaluation, tests).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

# "pending": in the window, not judged yet (a strategy that decides a batch at a time).
Status = Literal["normal", "anomalous", "not_ready", "pending"]
ThresholdState = dict[str, Any]  # JSON-able


@dataclass(frozen=True, slots=True)
class Decision:
    status: Status
    threshold: float | None  # in score units; None while the strategy cannot say yet

    @property
    def anomalous(self) -> bool:
        return self.status == "anomalous"


# The training-score quantiles every checkpoint's calibration keeps (with "max"), by level:
# what a ScorePrior's `quantiles` holds.
PRIOR_QUANTILES: dict[str, float] = {
    "p50": 0.5,
    "p90": 0.9,
    "p95": 0.95,
    "p99": 0.99,
    "p99.9": 0.999,
}


@dataclass(frozen=True, slots=True)
class ScorePrior:
    """What training says about normal scores, to start a channel's state from."""

    n: int
    mean: float
    std: float
    log_mean: float
    log_std: float
    quantiles: dict[str, float] = field(default_factory=dict)  # "p99": ..., "max": ...
    tail: tuple[float, ...] = ()  # the last training scores, in stream order


class ThresholdStrategy(abc.ABC):
    kind: ClassVar[str]
    # State keys that may change even on an anomalous score (e.g. a smoother's running
    # value); every other key must stay as it was, so an incident cannot move the threshold.
    volatile_keys: ClassVar[frozenset[str]] = frozenset()
    # False for a strategy that learns every score, anomalous or not, by design.
    protected: ClassVar[bool] = True

    @abc.abstractmethod
    def initial_state(self, prior: ScorePrior | None) -> ThresholdState:
        """The state of a channel never seen before."""

    @abc.abstractmethod
    def step(
        self, state: ThresholdState, score: float, value: float | None = None
    ) -> tuple[ThresholdState, Decision]:
        """Judge one score and return the state after learning from it (never mutates input).

        ``value`` is the telemetry value at the window's newest step. Only strategies that
        weigh an error against the signal's own scale (telemanom's) read it; the others
        judge the score alone.
        """

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """The strategy's parameters, stamped on alerts so a reader knows what fired."""


_REGISTRY: dict[str, Callable[..., ThresholdStrategy]] = {}


def register_threshold(kind: str) -> Callable[[type[ThresholdStrategy]], type[ThresholdStrategy]]:
    def decorate(cls: type[ThresholdStrategy]) -> type[ThresholdStrategy]:
        if kind in _REGISTRY:
            raise ValueError(f"threshold {kind!r} registered twice")
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return decorate


def available_thresholds() -> list[str]:
    return sorted(_REGISTRY)


def threshold_factory(kind: str) -> Callable[..., ThresholdStrategy]:
    """The registered class (or factory) of `kind`, for reading its parameters."""
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise KeyError(
            f"unknown threshold {kind!r}; available: {', '.join(available_thresholds())}"
        ) from None


def build_threshold(kind: str, **params: Any) -> ThresholdStrategy:
    return threshold_factory(kind)(**params)
