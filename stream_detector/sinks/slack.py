"""Slack incoming webhook: Block Kit messages, one section per incident, grouped under the limits.

Slack takes about one message per second per webhook, so alerts that arrive together are
posted together: one message holds at most 49 incidents (a header plus 49 sections is
Slack's 50-block ceiling) and stays under the undocumented ~13k-character
`msg_blocks_too_long` limit; a larger group becomes several messages. Every message
carries `text`, which Slack shows in notifications and to clients that cannot render
blocks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from stream_detector.records import AlertRecord
from stream_detector.settings import SeverityLevels, SinkSettings
from stream_detector.sinks.base import (
    Outgoing,
    Severity,
    Sink,
    register_sink,
    require_secret,
    severity_of,
    severity_rose,
)

MAX_BLOCKS: Final = 50
MAX_SECTION_TEXT: Final = 3000
MAX_HEADER_TEXT: Final = 150
# Slack answers `msg_blocks_too_long` at about 13k characters of blocks; keep a margin.
MAX_MESSAGE_CHARS: Final = 12_000
MAX_FALLBACK_CHARS: Final = 1000

_STATE_LABEL = {"open": "OPEN", "update": "WORSE", "resolve": "RESOLVED"}
_STATE_ICON = {"open": ":rotating_light:", "update": ":arrow_up:", "resolve": ":white_check_mark:"}


@register_sink("slack")
class SlackSink(Sink):
    """Posts Block Kit messages to one Slack incoming webhook."""

    kind = "slack"

    def __init__(self, settings: SinkSettings) -> None:
        self._url = require_secret(settings.slack.webhook_url, "SD_SINKS__SLACK__WEBHOOK_URL")
        self._levels = settings.severity
        self.group_window_s = settings.slack.group_window_s
        self.rate_per_s = settings.slack.rate_per_s

    def endpoint(self) -> str:
        return self._url

    def secrets(self) -> list[str]:
        return [self._url]

    def wants(self, alert: AlertRecord, last_sent: Severity | None) -> bool:
        return severity_rose(alert, last_sent, self._levels)

    def render(self, alerts: Sequence[AlertRecord]) -> list[Outgoing]:
        groups: list[list[AlertRecord]] = []
        current: list[AlertRecord] = []
        for alert in alerts:
            candidate = [*current, alert]
            if current and (
                len(candidate) + 1 > MAX_BLOCKS
                or message_chars(self.message(candidate)) > MAX_MESSAGE_CHARS
            ):
                groups.append(current)
                candidate = [alert]
            current = candidate
        if current:
            groups.append(current)
        return [
            Outgoing(body=json.dumps(self.message(g)).encode(), alerts=tuple(g)) for g in groups
        ]

    def message(self, alerts: Sequence[AlertRecord]) -> dict[str, Any]:
        """The webhook payload for one group: a header, a section per incident, `text`."""
        blocks: list[dict[str, Any]] = [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _clip(_headline(alerts), MAX_HEADER_TEXT)},
            }
        ]
        blocks.extend(self._section(a) for a in alerts)
        return {"text": _fallback(alerts, self._levels), "blocks": blocks}

    def _section(self, alert: AlertRecord) -> dict[str, Any]:
        # One mrkdwn text rather than `fields`: about half the characters, so a message
        # holds ~45 incidents before the size limit and a burst needs fewer messages.
        severity = severity_of(alert, self._levels).label
        title = (
            f"{_STATE_ICON[alert.state]} *{_STATE_LABEL[alert.state]}* `{_escape(alert.channel)}`"
        )
        if alert.state == "resolve":
            score = f"peak score {alert.peak_score:.4g} vs threshold {_threshold(alert)}"
        else:
            title += f" - severity *{severity}*"
            score = (
                f"score {alert.score:.4g} vs threshold {_threshold(alert)}, "
                f"peak {alert.peak_score:.4g}"
            )
        facts = (
            f"started {_iso(alert.first_ts)} - lasted {_duration(alert.last_ts - alert.first_ts)}"
            f" - model {_escape(alert.model.name)}@{_escape(alert.model.version)}"
        )
        return {
            "type": "section",
            # (alert_id, revision) names the event; receivers and our tests can find it here.
            "block_id": f"{alert.alert_id}:{alert.revision}"[:255],
            "text": {
                "type": "mrkdwn",
                "text": _clip(f"{title}\n{score}\n{facts}", MAX_SECTION_TEXT),
            },
        }


def message_chars(message: dict[str, Any]) -> int:
    """Characters of a message's blocks, the size Slack's `msg_blocks_too_long` is about."""
    return len(json.dumps(message["blocks"], ensure_ascii=False))


def _headline(alerts: Sequence[AlertRecord]) -> str:
    counts = {s: sum(a.state == s for a in alerts) for s in ("open", "update", "resolve")}
    parts = [
        f"{counts['open']} opened" if counts["open"] else "",
        f"{counts['update']} worse" if counts["update"] else "",
        f"{counts['resolve']} resolved" if counts["resolve"] else "",
    ]
    return "stream-detector: " + ", ".join(p for p in parts if p)


def _fallback(alerts: Sequence[AlertRecord], levels: SeverityLevels) -> str:
    items = []
    for a in alerts:
        suffix = "" if a.state == "resolve" else f" ({severity_of(a, levels).label})"
        items.append(f"{_STATE_LABEL[a.state].lower()} {a.channel}{suffix}")
    text = f"{_headline(alerts)}: "
    for i, item in enumerate(items):
        more = f" ... and {len(items) - i} more"
        if len(text) + len(item) + 2 + len(more) > MAX_FALLBACK_CHARS:
            return text.rstrip(", ") + more
        text += item + ", "
    return text.rstrip(", ")


def _threshold(alert: AlertRecord) -> str:
    if alert.threshold is None:
        return "n/a"
    if alert.threshold > 0:
        return f"{alert.threshold:.4g} ({alert.peak_score / alert.threshold:.1f}x at peak)"
    return f"{alert.threshold:.4g}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h {m}m {s}s"
    return f"{m}m {s}s" if m else f"{s}s"


def _escape(text: str) -> str:
    # Slack mrkdwn treats &, < and > as control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
