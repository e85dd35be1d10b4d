"""Getting one request accepted: retries with backoff and jitter, Retry-After, rate limits, the
sink dead-letter record, and the Redis ledger that suppresses duplicate deliveries.

Outcomes of one attempt:

- 2xx: accepted. Only now is the event marked delivered and its offset allowed to move.
- 5xx, 408, 429, timeouts, connection errors: retried, forever by default
  (``delivery.max_attempts = 0``): a receiver outage must delay alerts, not drop them.
  The pause is the receiver's ``Retry-After`` when it sends one, else exponential backoff
  with jitter, so replicas that failed together do not retry together.
- any other 4xx (and 3xx: a webhook URL that redirects is misconfigured): rejected, never
  retried (PagerDuty: "400 invalid event, do not retry"); the alert goes to the sink
  dead-letter topic with the response, and the offset moves on.
"""

from __future__ import annotations

import enum
import http.client
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Final, Literal

import redis
import structlog
from pydantic import BaseModel, ConfigDict

from stream_detector import __version__
from stream_detector.records import AlertRecord
from stream_detector.settings import DeliverySettings
from stream_detector.sinks.base import Outgoing, Severity, Sink

log = structlog.get_logger(__name__)

EXCERPT_CHARS: Final = 500
MASK: Final = "**********"


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    RETRY = "retry"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Response:
    """What one attempt got back: a status, or the transport error that stood in for one."""

    status: int | None
    excerpt: str = ""
    retry_after_s: float | None = None
    error: str | None = None

    @property
    def verdict(self) -> Verdict:
        if self.status is None:
            return Verdict.RETRY
        if 200 <= self.status < 300:
            return Verdict.ACCEPTED
        if self.status in (408, 429) or self.status >= 500:
            return Verdict.RETRY
        return Verdict.REJECTED


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def scrub(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret replaced by a mask (receivers sometimes echo what they got)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # Following a redirect would turn the POST into a GET and lose the alert; a 3xx is
    # answered as what it is, a misconfigured URL.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class HttpTransport:
    """POSTs bytes with the stdlib; turns every outcome into a `Response`, never raises."""

    def __init__(self, timeout_s: float, secrets: Sequence[str] = ()) -> None:
        self.timeout_s = timeout_s
        self._secrets = list(secrets)
        self._opener = urllib.request.build_opener(_NoRedirect)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as reply:
                return self._response(reply.status, reply.headers, reply.read(EXCERPT_CHARS))
        except urllib.error.HTTPError as exc:
            with exc:
                return self._response(exc.code, exc.headers, exc.read(EXCERPT_CHARS))
        except urllib.error.URLError as exc:
            return Response(None, error=self._error_name(exc.reason))
        except (OSError, http.client.HTTPException) as exc:
            return Response(None, error=self._error_name(exc))

    def _response(self, status: int, headers: Message, raw: bytes) -> Response:
        excerpt = scrub(raw.decode("utf-8", "replace"), self._secrets)
        retry_after = parse_retry_after(headers.get("Retry-After"), time.time())
        return Response(status, excerpt=excerpt, retry_after_s=retry_after)

    def _error_name(self, reason: object) -> str:
        # The class and message only: urllib's exceptions carry the URL elsewhere, and the
        # URL can be the credential (Slack).
        if isinstance(reason, TimeoutError):
            return "timeout"
        if isinstance(reason, ConnectionRefusedError):
            return "connection_refused"
        return scrub(f"{type(reason).__name__}: {reason}", self._secrets)[:200]


class Backoff:
    """Exponential backoff with "equal jitter": half the ceiling fixed, half random."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng or random.Random()

    def delay(self, retry: int) -> float:
        """Pause before retry number `retry` (1 = the first retry)."""
        ceiling = min(self.max_s, self.initial_s * 2 ** min(retry - 1, 60))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)


class RateLimiter:
    """Keeps requests at least 1/rate apart; a receiver's Retry-After pushes the next slot.

    The interval counts from the end of the previous request, so the receiver sees its
    arrivals at least 1/rate apart however long each request took.
    """

    def __init__(self, rate_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / rate_per_s
        self._clock = clock
        self._next = 0.0

    def delay(self) -> float:
        return max(0.0, self._next - self._clock())

    def taken(self) -> None:
        self._next = max(self._next, self._clock()) + self._interval

    def hold(self, seconds: float) -> None:
        self._next = max(self._next, self._clock() + seconds)


class Interrupted(Exception):
    """Asked to stop while waiting to retry; the request's alerts stay uncommitted."""


@dataclass(frozen=True)
class DeliveryResult:
    verdict: Literal[Verdict.ACCEPTED, Verdict.REJECTED]
    reason: Literal["accepted", "rejected_by_receiver", "retries_exhausted"]
    response: Response
    attempts: int


@dataclass
class Deliverer:
    """Sends one `Outgoing` until the receiver accepts or rejects it (or attempts run out).

    ``wait(seconds)`` pauses and returns False if the sink is stopping; the runner's version
    keeps the consumer group membership alive meanwhile.
    """

    sink: Sink
    transport: HttpTransport
    settings: DeliverySettings
    wait: Callable[[float], bool]
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.sink.rate_per_s)
        self.backoff = Backoff(
            self.settings.backoff_initial_s, self.settings.backoff_max_s, self.rng
        )

    def deliver(self, out: Outgoing) -> DeliveryResult:
        attempt = 0
        while True:
            if not self.wait(self.limiter.delay()):
                raise Interrupted
            attempt += 1
            headers = {
                "Content-Type": out.content_type,
                "User-Agent": f"stream-detector/{__version__}",
                **self.sink.attempt_headers(out, time.time()),
            }
            response = self.transport.post(self.sink.endpoint(), out.body, headers)
            self.limiter.taken()
            verdict = response.verdict
            if verdict is Verdict.ACCEPTED:
                return DeliveryResult(verdict, "accepted", response, attempt)
            if verdict is Verdict.REJECTED:
                return DeliveryResult(verdict, "rejected_by_receiver", response, attempt)
            if self.settings.max_attempts and attempt >= self.settings.max_attempts:
                return DeliveryResult(Verdict.REJECTED, "retries_exhausted", response, attempt)
            if response.retry_after_s is not None:
                pause = min(response.retry_after_s, self.settings.retry_after_max_s)
                # Every later request to this receiver waits too, not just this one.
                self.limiter.hold(pause)
            else:
                pause = self.backoff.delay(attempt)
            log.warning(
                "delivery_retry",
                sink=self.sink.kind,
                status=response.status,
                error=response.error,
                attempt=attempt,
                retry_in_s=round(pause, 3),
                retry_after_s=response.retry_after_s,
                alerts=len(out.alerts),
                alert_id=out.alerts[0].alert_id if out.alerts else None,
            )
            if not self.wait(pause):
                raise Interrupted


class SinkDeadLetterRecord(BaseModel):
    """An alert the receiver refused (or that could not be read), with the receiver's answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    sink: str
    group: str
    reason: str
    status: int | None = None
    response_excerpt: str = ""
    attempts: int = 0
    alert: AlertRecord | None = None
    value_b64: str | None = None
    topic: str
    partition: int
    offset: int
    failed_at: float

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class DeliveryLedger:
    """Which alert events a sink group delivered, in Redis with a TTL, plus the highest
    severity it sent per episode.

    An event is marked only after the receiver's 2xx (SET NX EX on (alert_id, revision)).
    Redis trouble fails open: the event is sent anyway (a duplicate beats a lost alert).
    """

    def __init__(self, client: redis.Redis, prefix: str, group: str, ttl_s: int) -> None:
        self._client = client
        self._ns = f"{prefix}:sink:{group}"
        self._ttl_s = ttl_s

    def sent_key(self, alert: AlertRecord) -> str:
        return f"{self._ns}:sent:{alert.alert_id}:{alert.revision}"

    def level_key(self, alert_id: str) -> str:
        return f"{self._ns}:level:{alert_id}"

    def already_sent(self, alerts: Sequence[AlertRecord]) -> list[bool]:
        if not alerts:
            return []
        try:
            pipe = self._client.pipeline(transaction=False)
            for alert in alerts:
                pipe.exists(self.sent_key(alert))
            return [bool(n) for n in pipe.execute()]
        except redis.RedisError as exc:
            log.warning("dedupe_check_failed", error=type(exc).__name__)
            return [False] * len(alerts)

    def sent_severities(self, alert_ids: Sequence[str]) -> dict[str, Severity]:
        ids = sorted(set(alert_ids))
        if not ids:
            return {}
        try:
            values = self._client.mget([self.level_key(i) for i in ids])
        except redis.RedisError as exc:
            log.warning("severity_lookup_failed", error=type(exc).__name__)
            return {}
        return {i: Severity(int(v)) for i, v in zip(ids, values, strict=True) if v is not None}

    def mark_sent(self, alerts: Sequence[AlertRecord], severities: Mapping[str, Severity]) -> bool:
        try:
            pipe = self._client.pipeline(transaction=False)
            for alert in alerts:
                pipe.set(self.sent_key(alert), 1, nx=True, ex=self._ttl_s)
                if alert.alert_id in severities:
                    level = int(severities[alert.alert_id])
                    pipe.set(self.level_key(alert.alert_id), level, ex=self._ttl_s)
            pipe.execute()
            return True
        except redis.RedisError as exc:
            # The receiver has it; only a replay of these offsets could now send it twice.
            log.warning("dedupe_mark_failed", error=type(exc).__name__, alerts=len(alerts))
            return False
