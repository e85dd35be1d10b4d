"""Silences: a channel or glob muted until a time, stored in Redis so every sink sees them.

One Redis hash holds all silences (field = silence id, value = JSON). Sinks read it once
per batch; expired entries are dropped on read. A silenced alert is counted and logged by
the runner, not sent, and its offset moves on (silences hide, they do not postpone).
"""

from __future__ import annotations

import fnmatch
import time
import uuid

import redis
from pydantic import BaseModel, ConfigDict, Field


class Silence(BaseModel):
    """Alerts of channels matching `pattern` (fnmatch glob) are not sent before `until`."""

    model_config = ConfigDict(frozen=True)

    id: str
    pattern: str = Field(min_length=1)
    until: float = Field(description="epoch seconds")
    created_at: float
    comment: str = ""

    def matches(self, channel: str, now: float) -> bool:
        return now < self.until and fnmatch.fnmatchcase(channel, self.pattern)


class SilenceBook:
    """The silences in Redis."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self.key = f"{prefix}:sink:silences"

    def add(self, pattern: str, until: float, comment: str = "") -> Silence:
        silence = Silence(
            id=uuid.uuid4().hex[:12],
            pattern=pattern,
            until=until,
            created_at=time.time(),
            comment=comment,
        )
        self._client.hset(self.key, silence.id, silence.model_dump_json())
        return silence

    def remove(self, silence_id: str) -> bool:
        return bool(self._client.hdel(self.key, silence_id))

    def all(self) -> list[Silence]:
        raw: dict[bytes, bytes] = self._client.hgetall(self.key)  # type: ignore[assignment]
        found = [Silence.model_validate_json(v) for v in raw.values()]
        return sorted(found, key=lambda s: (s.until, s.id))

    def active(self, now: float | None = None) -> list[Silence]:
        """Silences still in force; expired ones are deleted on the way."""
        now = time.time() if now is None else now
        current: list[Silence] = []
        expired: list[Silence] = []
        for silence in self.all():
            (current if silence.until > now else expired).append(silence)
        if expired:
            self._client.hdel(self.key, *(s.id for s in expired))
        return current


def silence_for(channel: str, silences: list[Silence], now: float) -> Silence | None:
    """The first silence that covers `channel` now, if any."""
    return next((s for s in silences if s.matches(channel, now)), None)
