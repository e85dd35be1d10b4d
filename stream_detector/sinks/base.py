"""What a sink is: it turns alert events into HTTP requests for one receiver; registered by name.

A sink only renders. Retries, rate limits, dedupe, silences and offsets are the runner's and
the delivery module's job, so a new receiver is one module with a `render` method.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from stream_detector.errors import ConfigError
from stream_detector.records import AlertRecord
from stream_detector.settings import SeverityLevels, SinkSettings


@dataclass(frozen=True)
class Outgoing:
    """One HTTP POST to a receiver and the alert events it carries (one, or a Slack group)."""

    body: bytes
    alerts: tuple[AlertRecord, ...]
    content_type: str = "application/json"


class Severity(enum.IntEnum):
    """PagerDuty's four levels, ordered so that "severity rose" is a comparison."""

    INFO = 0
    WARNING = 1
    ERROR = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()


def severity_of(alert: AlertRecord, levels: SeverityLevels) -> Severity:
    """Severity from how far the episode's peak score went past its threshold."""
    if alert.threshold is None or alert.threshold <= 0:
        return Severity[levels.no_threshold.upper()]
    ratio = alert.peak_score / alert.threshold
    if ratio >= levels.critical_ratio:
        return Severity.CRITICAL
    if ratio >= levels.error_ratio:
        return Severity.ERROR
    return Severity.WARNING


class Sink(abc.ABC):
    """Renders alert events as requests to one receiver."""

    kind: ClassVar[str]
    #: Alerts arriving within this many seconds are handed to `render` together.
    group_window_s: float = 0.0
    #: Requests per second this receiver tolerates.
    rate_per_s: float = 1.0

    @abc.abstractmethod
    def endpoint(self) -> str:
        """The URL to POST to. May itself be a credential (Slack): never log it."""

    @abc.abstractmethod
    def render(self, alerts: Sequence[AlertRecord]) -> list[Outgoing]:
        """Requests carrying `alerts`, in order; every alert lands in exactly one request."""

    def wants(self, alert: AlertRecord, last_sent: Severity | None) -> bool:
        """Whether this event is worth sending, given the highest severity already sent for
        its episode (None: nothing sent yet). Every event by default."""
        return True

    def attempt_headers(self, out: Outgoing, now: float) -> dict[str, str]:
        """Extra headers computed per attempt (signatures carry the attempt's time)."""
        return {}

    def secrets(self) -> list[str]:
        """Secret strings to scrub from anything that reaches a log or a topic."""
        return []


SinkFactory = Callable[[SinkSettings], Sink]
_REGISTRY: dict[str, SinkFactory] = {}
_F = TypeVar("_F", bound=SinkFactory)


def register_sink(kind: str) -> Callable[[_F], _F]:
    """Class or function decorator: make a sink buildable by name."""

    def add(factory: _F) -> _F:
        if kind in _REGISTRY:
            raise ValueError(f"sink {kind!r} registered twice")
        _REGISTRY[kind] = factory
        return factory

    return add


def severity_rose(alert: AlertRecord, last_sent: Severity | None, levels: SeverityLevels) -> bool:
    """Opens and resolves always; an update only when it is more severe than what was sent."""
    if alert.state != "update" or last_sent is None:
        return True
    return severity_of(alert, levels) > last_sent


def sink_kinds() -> list[str]:
    _load_builtin_sinks()
    return sorted(_REGISTRY)


def build_sink(kind: str, settings: SinkSettings) -> Sink:
    """The sink named `kind`, configured from the `sinks` settings section."""
    _load_builtin_sinks()
    try:
        factory = _REGISTRY[kind]
    except KeyError:
        raise ConfigError("sink", f"unknown sink {kind!r}; known: {sorted(_REGISTRY)}") from None
    return factory(settings)


def require_secret(value: object, setting: str) -> str:
    """The secret's value, or a ConfigError naming the setting that is missing."""
    from pydantic import SecretStr

    if not isinstance(value, SecretStr) or not value.get_secret_value():
        raise ConfigError(setting, "not set")
    return value.get_secret_value()


def _load_builtin_sinks() -> None:
    # Importing a sink module registers it; done lazily so base.py has no import cycle.
    from stream_detector.sinks import pagerduty, slack, webhook  # noqa: F401
