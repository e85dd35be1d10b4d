"""Generic webhook: the alert record as JSON, optionally signed with HMAC-SHA256.

The signature covers ``<timestamp>.<raw body>`` (the timestamp header's value, a dot, the
bytes as sent), so a receiver can both check the body and refuse old replays:

    expected = hmac.new(secret, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    ok = hmac.compare_digest(f"sha256={expected}", request.headers[SIGNATURE_HEADER])
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Final

from stream_detector.records import AlertRecord
from stream_detector.settings import SinkSettings
from stream_detector.sinks.base import Outgoing, Sink, register_sink, require_secret

SIGNATURE_HEADER: Final = "X-Stream-Detector-Signature"
TIMESTAMP_HEADER: Final = "X-Stream-Detector-Timestamp"
# (alert_id:revision) names one event; receivers can dedupe on it themselves.
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


@register_sink("webhook")
class WebhookSink(Sink):
    """POSTs each alert record, byte for byte as on the alerts topic."""

    kind = "webhook"

    def __init__(self, settings: SinkSettings) -> None:
        self._url = require_secret(settings.webhook.url, "SD_SINKS__WEBHOOK__URL")
        secret = settings.webhook.hmac_secret
        self._hmac_secret = secret.get_secret_value() if secret is not None else None
        self.rate_per_s = settings.webhook.rate_per_s

    def endpoint(self) -> str:
        return self._url

    def secrets(self) -> list[str]:
        return [s for s in (self._url, self._hmac_secret) if s]

    def render(self, alerts: Sequence[AlertRecord]) -> list[Outgoing]:
        return [Outgoing(body=a.to_bytes(), alerts=(a,)) for a in alerts]

    def attempt_headers(self, out: Outgoing, now: float) -> dict[str, str]:
        alert = out.alerts[0]
        headers = {IDEMPOTENCY_HEADER: f"{alert.alert_id}:{alert.revision}"}
        if self._hmac_secret:
            ts = str(int(now))
            headers[TIMESTAMP_HEADER] = ts
            headers[SIGNATURE_HEADER] = signature(self._hmac_secret, ts, out.body)
        return headers
