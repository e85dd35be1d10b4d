"""Local stand-ins for Slack, PagerDuty and a webhook receiver, for tests and dry runs.

Each one is a real HTTP server on 127.0.0.1 that validates and answers like the service:
Slack answers ``ok`` or a 400 naming the broken Block Kit limit; PagerDuty answers 202
``{"status": "success", "message": "Event processed", "dedup_key": ...}``, 400 "invalid
event", and keeps one alert per dedup_key the way PagerDuty does. Outages are scripted:
fail the first N requests, answer 429 with Retry-After, hold a request, or stop listening
for a while (connection refused).

``requests`` is everything that arrived; ``accepted`` is what the receiver took: a 2xx
that went back to a client still connected (a client that died mid-request never saw the
2xx, so for it the delivery did not happen).
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from stream_detector.records import AlertRecord, AlertState, ModelInfo, alert_id_for

Flavour = Literal["slack", "pagerduty", "webhook"]
Answer = tuple[int, dict[str, str], bytes]

PD_SEVERITIES = {"critical", "error", "warning", "info"}


@dataclass(frozen=True)
class ReceivedRequest:
    at: float
    index: int
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class PagerDutyAlert:
    dedup_key: str
    status: Literal["triggered", "resolved"]
    triggers: int = 1


@dataclass
class FakeReceiver:
    """One fake service; `url` is where to point the sink."""

    flavour: Flavour
    fail_first: int = 0
    fail_status: int = 503
    throttle_first: int = 0
    retry_after_s: float = 1.0
    hold_s: dict[int, float] = field(default_factory=dict)
    reject: Callable[[bytes], bool] | None = None
    path: str = "/hook"
    requests: list[ReceivedRequest] = field(default_factory=list)
    accepted: list[ReceivedRequest] = field(default_factory=list)
    pd_alerts: dict[str, PagerDutyAlert] = field(default_factory=dict)
    pd_alerts_created: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._serve(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def down_for(self, seconds: float) -> threading.Timer:
        """Stop listening now (connection refused) and come back after `seconds`."""
        self.stop()
        timer = threading.Timer(seconds, self.start)
        timer.daemon = True
        timer.start()
        return timer

    # -- answering -----------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        with self._lock:
            index = len(self.requests)
            request = ReceivedRequest(
                at=time.time(),
                index=index,
                path=handler.path,
                headers={k: v for k, v in handler.headers.items()},
                body=body,
            )
            self.requests.append(request)
        if index in self.hold_s:
            time.sleep(self.hold_s[index])
        status, headers, payload = self._answer(index, handler.path, body)
        if 200 <= status < 300 and _client_gone(handler.connection):
            return  # the sender died waiting: it never learns of the 2xx
        done = ReceivedRequest(**{**request.__dict__, "status": status})
        with self._lock:
            # Taken before answering, as a service commits before it replies.
            if 200 <= status < 300:
                self.accepted.append(done)
                self._apply(done)
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
        handler.wfile.flush()

    def _answer(self, index: int, path: str, body: bytes) -> Answer:
        if path != self.path:
            return 404, {}, b"no_service" if self.flavour == "slack" else b"not found"
        if index < self.fail_first:
            return self.fail_status, {}, b"upstream trouble"
        if index < self.fail_first + self.throttle_first:
            return (
                429,
                {"Retry-After": f"{self.retry_after_s:g}"},
                b"rate_limited" if self.flavour == "slack" else b'{"status":"throttled"}',
            )
        if self.reject is not None and self.reject(body):
            return self._invalid("rejected by test")
        if self.flavour == "slack":
            return self._slack(body)
        if self.flavour == "pagerduty":
            return self._pagerduty(body)
        return 200, {}, b""

    def _invalid(self, why: str) -> Answer:
        if self.flavour == "pagerduty":
            doc = {"status": "invalid event", "message": "Event object is invalid", "errors": [why]}
            return 400, {"Content-Type": "application/json"}, json.dumps(doc).encode()
        return 400, {}, why.encode()

    def _slack(self, body: bytes) -> Answer:
        try:
            msg = json.loads(body)
        except ValueError:
            return 400, {}, b"invalid_payload"
        blocks = msg.get("blocks", [])
        if not msg.get("text"):
            return 400, {}, b"no_text"
        if len(blocks) > 50:
            return 400, {}, b"invalid_blocks"
        if len(json.dumps(blocks, ensure_ascii=False)) > 13_000:
            return 400, {}, b"msg_blocks_too_long"
        for block in blocks:
            text = (block.get("text") or {}).get("text", "")
            fields = block.get("fields") or []
            if block.get("type") == "header" and len(text) > 150:
                return 400, {}, b"invalid_blocks"
            if len(text) > 3000 or len(fields) > 10:
                return 400, {}, b"invalid_blocks"
            if any(len(f.get("text", "")) > 2000 for f in fields):
                return 400, {}, b"invalid_blocks"
        return 200, {"Content-Type": "text/html"}, b"ok"

    def _pagerduty(self, body: bytes) -> Answer:
        try:
            event = json.loads(body)
        except ValueError:
            return self._invalid("body is not JSON")
        problems = []
        if len(event.get("routing_key", "")) != 32:
            problems.append("Length of 'routing_key' is incorrect (should be 32 characters)")
        action = event.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            problems.append("'event_action' is invalid")
        key = event.get("dedup_key")
        if key is not None and len(key) > 255:
            problems.append("'dedup_key' is too long")
        if action in ("acknowledge", "resolve") and not key:
            problems.append("'dedup_key' is required")
        if action == "trigger":
            payload = event.get("payload") or {}
            if not payload.get("summary") or len(payload["summary"]) > 1024:
                problems.append("'payload.summary' is missing or too long")
            if not payload.get("source"):
                problems.append("'payload.source' is missing")
            if payload.get("severity") not in PD_SEVERITIES:
                problems.append("'payload.severity' is invalid")
        if problems:
            doc = {"status": "invalid event", "message": "Event object is invalid"}
            return 400, {}, json.dumps({**doc, "errors": problems}).encode()
        reply = {"status": "success", "message": "Event processed", "dedup_key": key}
        return 202, {"Content-Type": "application/json"}, json.dumps(reply).encode()

    def _apply(self, request: ReceivedRequest) -> None:
        """PagerDuty's alert semantics: one open alert per dedup_key."""
        if self.flavour != "pagerduty":
            return
        event = request.json()
        key, action = event["dedup_key"], event["event_action"]
        current = self.pd_alerts.get(key)
        if action == "trigger":
            if current is None or current.status == "resolved":
                self.pd_alerts[key] = PagerDutyAlert(key, "triggered")
                self.pd_alerts_created += 1
            else:
                current.triggers += 1
        elif action == "resolve" and current is not None:
            current.status = "resolved"

    # -- reading the log -----------------------------------------------------------------

    def accepted_events(self) -> list[tuple[str, int]]:
        """(alert_id, revision) of every accepted alert event, in arrival order."""
        out: list[tuple[str, int]] = []
        for req in list(self.accepted):
            if self.flavour == "slack":
                for block in req.json()["blocks"]:
                    if block["type"] == "section":
                        alert_id, _, revision = block["block_id"].rpartition(":")
                        out.append((alert_id, int(revision)))
            elif self.flavour == "pagerduty":
                event = req.json()
                details = (event.get("payload") or {}).get("custom_details") or {}
                out.append((event["dedup_key"], int(details.get("revision", -1))))
            else:
                doc = req.json()
                out.append((doc["alert_id"], int(doc["revision"])))
        return out


def _client_gone(conn: socket.socket) -> bool:
    """True if the peer closed the connection (readable with nothing to read)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def sample_alert(
    channel: str = "A-1",
    state: AlertState = "open",
    revision: int = 0,
    *,
    first_seq: int = 100,
    score: float = 3.0,
    peak_score: float | None = None,
    threshold: float | None = 1.0,
    first_ts: float = 1_760_000_000.0,
    duration_s: float = 0.0,
) -> AlertRecord:
    """A well-formed alert event, with the id the daemon would give that episode."""
    model = ModelInfo(name="lstm_ae", version="sample01")
    return AlertRecord(
        alert_id=alert_id_for(channel, model, first_seq),
        revision=revision,
        channel=channel,
        state=state,
        first_seq=first_seq,
        last_seq=first_seq + int(duration_s),
        first_ts=first_ts,
        last_ts=first_ts + duration_s,
        score=score,
        peak_score=score if peak_score is None else peak_score,
        threshold=threshold,
        threshold_kind="ewma_sigma",
        model=model,
        detected_at=time.time(),
    )
