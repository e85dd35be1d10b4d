"""PagerDuty Events API v2: `trigger` with dedup_key = alert_id, `resolve` with the same key.

The dedup_key makes PagerDuty itself idempotent: a trigger sent twice for an open alert
lands on the same alert, so a duplicate that slips past our Redis dedupe (a crash between
the 202 and marking it delivered) pages nobody twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from stream_detector.records import AlertRecord
from stream_detector.settings import SinkSettings
from stream_detector.sinks.base import (
    Outgoing,
    Severity,
    Sink,
    register_sink,
    require_secret,
    severity_of,
    severity_rose,
)

MAX_SUMMARY: Final = 1024
MAX_DEDUP_KEY: Final = 255


@register_sink("pagerduty")
class PagerDutySink(Sink):
    """One Events API v2 event per alert event."""

    kind = "pagerduty"

    def __init__(self, settings: SinkSettings) -> None:
        self._routing_key = require_secret(
            settings.pagerduty.routing_key, "SD_SINKS__PAGERDUTY__ROUTING_KEY"
        )
        self._url = settings.pagerduty.events_url
        self._levels = settings.severity
        self.rate_per_s = settings.pagerduty.rate_per_s

    def endpoint(self) -> str:
        return self._url

    def secrets(self) -> list[str]:
        return [self._routing_key]

    def wants(self, alert: AlertRecord, last_sent: Severity | None) -> bool:
        # A repeated trigger only refreshes the open alert's details; send one when it matters.
        return severity_rose(alert, last_sent, self._levels)

    def render(self, alerts: Sequence[AlertRecord]) -> list[Outgoing]:
        return [Outgoing(body=json.dumps(self.event(a)).encode(), alerts=(a,)) for a in alerts]

    def event(self, alert: AlertRecord) -> dict[str, Any]:
        """The Events API v2 body for one alert event."""
        dedup_key = alert.alert_id[:MAX_DEDUP_KEY]
        if alert.state == "resolve":
            return {
                "routing_key": self._routing_key,
                "event_action": "resolve",
                "dedup_key": dedup_key,
            }
        severity = severity_of(alert, self._levels)
        threshold = "n/a" if alert.threshold is None else f"{alert.threshold:.4g}"
        summary = (
            f"Telemetry anomaly on {alert.channel}: score {alert.score:.4g} "
            f"(peak {alert.peak_score:.4g}) over threshold {threshold}"
            f" [{alert.model.name}@{alert.model.version}]"
        )
        return {
            "routing_key": self._routing_key,
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "payload": {
                "summary": summary[:MAX_SUMMARY],
                "source": alert.channel,
                "severity": severity.label,
                "timestamp": _iso(alert.detected_at),
                "component": alert.channel,
                "class": "telemetry_anomaly",
                "custom_details": {
                    "alert_id": alert.alert_id,
                    "revision": alert.revision,
                    "state": alert.state,
                    "score": alert.score,
                    "peak_score": alert.peak_score,
                    "threshold": alert.threshold,
                    "threshold_kind": alert.threshold_kind,
                    "first_seq": alert.first_seq,
                    "last_seq": alert.last_seq,
                    "started_at": _iso(alert.first_ts),
                    "duration_s": round(alert.last_ts - alert.first_ts, 3),
                    "model": f"{alert.model.name}@{alert.model.version}",
                },
            },
            "client": "stream-detector",
        }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
