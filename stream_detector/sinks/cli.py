"""`stream-detector sink slack|pagerduty|webhook` and `stream-detector silence add|list|remove`."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import click
import redis

from stream_detector.errors import StreamDetectorError
from stream_detector.settings import Settings
from stream_detector.sinks.silences import SilenceBook

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]
    return settings


def _run_sink(ctx: click.Context, kind: str, max_seconds: float | None) -> None:
    from stream_detector.sinks.runner import build_runner

    try:
        runner = build_runner(kind, _settings(ctx))
    except StreamDetectorError as exc:
        raise click.ClickException(str(exc)) from None
    runner.install_signal_handlers()
    runner.run(max_seconds=max_seconds)


_max_seconds = click.option(
    "--max-seconds", type=float, default=None, help="Stop after this long (tests, demos)."
)


@click.group("sink")
def sink_group() -> None:
    """Deliver alerts from the alerts topic to Slack, PagerDuty or a webhook.

    Each kind is its own consumer group (SD_SINKS__<KIND>__GROUP_ID): run several kinds
    side by side, and replicas of one kind to share the load. SIGTERM finishes the request
    in flight, commits and exits. See docs/sinks.md.
    """


@sink_group.command("slack")
@_max_seconds
@click.pass_context
def slack_command(ctx: click.Context, max_seconds: float | None) -> None:
    """Post Block Kit messages to a Slack incoming webhook (SD_SINKS__SLACK__WEBHOOK_URL)."""
    _run_sink(ctx, "slack", max_seconds)


@sink_group.command("pagerduty")
@_max_seconds
@click.pass_context
def pagerduty_command(ctx: click.Context, max_seconds: float | None) -> None:
    """Send Events API v2 triggers and resolves (SD_SINKS__PAGERDUTY__ROUTING_KEY)."""
    _run_sink(ctx, "pagerduty", max_seconds)


@sink_group.command("webhook")
@_max_seconds
@click.pass_context
def webhook_command(ctx: click.Context, max_seconds: float | None) -> None:
    """POST each alert record as JSON to SD_SINKS__WEBHOOK__URL, optionally HMAC-signed."""
    _run_sink(ctx, "webhook", max_seconds)


@click.group("silence")
def silence_group() -> None:
    """Mute alerts of a channel or glob until a time (all sinks; stored in Redis)."""


def _book(ctx: click.Context) -> SilenceBook:
    from stream_detector.sinks.runner import redis_for

    settings = _settings(ctx)
    return SilenceBook(redis_for(settings), settings.redis.key_prefix)


def parse_until(until: str | None, duration: str | None, now: float) -> float:
    """Epoch seconds from --until (ISO 8601, UTC if no zone) or --for (90s, 30m, 2h, 1d)."""
    if (until is None) == (duration is None):
        raise click.UsageError("give exactly one of --until and --for")
    if duration is not None:
        match = _DURATION.match(duration)
        if not match:
            raise click.BadParameter(
                f"expected e.g. 90s, 30m, 2h or 1d, got {duration!r}", param_hint="--for"
            )
        return now + float(match[1]) * _UNIT_S[match[2]]
    assert until is not None
    try:
        when = datetime.fromisoformat(until)
    except ValueError:
        raise click.BadParameter(
            f"expected ISO 8601 like 2026-11-24T08:00Z, got {until!r}", param_hint="--until"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@silence_group.command("add")
@click.argument("pattern")
@click.option("--until", default=None, help="End time, ISO 8601 (UTC unless a zone is given).")
@click.option("--for", "duration", default=None, help="Duration from now: 90s, 30m, 2h, 1d.")
@click.option("--comment", default="", help="Why (shown by `silence list`).")
@click.pass_context
def silence_add(
    ctx: click.Context, pattern: str, until: str | None, duration: str | None, comment: str
) -> None:
    """Silence channels matching PATTERN (a channel id or a glob such as 'A-*')."""
    now = time.time()
    end = parse_until(until, duration, now)
    if end <= now:
        raise click.BadParameter("the end time is in the past", param_hint="--until/--for")
    try:
        silence = _book(ctx).add(pattern, end, comment)
    except redis.RedisError as exc:
        raise click.ClickException(f"cannot reach Redis: {type(exc).__name__}") from None
    click.echo(f"{silence.id}  {pattern}  until {_iso(silence.until)}")


@silence_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines.")
@click.pass_context
def silence_list(ctx: click.Context, as_json: bool) -> None:
    """Silences in force now."""
    try:
        silences = _book(ctx).active()
    except redis.RedisError as exc:
        raise click.ClickException(f"cannot reach Redis: {type(exc).__name__}") from None
    for s in silences:
        if as_json:
            click.echo(s.model_dump_json())
        else:
            click.echo(f"{s.id}  {s.pattern}  until {_iso(s.until)}  {s.comment}".rstrip())


@silence_group.command("remove")
@click.argument("silence_id")
@click.pass_context
def silence_remove(ctx: click.Context, silence_id: str) -> None:
    """End a silence now."""
    try:
        removed = _book(ctx).remove(silence_id)
    except redis.RedisError as exc:
        raise click.ClickException(f"cannot reach Redis: {type(exc).__name__}") from None
    if not removed:
        raise click.ClickException(f"no silence {silence_id}")
    click.echo(f"removed {silence_id}")
