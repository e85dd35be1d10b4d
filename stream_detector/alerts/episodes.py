"""The episode state machine of one channel.

An episode opens when ``min_hits`` of the last ``hit_window`` decisions were anomalous, sends
an ``update`` when its peak score has grown by ``update_ratio`` since the last event, and
resolves after ``hold_down`` non-anomalous windows in a row. The state is plain JSON-able
data so it can live in Redis beside the threshold state and survive restarts: that is what
keeps alert ids stable across a crash in the middle of an episode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

EventKind = Literal["open", "update", "resolve"]


@dataclass(frozen=True, slots=True)
class EpisodeRules:
    min_hits: int = 1
    hit_window: int = 1
    hold_down: int = 50
    update_ratio: float = 1.5
    suppress: int = 0  # windows after a resolve during which no new episode opens
    # Steps an episode's start is back-dated before its first hit: a detector that
    # smooths its scores sees an anomaly only some steps after it began (telemanom pads
    # each flagged error by its error buffer on both sides). Never into the last episode.
    lead: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.min_hits <= self.hit_window:
            raise ValueError("need 1 <= min_hits <= hit_window")
        if self.hold_down < 1 or self.update_ratio <= 1.0 or self.suppress < 0:
            raise ValueError("need hold_down >= 1, update_ratio > 1 and suppress >= 0")
        if self.lead < 0:
            raise ValueError("need lead >= 0")


@dataclass(slots=True)
class EpisodeState:
    active: bool = False
    first_seq: int = -1
    first_ts: float = 0.0
    last_seq: int = -1
    last_ts: float = 0.0
    peak: float = 0.0
    sent_peak: float = 0.0
    revision: int = -1
    normal_run: int = 0
    recent: list[int] = field(default_factory=list)  # end seqs of recent hits, while closed
    recent_ts: list[float] = field(default_factory=list)
    quiet_until: int = -1  # no new episode opens at or before this seq (suppression)
    last_end: int | None = None  # last seq of the previous episode: `lead` stops there

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpisodeState:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class EpisodeEvent:
    kind: EventKind
    revision: int
    first_seq: int
    first_ts: float
    last_seq: int
    last_ts: float
    score: float
    peak: float
    threshold: float


def step_episode(
    state: EpisodeState,
    rules: EpisodeRules,
    *,
    seq: int,
    ts: float,
    score: float,
    threshold: float | None,
    anomalous: bool,
    stride: int = 1,
) -> EpisodeEvent | None:
    """Advance one channel's episode by one decision; mutate `state`; return the event, if any.

    Windows come every ``stride`` steps; hits older than ``hit_window`` windows are forgotten.
    """
    horizon = seq - rules.hit_window * stride
    thr = threshold if threshold is not None else float("nan")
    if not state.active:
        if not anomalous or seq <= state.quiet_until:
            _forget_old_hits(state, horizon)
            return None
        state.recent.append(seq)
        state.recent_ts.append(ts)
        _forget_old_hits(state, horizon)
        if len(state.recent) < rules.min_hits:
            return None
        # The episode starts at its first hit: the id does not depend on when N was reached.
        state.active = True
        state.first_seq, state.first_ts = _start(state, rules)
        state.last_seq, state.last_ts = seq, ts
        state.peak = state.sent_peak = score
        state.revision = 0
        state.normal_run = 0
        state.recent.clear()
        state.recent_ts.clear()
        return _event(state, "open", score, thr)
    if anomalous:
        state.last_seq, state.last_ts = seq, ts
        state.normal_run = 0
        state.peak = max(state.peak, score)
        if state.peak >= state.sent_peak * rules.update_ratio:
            state.sent_peak = state.peak
            state.revision += 1
            return _event(state, "update", score, thr)
        return None
    state.normal_run += 1
    if state.normal_run < rules.hold_down:
        return None
    state.revision += 1
    event = _event(state, "resolve", score, thr)
    fresh = EpisodeState(quiet_until=seq + rules.suppress * stride, last_end=state.last_seq)
    for name in EpisodeState.__slots__:
        setattr(state, name, getattr(fresh, name))
    return event


def _start(state: EpisodeState, rules: EpisodeRules) -> tuple[int, float]:
    """The first hit, back-dated by `lead` steps: never into the previous episode (nor below
    seq 0 when the stream starts there). Its time is back-dated at the pace of the hits."""
    first, first_ts = state.recent[0], state.recent_ts[0]
    if rules.lead == 0:
        return first, first_ts
    earliest = min(first, 0) if state.last_end is None else state.last_end + 1
    start = max(first - rules.lead, earliest)
    last, last_ts = state.recent[-1], state.recent_ts[-1]
    period = (last_ts - first_ts) / (last - first) if last > first else 0.0
    return start, first_ts - period * (first - start)


def _forget_old_hits(state: EpisodeState, horizon: int) -> None:
    while state.recent and state.recent[0] <= horizon:
        state.recent.pop(0)
        state.recent_ts.pop(0)


def _event(state: EpisodeState, kind: EventKind, score: float, threshold: float) -> EpisodeEvent:
    return EpisodeEvent(
        kind=kind,
        revision=state.revision,
        first_seq=state.first_seq,
        first_ts=state.first_ts,
        last_seq=state.last_seq,
        last_ts=state.last_ts,
        score=score,
        peak=state.peak,
        threshold=threshold,
    )
