"""Alert sinks: deliver alert events from the alerts topic to Slack, PagerDuty or a webhook.

See docs/sinks.md. `base` holds the interface and the registry; one module per receiver;
`delivery` retries and dedupes; `runner` is the consumer loop; `silences` mutes channels.
"""

from stream_detector.sinks.base import (
    Outgoing,
    Severity,
    Sink,
    build_sink,
    register_sink,
    sink_kinds,
)

__all__ = ["Outgoing", "Severity", "Sink", "build_sink", "register_sink", "sink_kinds"]
